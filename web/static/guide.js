// Guide page of a task being written: follows its job's server-sent events, shows the
// task's `guide_text` as plain text (written.js) and, once the task's outcome is in,
// reloads the page so the stored guide shows, rendered and sanitized by the server.
(function () {
  "use strict";
  var box = document.getElementById("live-guide");
  if (!box || !window.EventSource) { return; }
  var runId = Number(box.dataset.runId);
  var pre = document.getElementById("guide-live");
  var state = document.getElementById("live-state");
  var OUTCOMES = ["task_succeeded", "task_failed", "task_skipped", "task_cancelled"];
  var FINAL_RUN = ["succeeded", "failed", "skipped", "cancelled"];
  var written = null;
  var source = new EventSource(box.dataset.eventsUrl);

  function ended(status) {
    source.close();
    box.dataset.live = "ended";
    if (status === "succeeded") {
      window.location.reload();
    } else {
      state.textContent = "This run ended " + status + ": see its job for why.";
    }
  }

  source.addEventListener("snapshot", function (e) {
    var snap = JSON.parse(e.data);
    var runs = [];
    snap.batches.forEach(function (b) { runs = runs.concat(b.runs); });
    var mine = runs.filter(function (r) { return r.id === runId; })[0];
    if (mine && FINAL_RUN.indexOf(mine.status) >= 0) { ended(mine.status); }
    else if (snap.status !== "running") { ended(snap.status); }
  });
  source.addEventListener("guide_text", function (e) {
    var d = JSON.parse(e.data);
    if (d.run_id !== runId) { return; }
    written = window.HandsonWritten.add(written, d);
    window.HandsonWritten.show(pre, written);
    state.textContent = "Being written…";
  });
  source.onmessage = function (e) {
    var ev = JSON.parse(e.data);
    var p = ev.payload || {};
    if (p.run === runId && OUTCOMES.indexOf(ev.type) >= 0) { ended(ev.type.slice(5)); }
    else if (ev.type === "job_finished" || ev.type === "job_cancelled") { ended(p.status || "cancelled"); }
  };
  source.onopen = function () { box.dataset.live = "open"; };
}());
