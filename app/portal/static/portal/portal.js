// The portal's only script: small conveniences over pages that work without it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Ask before a form with data-confirm is sent (disable, rotate).
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }

  // Copy a revealed secret.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.querySelector(button.dataset.copy);
      if (!source || !navigator.clipboard) return;
      await navigator.clipboard.writeText(source.textContent.trim());
      button.textContent = "Copied";
    });
  }

  // Pages about work in progress reload until it is done, while someone is looking at them.
  const main = document.querySelector("main[data-refresh-seconds]");
  if (main) {
    const seconds = Number(main.dataset.refreshSeconds) || 2;
    const reload = () => {
      if (document.visibilityState === "visible") window.location.reload();
      else setTimeout(reload, seconds * 1000);
    };
    setTimeout(reload, seconds * 1000);
    const note = document.createElement("p");
    note.className = "muted refresh-note";
    note.textContent = "In progress: this page refreshes by itself.";
    main.prepend(note);
  }
});
