// jobsys web console: live updates over server-sent events, no inline script.
// One EventSource per page; on a topic this page shows (data-topics on <main>), the
// page re-reads itself and swaps <main> in place (no reload): the first change after
// a quiet spell within DELAY_MS, then at most one re-read per MIN_GAP_MS however many
// events come (100 events a second must not become 10 page reads a second per tab;
// 400 ms keeps a change on screen within 1 s of its commit even right after a re-read).
// The banner shows when the database or the console is unreachable and hides when
// the stream resyncs.
(function () {
  "use strict";
  var main = document.querySelector("main");
  var banner = document.getElementById("live-banner");
  if (!main || !window.EventSource) { return; }
  var topics = (main.getAttribute("data-topics") || "").split(" ").filter(Boolean);
  var timer = null, inflight = false, again = false, last = 0, DELAY_MS = 50, MIN_GAP_MS = 400;

  function show(text) { banner.textContent = text; banner.hidden = false; }
  function hide() { banner.hidden = true; banner.textContent = ""; }
  function busy() {
    var el = document.activeElement;
    return el && main.contains(el) && /^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName);
  }
  function refresh() {
    if (!topics.length || main.getAttribute("data-live") === "off") { return; }
    if (timer === null) {
      timer = window.setTimeout(load, Math.max(DELAY_MS, last + MIN_GAP_MS - Date.now()));
    }
  }
  function load() {
    timer = null;
    if (inflight || busy()) { again = true; if (!inflight) { window.setTimeout(refresh, 500); } return; }
    inflight = true;
    last = Date.now();
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Requested-With": "jobsys-live" } })
      .then(function (response) {
        if (response.status >= 500) {
          // Keep the data on screen; the stream's status event says when to re-read.
          show("Database unreachable: showing the last data read; reconnecting…");
          return null;
        }
        return response.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.querySelector("main");
        if (fresh && !busy()) {
          main.innerHTML = fresh.innerHTML;
          main.setAttribute("data-refreshed", String(Date.now()));
        }
      })
      .catch(function () { show("The web console is unreachable; retrying…"); })
      .then(function () {
        inflight = false;
        if (again) { again = false; refresh(); }
      });
  }

  var source = new EventSource("/admin/events");
  source.addEventListener("status", function (event) {
    var data = JSON.parse(event.data);
    document.body.setAttribute("data-live", data.connected ? "connected" : "lost");
    if (data.connected) { hide(); refresh(); }
    else { show("Database unreachable" + (data.error ? ": " + data.error : "") + " · reconnecting…"); }
  });
  source.addEventListener("resync", refresh);
  topics.forEach(function (topic) { source.addEventListener(topic, refresh); });
  source.onerror = function () {
    if (source.readyState !== EventSource.OPEN) { show("Live updates interrupted · reconnecting…"); }
  };
})();
