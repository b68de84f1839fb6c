// Live progress on a server's page: applies the server-sent events of the page's
// data-events address (see herd-web's pages/servers.rs) to the phase and the steps.
// Without JavaScript the page is complete as served; reloading it shows the news.
(function () {
  "use strict";
  var root = document.getElementById("server-live");
  if (!root || !window.EventSource) return;
  var source = new EventSource(root.getAttribute("data-events"));
  var first = true;
  source.addEventListener("status", function (e) {
    var s = JSON.parse(e.data);
    var phase = document.getElementById("server-phase");
    var changed = phase.getAttribute("data-phase") !== s.phase;
    phase.setAttribute("data-phase", s.phase);
    phase.querySelector("strong").textContent = s.label;
    phase.querySelector(".phase-message").textContent = s.message ? ": " + s.message : "";
    var steps = document.getElementById("server-steps");
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
    // A new phase may bring an address, an error or the owner's password: the page as
    // served shows them best.
    if (changed && !first) {
      source.close();
      window.location.reload();
    }
    first = false;
  });
})();
