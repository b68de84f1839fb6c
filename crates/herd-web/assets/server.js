// Live progress on a server's page: applies the server-sent events of the page's
// data-events address (see herd-web's pages/servers.rs) to the phase and the steps.
// Without JavaScript the page is complete as served; reloading it shows the news.
// The updates can be paused (WCAG 2.2.2); a new phase offers a reload instead of
// reloading by itself, so nobody loses their place.
(function () {
  "use strict";
  var root = document.getElementById("server-live");
  if (!root || !window.EventSource) return;
  var phase = document.getElementById("server-phase");
  var steps = document.getElementById("server-steps");
  var toggle = document.getElementById("live-toggle");
  var reload = document.getElementById("server-reload");
  var served = phase.getAttribute("data-phase");
  var source = null;

  function apply(s) {
    phase.setAttribute("data-phase", s.phase);
    phase.querySelector("strong").textContent = s.label;
    phase.querySelector(".phase-message").textContent = s.message ? ": " + s.message : "";
    while (steps.firstChild) steps.removeChild(steps.firstChild);
    s.steps.forEach(function (st) {
      var li = document.createElement("li");
      li.setAttribute("data-state", st.state);
      var name = document.createElement("strong");
      name.textContent = st.name;
      li.appendChild(name);
      li.appendChild(document.createTextNode(": " + st.label));
      if (st.message) {
        var hint = document.createElement("span");
        hint.className = "hint";
        hint.textContent = " (" + st.message + ")";
        li.appendChild(hint);
      }
      steps.appendChild(li);
    });
    if (s.phase !== served) reload.hidden = false;
  }

  function start() {
    source = new EventSource(root.getAttribute("data-events"));
    source.addEventListener("status", function (e) { apply(JSON.parse(e.data)); });
    toggle.textContent = "Pause live updates";
  }

  function stop() {
    if (source) source.close();
    source = null;
    toggle.textContent = "Resume live updates";
  }

  toggle.hidden = false;
  toggle.addEventListener("click", function () { if (source) stop(); else start(); });
  start();
})();
