/* caption explore: read the embedded data and draw the view its kind asks for. */
(function () {
  const node = document.getElementById("attention-data");
  const app = document.getElementById("app");
  let data;
  try {
    data = JSON.parse(node.textContent);
  } catch (e) {
    app.textContent = "This report's data cannot be read: " + e.message;
    return;
  }
  window.CX.data = data;
  if (data.kind === "text") CX.renderText(app, data);
  else CX.renderImages(app, data);
})();
