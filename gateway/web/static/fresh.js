// The notice page only. A page the Back button restores from the browser's back-forward cache
// is shown without asking the server (no-store does not keep it out for a few minutes), so a
// notice could reappear after its session lapsed on a shared computer: hidden when left, and
// fetched anew when restored, so the server decides again (the landing page, without a session).
"use strict";
window.addEventListener("pagehide", function (event) {
  if (event.persisted) {
    document.body.hidden = true;
  }
});
window.addEventListener("pageshow", function (event) {
  if (event.persisted) {
    window.location.reload();
  }
});
