// Keyboard shortcuts for the labelling form: 1..9 pick a class, U unsure, S skip,
// C focuses the comment, Esc leaves it. Everything also works with the mouse.
(function () {
  "use strict";
  var form = document.getElementById("label-form");
  if (!form) { return; }
  var comment = document.getElementById("comment");
  var sent = false;
  form.addEventListener("submit", function (event) {
    // One submission per item: a double press must not send a second request.
    if (sent) { event.preventDefault(); return; }
    sent = true;
  });
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var target = event.target;
    var typing = target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT" || target.tagName === "SELECT");
    if (typing) {
      if (event.key === "Escape") { target.blur(); }
      return;
    }
    var key = event.key.toLowerCase();
    if (key === "c" && comment) { event.preventDefault(); comment.focus(); return; }
    var button = form.querySelector('button[data-key="' + key + '"]');
    if (button) {
      event.preventDefault();
      button.click();
    }
  });
})();
