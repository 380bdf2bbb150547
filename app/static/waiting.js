// The redirect link's waiting page: live progress from the job's stream, then on to the
// client's page the moment the job ends (the link itself answers 303 to it by then).
(function () {
  "use strict";
  var page = document.getElementById("waiting");
  var bar = document.getElementById("progress");
  var text = document.getElementById("progress-text");
  Boomerang.watch(page.dataset.streamUrl, {
    onProgress: function (progress) {
      if (typeof progress.percent === "number") {
        bar.value = progress.percent;
        text.textContent =
          Math.round(progress.percent) + "%" + (progress.message ? " — " + progress.message : "");
      }
    },
    onDone: function () {
      window.location.replace(page.dataset.returnUrl);
    },
    onError: function () {
      window.location.reload(); // the page mints a fresh stream token, or moves on if done
    },
  });
})();
