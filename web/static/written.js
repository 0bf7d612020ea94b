// A guide being written, as `guide_text` events bring it (shared by the job and guide
// pages). Each event puts `text` at character `offset` of the run's `stream` (a new
// stream per attempt). What the page has already is skipped, so the "text so far" sent
// on a reconnect and a piece heard twice add nothing; a gap (pieces this server did not
// hear) is shown as "…". Offsets count characters (code points), as the server does.
(function () {
  "use strict";
  // Return the run's writing state after the event `d` (`w`: the state before, or null).
  function add(w, d) {
    if (!w || w.stream !== d.stream) {
      w = {stream: d.stream, end: d.offset, text: d.offset > 0 ? "… " : ""};
    }
    if (d.offset > w.end) {
      w.text += " … ";
      w.end = d.offset;
    }
    var fresh = Array.from(d.text).slice(w.end - d.offset);
    if (fresh.length) {
      w.text += fresh.join("");
      w.end += fresh.length;
    }
    return w;
  }
  // Show `w` in `pre` as plain text (never HTML), keeping the newest lines in view.
  function show(pre, w) {
    if (pre.textContent === w.text) { return; }
    var atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
    pre.textContent = w.text;
    pre.dataset.length = String(w.end);
    if (atEnd) { pre.scrollTop = pre.scrollHeight; }
  }
  window.HandsonWritten = {add: add, show: show};
}());
