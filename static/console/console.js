// A refused confirmation is answered at the POST's address (/run/, .../confirm/);
// put the page's own address back, so that a reload or a bookmark lands on the plan.
(function () {
  "use strict";
  var main = document.querySelector("[data-canonical-url]");
  if (!main || !window.history || !window.history.replaceState) { return; }
  var url = main.getAttribute("data-canonical-url");
  if (url && window.location.pathname !== url.split("?")[0]) {
    window.history.replaceState(null, "", url);
  }
})();

// The plan page's "not before" field is in the browser's time: send its UTC offset.
(function () {
  "use strict";
  var offset = document.getElementById("id_run_at_offset");
  var field = document.getElementById("id_run_at");
  if (!offset || !field) { return; }
  function update() {
    var when = field.value ? new Date(field.value) : new Date();
    offset.value = String(when.getTimezoneOffset());
  }
  field.addEventListener("change", update);
  update();
})();
