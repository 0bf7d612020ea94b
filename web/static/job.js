// Job page: follows the job's server-sent events (EventSource); no polling, no reload.
// The page is rendered from a snapshot; the stream sends a fresh snapshot first, then
// each event. Counts are derived from task states, so replaying an event is harmless.
// The "Cancel job" and "Rerun failed tasks" forms are shown by the job's status, and
// posted in the background (same form, same CSRF token) so the stream keeps the page live.
(function () {
  "use strict";
  var root = document.getElementById("job");
  if (!root || !window.EventSource) { return; }
  var FINAL_RUN = ["succeeded", "failed", "skipped", "cancelled"];
  var FINAL_EVENTS = ["job_finished", "job_cancelled"];
  var RETRYABLE = ["partial", "failed"];
  var guideUrl = root.dataset.guideUrl;
  var job = {
    status: root.dataset.status,
    createdAt: Date.parse(root.dataset.createdAt),
    finishedAt: root.dataset.finishedAt ? Date.parse(root.dataset.finishedAt) : null,
    currentBatch: null
  };
  var runs = {};     // run id -> {status, error, batch, row}
  var batches = {};  // batch index -> {status, total, mode, section}

  function text(id, value) {
    var el = document.getElementById(id);
    if (el) { el.textContent = value; }
  }
  function setState(el, state) {
    el.textContent = state;
    el.className = el.className.replace(/\bstate-\S+/g, "").trim() + " state-" + state;
  }

  function el(tag, className, content) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (content !== undefined && content !== null) { node.textContent = String(content); }
    return node;
  }

  // Rebuild the batch sections from a snapshot (a retry adds batches and moves tasks).
  function build(snap) {
    root.querySelectorAll("section.batch").forEach(function (old) { old.remove(); });
    snap.batches.forEach(function (b) {
      var section = el("section", "batch");
      section.dataset.batch = b.index;
      section.dataset.mode = b.mode;
      var title = el("h2", null, "Batch " + b.index + " ");
      title.append(el("span", "mode", b.mode), " ", el("span", "batch-state state", b.status));
      var bar = el("progress", "batch-bar");
      bar.max = b.total;
      bar.value = b.done;
      var rows = el("tbody");
      b.runs.forEach(function (r) {
        var row = el("tr");
        row.dataset.run = r.id;
        row.dataset.task = r.task_id;
        row.append(el("td", "key", r.key), el("td", "title", r.title));
        var state = el("td");
        state.append(el("span", "run-state state", r.status));
        row.append(state, el("td", "run-error", r.error || ""));
        rows.append(row);
      });
      var table = el("table", "runs");
      table.append(rows);
      section.append(title, bar, " ", el("span", "batch-count", b.done + "/" + b.total), table);
      root.append(section);
    });
    index();
  }

  function index() {
    runs = {};
    batches = {};
    root.querySelectorAll("[data-batch]").forEach(indexBatch);
  }

  function indexBatch(section) {
    var index = section.dataset.batch;
    batches[index] = {
      status: section.querySelector(".batch-state").textContent.trim(),
      total: Number(section.querySelector(".batch-bar").max),
      mode: section.dataset.mode,
      section: section
    };
    section.querySelectorAll("[data-run]").forEach(function (row) {
      runs[row.dataset.run] = {
        status: row.querySelector(".run-state").textContent.trim(),
        error: row.querySelector(".run-error").textContent,
        batch: index,
        row: row
      };
    });
  }
  index();

  function setRun(id, status, error) {
    var run = runs[id];
    if (!run) { return; }
    run.status = status;
    if (error !== undefined) { run.error = error || ""; }
  }

  function applySnapshot(snap) {
    build(snap);
    job.status = snap.status;
    job.createdAt = Date.parse(snap.created_at);
    job.finishedAt = snap.finished_at ? Date.parse(snap.finished_at) : null;
    job.currentBatch = snap.current_batch;
    if (snap.redis_commands) {
      document.getElementById("redis-count").textContent = snap.redis_commands;
      document.getElementById("redis-commands").hidden = false;
    }
  }

  function applyEvent(ev) {
    var p = ev.payload || {};
    var type = ev.type;
    if (type === "batch_started") {
      if (batches[p.batch]) { batches[p.batch].status = "running"; }
      job.currentBatch = p.batch;
    } else if (type === "batch_completed") {
      if (batches[p.batch]) { batches[p.batch].status = "completed"; }
    } else if (type === "task_started") {
      setRun(p.run, "running", "");
    } else if (type === "task_retrying") {
      setRun(p.run, "queued", "attempt " + p.attempt + " failed, retrying: " + p.error);
    } else if (type === "task_skipped" && !p.error) {
      setRun(p.run, "skipped", "skipped: a task it depends on did not succeed");
    } else if (type.indexOf("task_") === 0) {
      setRun(p.run, type.slice(5), p.error);
    } else if (type === "job_retried") {
      job.status = "running";
      job.finishedAt = null;
    } else if (FINAL_EVENTS.indexOf(type) >= 0) {
      job.status = p.status || (type === "job_cancelled" ? "cancelled" : job.status);
      job.finishedAt = Date.now();
      job.currentBatch = null;
    }
  }

  function duration(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    var m = Math.floor(s / 60);
    return m ? m + " min " + (s % 60) + " s" : s + " s";
  }

  function renderClock(done, total) {
    var end = job.finishedAt || Date.now();
    var elapsed = end - job.createdAt;
    text("elapsed", isNaN(elapsed) ? "—" : duration(elapsed));
    if (job.finishedAt) { text("eta", "done"); return; }
    text("eta", done > 0 ? "about " + duration(elapsed / done * (total - done)) : "—");
  }

  // Cancel while it runs, rerun once it ended partial or failed; never both.
  function renderActions() {
    var cancel = document.getElementById("cancel-form");
    var retry = document.getElementById("retry-form");
    if (cancel) { cancel.hidden = job.status !== "running"; }
    if (retry) { retry.hidden = RETRYABLE.indexOf(job.status) < 0; }
  }

  var totals = {done: 0, total: 0};
  function render() {
    var counts = {succeeded: 0, failed: 0, skipped: 0, cancelled: 0, running: 0, queued: 0};
    var running = [];
    var perBatch = {};
    Object.keys(runs).forEach(function (id) {
      var run = runs[id];
      counts[run.status] = (counts[run.status] || 0) + 1;
      if (FINAL_RUN.indexOf(run.status) >= 0) {
        perBatch[run.batch] = (perBatch[run.batch] || 0) + 1;
      }
      if (run.status === "running") { running.push(run.row.querySelector(".title").textContent.trim()); }
      setState(run.row.querySelector(".run-state"), run.status);
      run.row.querySelector(".run-error").textContent = run.error || "";
      var title = run.row.querySelector(".title");
      if (run.status === "succeeded" && !title.querySelector("a")) {
        var link = document.createElement("a");
        link.href = guideUrl.replace("/0/", "/" + run.row.dataset.task + "/");
        link.textContent = title.textContent.trim();
        title.textContent = "";
        title.appendChild(link);
      }
    });
    var completed = 0;
    Object.keys(batches).forEach(function (index) {
      var b = batches[index];
      var done = perBatch[index] || 0;
      b.section.querySelector(".batch-bar").value = done;
      b.section.querySelector(".batch-count").textContent = done + "/" + b.total;
      setState(b.section.querySelector(".batch-state"), b.status);
      if (b.status === "completed") { completed += 1; }
    });
    var total = Object.keys(runs).length;
    var done = counts.succeeded + counts.failed + counts.skipped + counts.cancelled;
    totals = {done: done, total: total};
    document.getElementById("overall").value = done;
    text("overall-percent", (total ? Math.floor(100 * done / total) : 100) + "%");
    text("count-done", done);
    ["succeeded", "failed", "skipped", "cancelled"].forEach(function (k) { text("count-" + k, counts[k]); });
    text("count-batches", completed);
    setState(document.getElementById("job-status"), job.status);
    root.dataset.status = job.status;
    var now = "";
    if (job.currentBatch && !job.finishedAt) {
      now = "Now: batch " + job.currentBatch + " (" + (batches[job.currentBatch] || {}).mode + ")";
      if (running.length) { now += ", running: " + running.join(", "); }
    }
    text("now", now);
    renderClock(done, total);
    renderActions();
  }

  render();

  // Events that change more than their payload says (a retry re-plans, a cancel stops
  // many tasks at once): read a fresh snapshot by reconnecting without Last-Event-ID.
  var RESYNC_EVENTS = ["job_retried", "job_cancelled"];
  var clock = null;
  var source = null;

  function finish() {
    if (source) { source.close(); }
    window.clearInterval(clock);
    clock = null;
    text("connection", "");
    root.dataset.live = "ended";
  }

  function connect() {
    if (source) { source.close(); }
    if (clock === null) {
      clock = window.setInterval(function () { renderClock(totals.done, totals.total); }, 1000);
    }
    source = new EventSource(root.dataset.eventsUrl);
    source.onopen = function () { text("connection", "live"); root.dataset.live = "open"; };
    source.onerror = function () {
      if (source.readyState !== EventSource.CLOSED) {
        text("connection", "reconnecting…");
        return;
      }
      var over = job.finishedAt;
      finish();
      if (!over) { text("connection", "live updates stopped: reload the page to resume"); }
    };
    source.addEventListener("snapshot", function (e) {
      applySnapshot(JSON.parse(e.data));
      render();
      if (job.finishedAt) { finish(); }
    });
    source.onmessage = function (e) {
      var ev = JSON.parse(e.data);
      applyEvent(ev);
      render();
      if (RESYNC_EVENTS.indexOf(ev.type) >= 0) {
        connect();
      } else if (FINAL_EVENTS.indexOf(ev.type) >= 0) {
        finish();
      }
    };
  }

  // Post an action form in the background and show the notice of the page it redirects
  // to; the stream then tells what changed (reopened when it had ended, after a rerun).
  function postInBackground(form) {
    var button = form.querySelector("button");
    button.disabled = true;
    fetch(form.action, {method: "POST", body: new FormData(form), credentials: "same-origin"})
      .then(function (response) {
        return response.text().then(function (html) {
          var page = new DOMParser().parseFromString(html, "text/html");
          var notice = page.getElementById("notice") || page.querySelector("[role=alert]");
          text("notice", notice ? notice.textContent.trim() : "Error " + response.status + ".");
          if (response.ok && (!source || source.readyState === EventSource.CLOSED)) { connect(); }
        });
      })
      .catch(function () { text("notice", "The server could not be reached; try again."); })
      .then(function () { button.disabled = false; });
  }

  ["cancel-form", "retry-form"].forEach(function (id) {
    var form = document.getElementById(id);
    if (!form || !window.fetch || !window.FormData || !window.DOMParser) { return; }
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      postInBackground(form);
    });
  });

  if (!job.finishedAt) { connect(); }  // else over before the page loaded
}());
