// Copy buttons: <button data-lr-copy="element-id"> copies that element's value or text.
document.addEventListener("click", function (event) {
  const button = event.target.closest("[data-lr-copy]");
  if (!button) return;
  event.preventDefault();
  const source = document.getElementById(button.dataset.lrCopy);
  const text = source.value !== undefined ? source.value : source.textContent;
  const done = function () {
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(function () { button.textContent = label; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done);
  } else {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
    done();
  }
});
