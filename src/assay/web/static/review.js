// Keyboard shortcuts of the review pages: 1..9 pick a class, U unsure, S skip, Z undo the last
// label, C focuses the comment (Esc leaves it), G opens or closes the guidelines, ? shows every
// key. Everything also works with the mouse, and every form works without this script.
(function () {
  "use strict";
  var form = document.getElementById("label-form");
  var help = document.getElementById("help");
  var guidelines = document.getElementById("guidelines");
  var comment = document.getElementById("comment");
  var sent = false;
  if (form) {
    form.addEventListener("submit", function (event) {
      // One submission per item: a double press must not send a second request.
      if (sent) { event.preventDefault(); return; }
      sent = true;
    });
  }
  function showHelp(open) {
    if (!help) { return; }
    help.hidden = !open;
    if (open) { document.getElementById("help-close").focus(); }
  }
  var opener = document.getElementById("help-open");
  if (opener) { opener.addEventListener("click", function () { showHelp(true); }); }
  var closer = document.getElementById("help-close");
  if (closer) { closer.addEventListener("click", function () { showHelp(false); }); }
  if (help) {
    help.addEventListener("click", function (event) { if (event.target === help) { showHelp(false); } });
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var target = event.target;
    var typing = target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT" || target.tagName === "SELECT");
    if (typing) {
      if (event.key === "Escape") { target.blur(); }
      return;
    }
    if (help && !help.hidden) {
      if (event.key === "Escape" || event.key === "?") { event.preventDefault(); showHelp(false); }
      return;
    }
    var key = event.key.toLowerCase();
    if (key === "?" && help) { event.preventDefault(); showHelp(true); return; }
    if (key === "g" && guidelines) { event.preventDefault(); guidelines.open = !guidelines.open; return; }
    if (key === "c" && comment) { event.preventDefault(); comment.focus(); return; }
    var button = document.querySelector('button[data-key="' + key + '"]');
    if (button && key !== "?") {
      event.preventDefault();
      button.click();
    }
  });
})();
