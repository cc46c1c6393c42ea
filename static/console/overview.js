// Rows of targets (and of groups) that had not answered when the overview was drawn
// load on their own: each asks its summary again (the server waits a few seconds for
// it) and replaces itself with the answer; rows never wait on each other.
(function () {
  "use strict";
  var TRIES = 8;
  var TIMEOUT_MS = 8000;

  function load(row, tries) {
    var url = row.getAttribute("data-summary-url");
    var controller = window.AbortController ? new AbortController() : null;
    var timer = controller ? window.setTimeout(function () { controller.abort(); }, TIMEOUT_MS) : null;
    row.setAttribute("aria-busy", "true");
    fetch(url, {
      credentials: "same-origin",
      headers: { "Accept": "application/json" },
      signal: controller ? controller.signal : undefined
    })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) {
        var holder = document.createElement("template");
        holder.innerHTML = data.row_html;  // rendered and escaped by the server
        var fresh = holder.content.querySelector("tr");
        row.replaceWith(fresh);
        if (data.still_trying && tries > 1) {
          window.setTimeout(function () { load(fresh, tries - 1); }, 2000);
        }
      })
      .catch(function () {
        row.removeAttribute("aria-busy");
        if (tries > 1) { window.setTimeout(function () { load(row, tries - 1); }, 4000); }
      })
      .finally(function () { if (timer) { window.clearTimeout(timer); } });
  }

  var waiting = "#targets tr[data-summary-url], #groups tr[data-summary-url]";
  document.querySelectorAll(waiting).forEach(function (row) {
    load(row, TRIES);
  });
})();
