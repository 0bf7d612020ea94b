// Job page: follows the job's server-sent events (EventSource); no polling, no reload.
// The page is rendered from a snapshot; the stream sends a fresh snapshot first, then
// each event. A run's state comes from its events; a batch's counts start from its stored
// counters and move when one of its runs reaches a final state (a replayed event finds
// the run final already and counts nothing). A batch the page has not seen yet (a
// `batch_started` for a new index) is appended, from the same <template> the server uses.
// The "Cancel job" (after its confirm step) and "Rerun failed tasks" forms are shown by
// the job's status, and posted in the background so the stream keeps the page live.
// A running task's guide shows under its row as it is written (`guide_text` events, as
// plain text: written.js), until its outcome turns the row into a link to the guide.
(function () {
  "use strict";
  var root = document.getElementById("job");
  if (!root || !window.EventSource) { return; }
  var FINAL_RUN = ["succeeded", "failed", "skipped", "cancelled"];
  var FINAL_EVENTS = ["job_finished", "job_cancelled"];
  var RETRYABLE = ["partial", "failed"];
  var guideUrl = root.dataset.guideUrl;
  var jobId = root.dataset.jobId;
  var list = document.getElementById("batches");
  // Runs not released yet (the engine releases them when what they depend on is done).
  var unreleased = document.getElementById("unreleased");
  var WAITING = "unreleased";
  var job = {
    status: root.dataset.status,
    createdAt: Date.parse(root.dataset.createdAt),
    finishedAt: root.dataset.finishedAt ? Date.parse(root.dataset.finishedAt) : null,
    currentBatch: null,
    resyncing: false,  // a retry or cancel was seen; its snapshot is on the way
    totalBatches: Number(document.getElementById("count-batches-total").textContent) || 0
  };
  var announced = job.status;
  var runs = {};     // run id -> {status, error, batch, row}
  var written = {};  // run id -> its guide being written {stream, end, text, box}
  var batches = {};  // batch index -> {status, mode, total, counts, section}

  function text(id, value) {
    var node = document.getElementById(id);
    if (node) { node.textContent = value; }
  }
  function setState(node, state) {
    node.textContent = state;
    node.className = node.className.replace(/\bstate-\S+/g, "").trim() + " state-" + state;
  }
  function isFinal(status) { return FINAL_RUN.indexOf(status) >= 0; }
  function clone(templateId) {
    return document.getElementById(templateId).content.firstElementChild.cloneNode(true);
  }
  // User text is isolated (<bdi>) so that a right-to-left override in it stays inside.
  function isolated(value) {
    var node = document.createElement("bdi");
    node.textContent = value;
    return node;
  }

  // --- the page's model, read from the DOM or a snapshot ---------------------------------

  function addRun(r, index, row) {
    if (!row) {
      row = clone("run-template");
      row.dataset.run = r.id;
      row.dataset.task = r.task_id;
      row.querySelector(".key").textContent = r.key;
      row.querySelector(".title").textContent = r.title;
      var into = index === WAITING ? unreleased : batches[index].section;
      into.querySelector("tbody").append(row);
    }
    runs[row.dataset.run] = {
      status: r.status, error: r.error || "", batch: String(index), row: row
    };
  }

  function addBatch(b, section) {
    if (!section) {
      section = clone("batch-template");
      section.dataset.batch = b.index;
      section.dataset.mode = b.mode;
      section.querySelector(".batch-index").textContent = b.index;
      section.querySelector(".mode").textContent = b.mode;
      section.querySelector(".batch-bar").setAttribute("aria-label", "Batch " + b.index);
      list.append(section);
    }
    var counts = {};
    FINAL_RUN.forEach(function (k) { counts[k] = Number(b[k]) || 0; });
    batches[b.index] = {
      status: b.status, mode: b.mode, total: Number(b.total), counts: counts, section: section
    };
  }

  // Index the server-rendered sections.
  function index() {
    runs = {};
    batches = {};
    list.querySelectorAll("section.batch").forEach(function (section) {
      var d = section.dataset;
      addBatch({
        index: d.batch, mode: d.mode, total: d.total, succeeded: d.succeeded, failed: d.failed,
        skipped: d.skipped, cancelled: d.cancelled,
        status: section.querySelector(".batch-state").textContent.trim()
      }, section);
      section.querySelectorAll("[data-run]").forEach(function (row) {
        addRun({
          status: row.querySelector(".run-state").textContent.trim(),
          error: row.querySelector(".run-error").textContent
        }, d.batch, row);
      });
    });
    unreleased.querySelectorAll("[data-run]").forEach(function (row) {
      addRun({
        status: row.querySelector(".run-state").textContent.trim(),
        error: row.querySelector(".run-error").textContent
      }, WAITING, row);
    });
  }

  // What a run never released waits for: worded as the server's waiting_note.
  function waitingNote(r) {
    if (r.status !== "waiting") { return r.error || ""; }
    if (r.ready) { return "ready: waits for a free slot"; }
    if (r.waits_for && r.waits_for.length) { return "waits for " + r.waits_for.join(", "); }
    return "waits for the batch before";
  }

  // Rebuild the batch sections from a snapshot (a retry adds batches and moves tasks).
  function build(snap) {
    list.textContent = "";
    unreleased.querySelector("tbody").textContent = "";
    runs = {};
    batches = {};
    snap.batches.forEach(function (b) {
      addBatch(b);
      b.runs.forEach(function (r) { addRun(r, b.index); });
    });
    (snap.unreleased || []).forEach(function (r) {
      addRun({id: r.id, task_id: r.task_id, key: r.key, title: r.title, status: r.status,
        error: waitingNote(r)}, WAITING);
    });
  }

  function applySnapshot(snap) {
    build(snap);
    job.status = snap.status;
    job.createdAt = Date.parse(snap.created_at);
    job.finishedAt = snap.finished_at ? Date.parse(snap.finished_at) : null;
    job.currentBatch = snap.current_batch;
    job.totalBatches = snap.total_batches || 0;
    spent(snap);
    if (snap.redis_commands) {
      text("redis-count", snap.redis_commands);
      document.getElementById("redis-commands").hidden = false;
    }
  }

  // --- events ------------------------------------------------------------------------------

  function setRun(id, status, error) {
    var run = runs[id];
    if (!run) { return; }
    if (!isFinal(run.status) && isFinal(status) && batches[run.batch]) {
      batches[run.batch].counts[status] += 1;
    }
    run.status = status;
    if (error !== undefined) { run.error = error || ""; }
  }

  function batchStarted(p) {
    if (!batches[p.batch]) {
      addBatch({index: p.batch, mode: p.mode, total: p.total, status: "running"});
      (p.runs || []).forEach(function (r) {
        var id = typeof r === "object" ? r.id : r;
        var known = runs[id];
        if (known) {  // released into this batch: the row moves with it
          batches[p.batch].section.querySelector("tbody").append(known.row);
          known.batch = String(p.batch);
          if (known.status === "waiting") { known.status = "queued"; known.error = ""; }
        } else if (typeof r === "object") {
          addRun(r, p.batch);
        }
      });
    }
    batches[p.batch].status = "running";
    job.currentBatch = p.batch;
  }

  // The job's AI usage, from a snapshot or the counters an outcome's event carries.
  function spent(counters) {
    if (!counters || counters.cost === undefined) { return; }
    text("count-prompt-tokens", counters.prompt_tokens);
    text("count-completion-tokens", counters.completion_tokens);
    text("ai-cost", Number(counters.cost).toFixed(4));
  }

  function applyEvent(ev) {
    var p = ev.payload || {};
    var type = ev.type;
    spent(p.job);
    if (type === "batch_started") {
      batchStarted(p);
    } else if (type === "batch_completed") {
      if (batches[p.batch]) { batches[p.batch].status = "completed"; }
    } else if (type === "task_started") {
      setRun(p.run, "running", "");
    } else if (type === "task_retrying") {
      setRun(p.run, "queued", "attempt " + p.attempt + " failed, retrying: " + p.error);
    } else if (type === "task_skipped") {
      setRun(p.run, "skipped", p.error);
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

  // --- rendering ---------------------------------------------------------------------------

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
    if (cancel && cancel.hidden) { document.getElementById("cancel-confirm").open = false; }
  }

  // "3/4", or "1/4, 3 cancelled": a bar's value counts what was done, not what was cancelled.
  function doneText(finished, total, cancelled) {
    return finished + "/" + total + (cancelled ? ", " + cancelled + " cancelled" : "");
  }

  function renderRun(run) {
    run.row.dataset.status = run.status;  // colours its note (an error, a skip, a cancel)
    setState(run.row.querySelector(".run-state"), run.status);
    var node = document.querySelector('[data-node="' + run.row.dataset.run + '"]');
    if (node) { node.setAttribute("class", "node state-" + run.status); }
    run.row.querySelector(".run-error").textContent = run.error || "";
    var title = run.row.querySelector(".title");
    if (run.status === "succeeded" && !title.querySelector("a")) {
      var link = document.createElement("a");
      link.href = guideUrl.replace("/0/", "/" + run.row.dataset.task + "/");
      link.textContent = title.textContent.trim();
      title.textContent = "";
      title.append(link);
    }
  }

  function renderBatch(b, rows) {
    var c = b.counts;
    var finished = c.succeeded + c.failed + c.skipped;
    var bar = b.section.querySelector(".batch-bar");
    bar.max = b.total;
    bar.value = finished;
    bar.parentNode.classList.toggle("has-cancelled", c.cancelled > 0);
    b.section.querySelector(".batch-count").textContent = doneText(finished, b.total, c.cancelled);
    setState(b.section.querySelector(".batch-state"), b.status);
    var moved = b.total - rows;
    var over = b.status !== "running" && b.status !== "pending";
    b.section.querySelector(".batch-note").textContent =
      moved > 0 && over ? moved + " rerun in a later batch" : "";
  }

  function renderNow(running) {
    var now = document.getElementById("now");
    now.textContent = "";
    if (!job.currentBatch || job.finishedAt) { return; }
    now.append("Now: batch " + job.currentBatch + " (" + (batches[job.currentBatch] || {}).mode + ")");
    running.forEach(function (title, i) {
      now.append(i ? ", " : ", running: ", isolated(title));
    });
  }

  // Said once per status change; after a retry or a cancel, once the fresh snapshot is in.
  function announce(counts, finished, total) {
    if (job.status === announced || job.resyncing) { return; }
    announced = job.status;
    var message = "Job " + jobId + " " + job.status + ": " + finished + " of " + total + " tasks done";
    if (counts.failed) { message += ", " + counts.failed + " failed"; }
    if (counts.cancelled) { message += ", " + counts.cancelled + " cancelled"; }
    text("announce", message + ".");
  }

  var totals = {done: 0, total: 0};
  function render() {
    var counts = {succeeded: 0, failed: 0, skipped: 0, cancelled: 0, running: 0, queued: 0};
    var running = [];
    var rows = {};
    Object.keys(runs).forEach(function (id) {
      var run = runs[id];
      counts[run.status] = (counts[run.status] || 0) + 1;
      rows[run.batch] = (rows[run.batch] || 0) + 1;
      if (run.status === "running") { running.push(run.row.querySelector(".title").textContent.trim()); }
      renderRun(run);
    });
    unreleased.hidden = !rows[WAITING];
    var completed = 0;
    Object.keys(batches).forEach(function (i) {
      renderBatch(batches[i], rows[i] || 0);
      if (batches[i].status === "completed") { completed += 1; }
    });
    var total = Object.keys(runs).length;
    var finished = counts.succeeded + counts.failed + counts.skipped;
    totals = {done: finished + counts.cancelled, total: total};
    var overall = document.getElementById("overall");
    overall.max = total;
    overall.value = finished;
    overall.parentNode.classList.toggle("has-cancelled", counts.cancelled > 0);
    text("overall-percent", (total ? Math.floor(100 * finished / total) : 100) + "%");
    text("overall-text", finished + " of " + total + " tasks done" +
      (counts.cancelled ? ", " + counts.cancelled + " cancelled" : ""));
    text("count-done", finished);
    text("count-total", total);
    ["succeeded", "failed", "skipped", "cancelled"].forEach(function (k) { text("count-" + k, counts[k]); });
    text("count-batches", completed);
    text("count-batches-total", Math.max(job.totalBatches, Object.keys(batches).length));
    setState(document.getElementById("job-status"), job.status);
    root.dataset.status = job.status;
    renderNow(running);
    renderClock(totals.done, total);
    renderActions();
    announce(counts, finished, total);
    renderWritten();
  }

  // --- guides being written ----------------------------------------------------------------

  function writtenBox() {
    var box = document.createElement("tr");
    box.className = "guide-live-row";
    var cell = document.createElement("td");
    cell.colSpan = 4;
    var pre = document.createElement("pre");
    pre.className = "guide-live";
    pre.tabIndex = 0;
    cell.append(pre);
    box.append(cell);
    return box;
  }

  // Under each running task's row, its guide so far; gone once the task has an outcome.
  function renderWritten() {
    Object.keys(written).forEach(function (id) {
      var w = written[id];
      var run = runs[id];
      if (!run || isFinal(run.status)) {
        if (w.box) { w.box.remove(); }
        delete written[id];
        return;
      }
      if (!w.box) {
        w.box = writtenBox();
        w.box.dataset.writing = id;
        w.box.querySelector("pre").setAttribute("aria-label", "Guide being written: " +
          run.row.querySelector(".title").textContent.trim());
      }
      if (w.box.previousElementSibling !== run.row) { run.row.after(w.box); }
      window.HandsonWritten.show(w.box.querySelector("pre"), w);
    });
  }

  function addWritten(d) {
    var run = runs[d.run_id];
    if (run && isFinal(run.status)) { return; }  // late: its outcome is in
    var before = written[d.run_id];
    var w = window.HandsonWritten.add(before || null, d);
    w.box = before ? before.box : null;
    written[d.run_id] = w;
  }

  index();
  render();

  // --- the stream --------------------------------------------------------------------------

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
    // This server is not told of the job's progress (another process runs it, on
    // SQLite): say so rather than show frozen figures as live.
    source.addEventListener("unfollowable", function (e) {
      finish();
      text("connection", JSON.parse(e.data).message);
      root.dataset.live = "unfollowable";
    });
    source.addEventListener("snapshot", function (e) {
      job.resyncing = false;
      applySnapshot(JSON.parse(e.data));
      render();
      if (job.finishedAt) { finish(); }
    });
    source.addEventListener("guide_text", function (e) {
      addWritten(JSON.parse(e.data));
      renderWritten();
    });
    source.onmessage = function (e) {
      var ev = JSON.parse(e.data);
      job.resyncing = RESYNC_EVENTS.indexOf(ev.type) >= 0;
      applyEvent(ev);
      render();
      if (job.resyncing) {
        connect();
      } else if (FINAL_EVENTS.indexOf(ev.type) >= 0) {
        finish();
      }
    };
  }

  // --- the action forms --------------------------------------------------------------------

  // Post an action form in the background and show the notice of the page it redirects
  // to; the stream then tells what changed (reopened when it had ended, after a rerun).
  // The form is hidden once the job's state changes, so focus goes to the notice.
  function postInBackground(form) {
    var button = form.querySelector("button[type=submit]");
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
      .then(function () {
        button.disabled = false;
        document.getElementById("cancel-confirm").open = false;
        document.getElementById("notice").focus();
      });
  }

  // The cancel question: focus goes to the choice that changes nothing; "Keep it running"
  // or Escape closes it and gives focus back to the "Cancel job…" button.
  function confirmStep() {
    var details = document.getElementById("cancel-confirm");
    var summary = details.querySelector("summary");
    var keep = document.getElementById("cancel-no");
    function close() { details.open = false; summary.focus(); }
    keep.hidden = false;
    keep.addEventListener("click", close);
    details.addEventListener("toggle", function () { if (details.open) { keep.focus(); } });
    details.addEventListener("keydown", function (e) {
      if (e.key === "Escape" && details.open) { e.preventDefault(); close(); }
    });
  }

  confirmStep();
  ["cancel-form", "retry-form"].forEach(function (id) {
    var form = document.getElementById(id);
    if (!form || !window.fetch || !window.FormData || !window.DOMParser) { return; }
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      postInBackground(form);
    });
  });

  if (job.finishedAt) {
    root.dataset.live = "ended";  // over before the page loaded: nothing to follow
  } else {
    connect();
  }
}());
