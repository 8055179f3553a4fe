/* tagger serve: nothing the pages need; the label filter submits when a select changes. */
(function () {
  "use strict";
  document.querySelectorAll("form.filters select").forEach(function (s) {
    s.addEventListener("change", function () { s.form.submit(); });
  });
})();
