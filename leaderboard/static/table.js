/* editprobe leaderboard: sortable, filterable tables. Written for this site; no dependency.
 *
 * Sorting: every <th> of a table.sortable holds a <button>; a click sorts the rows by that column
 * (a cell's data-sort value when present, else its text), a second click reverses. Numeric columns
 * (th[data-type=num]) compare as numbers; empty values always go last. Columns with data-desc-first
 * start descending (higher is better there).
 * Filtering: a .controls[data-controls=TABLE_ID] block holds select[data-filter=model|editor] and
 * input[data-filter=text]; rows whose data-model / data-editor do not match are hidden.
 * Only textContent, dataset and attributes are read or written: no HTML is ever built from data.
 */
(function () {
  "use strict";

  function cellKey(row, index, numeric) {
    var cell = row.cells[index];
    if (!cell) { return null; }
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    if (raw === "" || raw === "\u2014") { return null; }
    if (numeric) {
      var x = parseFloat(raw);
      return isNaN(x) ? null : x;
    }
    return raw.toLowerCase();
  }

  function sortBy(table, th) {
    var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var index = headers.indexOf(th);
    var numeric = th.getAttribute("data-type") === "num";
    var current = th.getAttribute("aria-sort");
    var direction;
    if (current === "ascending") { direction = "descending"; }
    else if (current === "descending") { direction = "ascending"; }
    else { direction = th.hasAttribute("data-desc-first") ? "descending" : "ascending"; }
    var sign = direction === "ascending" ? 1 : -1;
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function (row, i) {
      return { row: row, key: cellKey(row, index, numeric), i: i };
    });
    rows.sort(function (a, b) {
      if (a.key === null && b.key === null) { return a.i - b.i; }
      if (a.key === null) { return 1; }            // empty values last, whatever the direction
      if (b.key === null) { return -1; }
      if (a.key < b.key) { return -sign; }
      if (a.key > b.key) { return sign; }
      return a.i - b.i;                              // stable
    });
    rows.forEach(function (r) { body.appendChild(r.row); });
    headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", direction);
  }

  function applyFilters(controls, table) {
    var model = "", editor = "", text = "";
    controls.querySelectorAll("[data-filter]").forEach(function (el) {
      var kind = el.getAttribute("data-filter");
      if (kind === "model") { model = el.value; }
      if (kind === "editor") { editor = el.value; }
      if (kind === "text") { text = el.value.trim().toLowerCase(); }
    });
    var shown = 0, total = 0;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var m = row.dataset.model || "", e = row.dataset.editor || "";
      var ok = (!model || m === model) && (!editor || e === editor) &&
               (!text || m.toLowerCase().indexOf(text) >= 0 || e.toLowerCase().indexOf(text) >= 0);
      row.hidden = !ok;
      total += 1;
      if (ok) { shown += 1; }
    });
    var count = controls.querySelector("[data-count]");
    if (count) {
      count.textContent = shown === total ? total + (total === 1 ? " run" : " runs")
                                          : shown + " of " + total + " runs shown";
    }
  }

  function init() {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
        var button = th.querySelector("button");
        if (button) { button.addEventListener("click", function () { sortBy(table, th); }); }
      });
    });
    document.querySelectorAll(".controls[data-controls]").forEach(function (controls) {
      var table = document.getElementById(controls.getAttribute("data-controls"));
      if (!table) { return; }
      controls.querySelectorAll("[data-filter]").forEach(function (el) {
        el.addEventListener(el.tagName === "SELECT" ? "change" : "input", function () {
          applyFilters(controls, table);
        });
      });
    });
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); }
  else { init(); }
})();
