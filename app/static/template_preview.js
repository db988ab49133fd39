// The template editor's live preview: as the marketer types, the text is rendered for
// the sample member and the SMS counter updated (the Preview button does the same
// without JavaScript).
(function () {
  "use strict";
  var form = document.querySelector("form[data-preview-url]");
  if (!form) { return; }
  var box = document.getElementById("live-preview");
  var text = box.querySelector("[data-preview-text]");
  var count = box.querySelector("[data-preview-count]");
  var problem = box.querySelector("[data-preview-error]");
  var timer = null;
  var asked = 0;

  function show(answer) {
    if (answer.error) {
      problem.textContent = answer.error;
      problem.hidden = false;
      text.textContent = "";
      count.textContent = "";
      box.hidden = false;
      return;
    }
    problem.hidden = true;
    text.textContent = (answer.title ? answer.title + "\n" : "") + answer.text;
    count.textContent = answer.counter || "";
    box.hidden = false;
    document.querySelectorAll("[data-server-preview]").forEach(function (old) {
      old.hidden = true;
    });
  }

  function ask() {
    var mine = ++asked;
    fetch(form.dataset.previewUrl, {
      method: "POST",
      body: new FormData(form),
      credentials: "same-origin",
      headers: { "Accept": "application/json" }
    }).then(function (response) { return response.json(); })
      .then(function (answer) { if (mine === asked) { show(answer); } })
      .catch(function () { /* the Preview button still works */ });
  }

  form.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(ask, 300);
  });
})();
