/* pitstop web view: live parts of the pages (server-sent events), no framework, no build step.
 * Every value from the server is inserted with textContent, never as HTML; links are built
 * from this server's own paths and encodeURIComponent. The Content-Security-Policy forbids
 * inline script, so this file is the only script a page runs. */
"use strict";
(function () {
  var MAX_OUTPUT_LINES = 20000;

  function setText(el, value) {
    if (el) { el.textContent = value === null || value === undefined ? "" : String(value); }
  }

  function field(root, name) {
    return root.querySelector('[data-f="' + name + '"]');
  }

  function liveState(section, value) {
    setText(section.querySelector("[data-live-state]"), value);
  }

  /* --- pages that refresh themselves (the fleet) ------------------------------------------ */
  var refresh = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (refresh > 0) {
    window.setTimeout(function () { window.location.reload(); }, refresh * 1000);
  }

  /* --- the live event feed ---------------------------------------------------------------- */
  function cell(tr, value, className) {
    var td = document.createElement("td");
    if (className) { td.className = className; }
    setText(td, value);
    tr.appendChild(td);
    return td;
  }

  function eventRow(ev, href) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-event-id", ev.id);
    var first = document.createElement("td");
    first.className = "nowrap";
    var link = document.createElement("a");
    link.href = href + encodeURIComponent(ev.id);
    setText(link, String(ev.time || "").replace("T", " ").slice(0, 19));
    first.appendChild(link);
    tr.appendChild(first);
    cell(tr, ev.type, "mono");
    var sevCell = document.createElement("td");
    var sev = document.createElement("span");
    sev.className = "sev";
    sev.setAttribute("data-sev", String(ev.severity || ""));
    setText(sev, ev.severity);
    sevCell.appendChild(sev);
    tr.appendChild(sevCell);
    cell(tr, ev.source, "mono");
    cell(tr, ev.data, "data mono");
    return tr;
  }

  document.querySelectorAll("[data-live-events]").forEach(function (section) {
    var url = section.getAttribute("data-live-events");
    var href = section.getAttribute("data-event-href");
    var max = parseInt(section.getAttribute("data-max-rows") || "200", 10);
    var body = section.querySelector("[data-live-rows]");
    var pauseButton = section.querySelector("[data-live-pause]");
    var paused = false;
    var pending = [];
    var seen = new Set();
    var scheduled = false;
    var received = 0;

    function flush() {
      scheduled = false;
      if (paused || pending.length === 0) { return; }
      var batch = pending.splice(0, pending.length);
      var fragment = document.createDocumentFragment();
      for (var i = batch.length - 1; i >= Math.max(0, batch.length - max); i--) {
        fragment.appendChild(eventRow(batch[i], href));
      }
      body.insertBefore(fragment, body.firstChild);
      while (body.rows.length > max) { body.deleteRow(body.rows.length - 1); }
    }

    function schedule() {
      if (!scheduled) { scheduled = true; window.setTimeout(flush, 50); }
    }

    if (pauseButton) {
      pauseButton.addEventListener("click", function () {
        paused = !paused;
        setText(pauseButton, paused ? "Resume" : "Pause");
        if (!paused) { schedule(); }
      });
    }

    var source = new EventSource(url);
    source.addEventListener("open", function () { liveState(section, "live"); });
    source.addEventListener("error", function () { liveState(section, "reconnecting…"); });
    source.addEventListener("note", function (message) {
      liveState(section, JSON.parse(message.data));
    });
    source.addEventListener("events", function (message) {
      var list = JSON.parse(message.data);
      for (var i = 0; i < list.length; i++) {
        var ev = list[i];
        if (seen.has(ev.id)) { continue; }
        seen.add(ev.id);
        pending.push(ev);
      }
      received += list.length;
      if (pending.length > max) { pending.splice(0, pending.length - max); }
      if (seen.size > 20000) { seen = new Set(Array.from(seen).slice(-max)); }
      section.setAttribute("data-received", String(received));
      liveState(section, paused ? "paused" : "live");
      schedule();
    });
  });

  /* --- a workstream run's graph ------------------------------------------------------------ */
  function stepElement(section, id) {
    var all = section.querySelectorAll("[data-step]");
    for (var i = 0; i < all.length; i++) {
      if (all[i].getAttribute("data-step") === id) { return all[i]; }
    }
    return null;
  }

  function runHead(state) {
    var head = document.querySelector("[data-run-head]");
    if (!head) { return; }
    var status = field(head, "run-status");
    if (status) {
      status.setAttribute("data-status", state.status);
      setText(status, state.status);
    }
    setText(field(head, "run-took"), state.took);
    setText(field(head, "run-exit"),
            state.exit_code === null || state.exit_code === undefined ? "" : "exit " + state.exit_code);
    var error = document.querySelector('[data-f="run-error"]');
    if (error) {
      setText(error, state.error);
      error.classList.toggle("hidden", !state.error);
    }
  }

  document.querySelectorAll("[data-live-run]").forEach(function (section) {
    var runHref = section.getAttribute("data-run-href");
    var source = new EventSource(section.getAttribute("data-live-run"));
    source.addEventListener("open", function () { liveState(section, "live"); });
    source.addEventListener("error", function () { liveState(section, "reconnecting…"); });
    source.addEventListener("run", function (message) {
      var state = JSON.parse(message.data);
      runHead(state);
      Object.keys(state.steps).forEach(function (id) {
        var step = state.steps[id];
        var el = stepElement(section, id);
        if (!el) { return; }
        if (el.getAttribute("data-status") !== step.status) {
          el.setAttribute("data-status", step.status);
        }
        setText(field(el, "status"), step.status);
        setText(field(el, "took"), step.took);
        setText(field(el, "attempt"), step.attempt);
        setText(field(el, "host"), step.host);
        setText(field(el, "message"), step.status === "succeeded" ? "" : step.message);
        var child = field(el, "child");
        if (child && step.child_run) {
          child.href = runHref + encodeURIComponent(step.child_run);
          child.classList.remove("hidden");
        }
      });
    });
    source.addEventListener("end", function () { source.close(); liveState(section, "ended"); });
    source.addEventListener("gone", function () { source.close(); liveState(section, "gone"); });
  });

  /* --- a script run's output --------------------------------------------------------------- */
  document.querySelectorAll("[data-live-output]").forEach(function (pre) {
    var section = pre.parentNode;
    var ending = section.querySelector("[data-output-end]");
    var source = new EventSource(pre.getAttribute("data-live-output"));
    var count = 0;
    source.addEventListener("open", function () { liveState(section, "live"); });
    source.addEventListener("error", function () { liveState(section, "reconnecting…"); });
    source.addEventListener("note", function (message) {
      liveState(section, JSON.parse(message.data));
    });
    source.addEventListener("lines", function (message) {
      var lines = JSON.parse(message.data);
      var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      var fragment = document.createDocumentFragment();
      for (var i = 0; i < lines.length; i++) {
        var span = document.createElement("span");
        span.className = lines[i][0] === "stderr" ? "stderr" : "stdout";
        span.textContent = lines[i][1] + "\n";
        fragment.appendChild(span);
      }
      pre.appendChild(fragment);
      count += lines.length;
      while (count > MAX_OUTPUT_LINES && pre.firstChild) { pre.removeChild(pre.firstChild); count--; }
      if (atBottom) { pre.scrollTop = pre.scrollHeight; }
    });
    source.addEventListener("end", function (message) {
      source.close();
      var end = JSON.parse(message.data);
      liveState(section, "ended");
      setText(ending, "ended " + end.status +
              (end.exit_code === null || end.exit_code === undefined ? "" : " (exit " + end.exit_code + ")"));
      if (ending) { ending.setAttribute("data-ended", end.status); }
    });
  });
})();
