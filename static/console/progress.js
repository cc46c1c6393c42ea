// Polls the run's JSON and redraws its migrations until the run has finished.
// No library; text only goes into the page through textContent.
(function () {
  "use strict";
  var root = document.getElementById("run");
  if (!root) { return; }
  var url = root.getAttribute("data-poll-url");
  var delay = 1000;

  function chip(state) {
    var span = document.createElement("span");
    span.className = "state state-" + state.replace(/ /g, "-");
    span.textContent = state.replace(/_/g, " ");
    return span;
  }

  function cell(row, content, className) {
    var td = document.createElement("td");
    if (className) { td.className = className; }
    if (content instanceof Node) { td.appendChild(content); } else { td.textContent = content || ""; }
    row.appendChild(td);
    return td;
  }

  function render(data) {
    var state = document.getElementById("run-state");
    state.replaceChildren(chip(data.state));
    state.setAttribute("data-state", data.state);
    root.setAttribute("data-finished", data.finished ? "true" : "false");
    var message = document.getElementById("run-message");
    message.textContent = data.message || "";
    message.hidden = !data.message;
    message.className = (data.state === "failed" || data.state === "error" ||
      data.state === "locked" || data.state === "refused") ? "db-error" : "";
    document.getElementById("run-duration").textContent = data.duration || "";
    document.getElementById("run-started").textContent = data.started_at || "";
    document.getElementById("run-finished").textContent = data.finished_at || "";
    var waiting = document.getElementById("run-waiting");
    if (waiting) { waiting.hidden = data.state !== "queued"; }
    var cancel = document.getElementById("run-cancel");
    if (cancel) { cancel.hidden = data.finished; }

    var body = document.getElementById("run-steps-body");
    var rows = [];
    data.rows.forEach(function (step) {
      var tr = document.createElement("tr");
      tr.className = "step step-" + step.state.replace(/ /g, "-");
      tr.setAttribute("data-version", step.version);
      cell(tr, step.filename, "mono");
      cell(tr, chip(step.state));
      cell(tr, step.duration);
      rows.push(tr);
      if (step.error) {
        var detail = document.createElement("tr");
        detail.className = "row-failed-detail";
        var td = cell(detail, "");
        td.colSpan = 3;
        var pre = document.createElement("pre");
        pre.className = "db-error";
        pre.textContent = step.error;
        td.appendChild(pre);
        rows.push(detail);
      }
    });
    body.replaceChildren.apply(body, rows);
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) {
        document.getElementById("run-connection").hidden = true;
        delay = 1000;
        render(data);
        if (!data.finished) { window.setTimeout(poll, delay); }
      })
      .catch(function () {
        document.getElementById("run-connection").hidden = false;
        delay = Math.min(delay * 2, 10000);
        window.setTimeout(poll, delay);
      });
  }

  if (root.getAttribute("data-finished") !== "true") { window.setTimeout(poll, 500); }
})();
