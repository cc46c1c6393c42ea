// Polls the run's JSON and redraws the run page until the run has finished: state,
// elapsed time, the tab title, one spoken sentence (aria-live) when something
// changes, a lock wait with its blockers, and the next steps after a failure.
// No library; text only goes into the page through textContent.
(function () {
  "use strict";
  var root = document.getElementById("run");
  if (!root) { return; }
  var url = root.getAttribute("data-poll-url");
  var siteTitle = root.getAttribute("data-site-title") || "";
  var delay = 1000;
  var startedAt = root.getAttribute("data-started-at");
  var finished = root.getAttribute("data-finished") === "true";

  function byId(id) { return document.getElementById(id); }

  function words(state) { return state.replace(/_/g, " ").toUpperCase(); }

  function chip(state, label) {
    var span = document.createElement("span");
    span.className = "state state-" + state.replace(/ /g, "");
    span.setAttribute("data-state", state);
    span.textContent = label || words(state);
    return span;
  }

  function cell(row, content, className) {
    var td = document.createElement("td");
    if (className) { td.className = className; }
    if (content instanceof Node) { td.appendChild(content); } else { td.textContent = content || ""; }
    row.appendChild(td);
    return td;
  }

  function seconds(total) {
    total = Math.max(0, Math.floor(total));
    var h = Math.floor(total / 3600), m = Math.floor(total / 60) % 60, s = total % 60;
    if (h) { return h + "h" + (m < 10 ? "0" : "") + m + "m"; }
    if (m) { return m + "m" + (s < 10 ? "0" : "") + s + "s"; }
    return s + "s";
  }

  function tick() {
    if (finished || !startedAt) { return; }
    var since = (Date.now() - Date.parse(startedAt)) / 1000;
    if (!isNaN(since)) { byId("run-elapsed").textContent = seconds(since); }
  }

  function liveSentence(data) {
    if (data.members) {
      var of = data.members_done + " of " + data.members_total + " members done.";
      if (data.state === "queued") { return "Queued: waiting for a worker."; }
      return data.finished ? "Finished: " + (data.state_label || words(data.state)) + ", " + of :
        "Running: " + of;
    }
    var total = data.rows.length;
    var done = data.done_count || 0;
    if (data.state === "queued") { return "Queued: waiting for a worker."; }
    if (!data.finished) {
      var current = data.rows.filter(function (row) { return row.version === data.current_version; })[0];
      var wait = data.lock_wait ? " Waiting for a lock." : "";
      return "Running: " + done + " of " + total + " done" +
        (current ? ", now " + current.filename : "") + "." + wait;
    }
    return "Finished: " + (data.state_label || words(data.state)) + ", " + done + " of " + total + " done.";
  }

  function renderLockWait(data) {
    var box = byId("run-lock-wait");
    if (!box) { return; }
    var wait = data.lock_wait || null;
    var blockers = data.blockers || [];
    box.hidden = !wait && !blockers.length;
    if (box.hidden) { return; }
    var text = "Waiting for a lock";
    if (wait) {
      text += ": " + (wait.message || wait.filename || "");
      if (wait.attempt) {
        text += " (attempt " + wait.attempt + " of " + (wait.attempts_allowed || "?");
        if (wait.next_attempt_in_seconds) { text += ", next in " + Math.round(wait.next_attempt_in_seconds) + " s"; }
        text += ")";
      }
    }
    byId("run-lock-wait-text").textContent = text + ".";
    var items = blockers.map(function (b) {
      var li = document.createElement("li");
      li.className = "mono";
      var age = (b.xact_age_seconds === null || b.xact_age_seconds === undefined) ? "" :
        ", transaction open " + Math.round(b.xact_age_seconds) + " s";
      li.textContent = "blocked by pid " + b.pid + ", user " + b.user + ", " +
        (b.application_name || "") + ", " + (b.state || "") + age + ": " + (b.query || "");
      return li;
    });
    var list = byId("run-blockers");
    list.replaceChildren.apply(list, items);
  }

  function renderNextSteps(data) {
    var box = byId("run-next-steps");
    var steps = data.next_steps || null;
    box.hidden = !steps;
    if (!steps) { return; }
    byId("run-next-text").textContent = steps.text;
    var links = steps.links.map(function (link) {
      var a = document.createElement("a");
      a.href = link.url;
      a.textContent = link.label;
      return a;
    });
    var holder = byId("run-next-links");
    holder.replaceChildren();
    links.forEach(function (a) { holder.appendChild(document.createTextNode(" ")); holder.appendChild(a); });
  }

  // A group's parent run: counts per state, then each member with a link to its run.
  function renderMembers(data) {
    var counts = byId("run-member-counts");
    var body = byId("run-members-body");
    if (!counts || !body) { return; }
    counts.replaceChildren.apply(counts, data.member_counts.map(function (c) {
      var span = document.createElement("span");
      span.setAttribute("data-state", c.state);
      span.appendChild(chip(c.state, c.label));
      var n = document.createElement("span");
      n.className = "count";
      n.textContent = String(c.count);
      span.appendChild(document.createTextNode(" "));
      span.appendChild(n);
      return span;
    }));
    body.replaceChildren.apply(body, data.members.map(function (m) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-member", m.database);
      tr.setAttribute("data-state", m.state);
      cell(tr, m.database, "mono");
      cell(tr, chip(m.state, m.label));
      if (m.url) {
        var a = document.createElement("a");
        a.href = m.url;
        a.textContent = "run #" + m.run;
        cell(tr, a);
      } else {
        cell(tr, "—");
      }
      return tr;
    }));
  }

  function render(data) {
    var state = byId("run-state");
    state.replaceChildren(chip(data.state, data.state_label));
    state.setAttribute("data-state", data.state);
    finished = !!data.finished;
    root.setAttribute("data-finished", finished ? "true" : "false");
    if (data.title) { document.title = data.title + (siteTitle ? " | " + siteTitle : ""); }
    var message = byId("run-message");
    message.textContent = data.message || "";
    message.hidden = !data.message;
    message.className = (data.state === "failed" || data.state === "error" ||
      data.state === "locked" || data.state === "refused") ? "db-error" : "";
    startedAt = data.started_at_iso || startedAt;
    byId("run-elapsed-box").hidden = !startedAt;
    byId("run-elapsed-box").firstChild.textContent = finished ? "Took " : "Running for ";
    if (finished || !startedAt) { byId("run-elapsed").textContent = data.elapsed || ""; } else { tick(); }
    byId("run-started").textContent = data.started_at || "";
    byId("run-finished").textContent = data.finished_at || "";
    var live = byId("run-live");
    var sentence = liveSentence(data);
    if (live.textContent.trim() !== sentence) { live.textContent = sentence; }
    var waiting = byId("run-waiting");
    if (waiting) { waiting.hidden = data.state !== "queued"; }
    var cancel = byId("run-cancel");
    if (cancel) { cancel.hidden = finished; }
    if (finished) {
      var follow = byId("run-follow");
      follow.firstChild.textContent = "This run has finished (" + (data.finished_at || "") + "). ";
    }
    renderLockWait(data);
    renderNextSteps(data);

    if (data.members) { renderMembers(data); }
    var body = byId("run-steps-body");
    if (!body) { return; }
    var rows = [];
    data.rows.forEach(function (step) {
      var tr = document.createElement("tr");
      tr.className = "step step-" + step.state.replace(/ /g, "");
      tr.setAttribute("data-version", step.version);
      cell(tr, step.filename, "mono");
      var stateCell = cell(tr, chip(step.state, step.label));
      if (step.attempts && step.attempts > 1) {
        var note = document.createElement("span");
        note.className = "plan-meta";
        note.textContent = " " + step.attempts + " attempts";
        stateCell.appendChild(note);
      }
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
        byId("run-connection").hidden = true;
        delay = 1000;
        render(data);
        if (!data.finished) { window.setTimeout(poll, delay); }
      })
      .catch(function () {
        byId("run-connection").hidden = false;
        delay = Math.min(delay * 2, 10000);
        window.setTimeout(poll, delay);
      });
  }

  if (!finished) {
    window.setInterval(tick, 1000);
    window.setTimeout(poll, 500);
  }
})();
