"use strict";
// The blob admin's add form (blobs/admin.py BlobAdmin) with a progress bar: the form is sent by
// XMLHttpRequest, whose upload events say how much of the body has gone. A static file, not an inline
// script: the pages' Content-Security-Policy runs scripts from this origin only (erphub/csp.py).
//
// The server answers {"location": ...} when the file is stored (BlobAdmin.response_add, on the
// X-Upload-Progress header), the form again with its errors, or a JSON error ({"detail", "code"}, e.g. 413).
// Loaded in the page's <head> (the admin's Media): it waits for the form.
function setUpUploadProgress() {
  const input = document.querySelector("form#blob_form input[type=file][name=file][data-max-bytes]");
  if (!input || !window.FormData || !window.XMLHttpRequest) {
    return; // not the add form, or an old browser: the form posts as usual
  }
  const form = input.form;
  const limit = Number(input.dataset.maxBytes);

  function humanSize(bytes) {
    // Django's filesizeformat: powers of 1024, one decimal.
    if (bytes < 1024) {
      return bytes + (bytes === 1 ? " byte" : " bytes");
    }
    const units = ["KB", "MB", "GB", "TB", "PB"];
    let value = bytes / 1024;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return value.toFixed(1) + " " + units[unit];
  }

  const box = document.createElement("div");
  box.className = "upload-progress";
  box.setAttribute("role", "status");
  box.setAttribute("aria-live", "polite");
  box.hidden = true;
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = 0;
  const text = document.createElement("p");
  text.className = "upload-progress-text";
  const cancel = document.createElement("button");
  cancel.type = "button";
  cancel.className = "button";
  cancel.textContent = "Cancel upload";
  box.append(bar, text, cancel);
  form.querySelector(".submit-row").before(box);

  let request = null;

  function setBusy(busy) {
    for (const button of form.querySelectorAll("input[type=submit], button[type=submit]")) {
      button.disabled = busy;
    }
    cancel.hidden = !busy;
  }

  function fail(message) {
    request = null;
    setBusy(false);
    box.hidden = false;
    bar.hidden = true;
    text.className = "upload-progress-text upload-progress-error";
    text.textContent = message;
  }

  function errorsIn(html) {
    // The form came back: show its error messages here (the file must be chosen again anyway).
    const page = new DOMParser().parseFromString(html, "text/html");
    const found = [...page.querySelectorAll(".errornote, .errorlist li")].map((node) => node.textContent.trim());
    return found.filter(Boolean).join(" ") || "The upload was not accepted; check the form and try again.";
  }

  window.addEventListener("beforeunload", (event) => {
    if (request) {
      event.preventDefault(); // leaving would cancel the upload: the browser asks first
    }
  });

  cancel.addEventListener("click", () => {
    if (request) {
      request.abort();
    }
  });

  form.addEventListener("submit", (event) => {
    const file = input.files[0];
    if (!file) {
      return; // the server says that a file is required
    }
    event.preventDefault();
    if (file.size > limit) {
      fail(`“${file.name}” is ${humanSize(file.size)}; files can be at most ${input.dataset.maxSize}.`);
      return;
    }
    const data = new FormData(form, event.submitter);
    const xhr = new XMLHttpRequest();
    request = xhr;
    xhr.open("POST", form.action || window.location.href);
    xhr.setRequestHeader("X-Upload-Progress", "1");
    xhr.upload.addEventListener("progress", (progress) => {
      const total = progress.lengthComputable ? progress.total : file.size;
      const percent = total ? Math.min(100, Math.floor((progress.loaded / total) * 100)) : 100;
      bar.value = percent;
      text.textContent =
        percent < 100
          ? `Uploading “${file.name}”: ${humanSize(Math.min(progress.loaded, file.size))} of ` +
            `${humanSize(file.size)} (${percent}%)`
          : `Uploaded “${file.name}”; finishing…`;
    });
    xhr.addEventListener("load", () => {
      const type = xhr.getResponseHeader("Content-Type") || "";
      if (type.startsWith("application/json")) {
        let body = {};
        try {
          body = JSON.parse(xhr.responseText);
        } catch (error) {
          body = {};
        }
        if (xhr.status < 400 && body.location) {
          request = null;
          text.textContent = `Stored “${file.name}”.`;
          window.location.assign(body.location);
          return;
        }
        fail(body.detail || `The upload failed (HTTP ${xhr.status}).`);
        return;
      }
      fail(xhr.status >= 400 ? `The upload failed (HTTP ${xhr.status}).` : errorsIn(xhr.responseText));
    });
    xhr.addEventListener("error", () => {
      fail("The connection was lost before the upload finished; nothing was stored. Try again.");
    });
    xhr.addEventListener("abort", () => fail("Upload cancelled; nothing was stored."));
    box.hidden = false;
    bar.hidden = false;
    bar.value = 0;
    text.className = "upload-progress-text";
    text.textContent = `Uploading “${file.name}”…`;
    setBusy(true);
    xhr.send(data);
  });
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", setUpUploadProgress);
} else {
  setUpUploadProgress();
}
