/* caption serve: an upload area at the top of the page. A chosen or dropped image is sent, as its
   raw bytes, to this page's own server (POST caption); the reply's record (the same runs as the
   page) is shown first by CX.addImage. A file over the server's limit (data.live.max_upload) is
   refused here before it is sent; any refusal is shown in #live-error and the page goes on. */
(function () {
  "use strict";
  const el = CX.el, data = CX.data;
  if (!data || !data.live || data.kind !== "image") return;
  const limit = data.live.max_upload;
  const mb = (n) => (n / 1048576).toFixed(n < 1048576 ? 2 : 1).replace(/\.?0+$/, "") + " MB";

  const status = el("span", {id: "live-status", class: "status", role: "status"});
  const error = el("p", {id: "live-error", role: "alert", hidden: true,
                         style: "color:#a32020;margin:6px 0 0"});
  const input = el("input", {type: "file", id: "live-file", accept: "image/*", multiple: true,
                             onchange: (e) => { send(Array.from(e.target.files)); e.target.value = ""; }});
  const zone = el("div", {id: "live", style: "margin:10px 0;padding:14px;border:2px dashed #b8bfcc;" +
                                             "border-radius:8px;background:#f5f7fa"},
    el("label", {}, el("b", {}, "Caption an image: "), "drop it anywhere on the page or choose it ", input),
    " ", status,
    el("div", {class: "help"}, `Up to ${mb(limit)}; every model's caption and maps appear below, newest first.`),
    error);
  const images = document.getElementById("images");
  images.parentNode.insertBefore(zone, images);

  /* a drop anywhere is an upload, never the browser leaving the page for the file */
  document.addEventListener("dragover", (e) => { e.preventDefault(); zone.style.borderColor = "#1f4fd1"; });
  document.addEventListener("dragleave", () => { zone.style.borderColor = "#b8bfcc"; });
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.style.borderColor = "#b8bfcc";
    send(Array.from((e.dataTransfer && e.dataTransfer.files) || []));
  });

  let queue = Promise.resolve();      // one upload at a time, in the order given
  let waiting = 0;
  function send(files) {
    for (const file of files) {
      waiting++;
      queue = queue.then(() => upload(file)).finally(() => { waiting--; if (!waiting) status.textContent = ""; });
    }
  }

  function showError(message) {
    error.textContent = message;
    error.hidden = false;
  }

  async function upload(file) {
    error.hidden = true;
    if (file.size > limit) {
      showError(`${file.name}: ${mb(file.size)}, more than the ${mb(limit)} this server takes`);
      return;
    }
    if (!file.size) {
      showError(`${file.name}: the file is empty`);
      return;
    }
    status.textContent = `captioning ${file.name}\u2026`;
    let reply, json = null;
    try {
      reply = await fetch("caption", {method: "POST", body: file,
        headers: {"Content-Type": "application/octet-stream", "X-Image-Name": encodeURIComponent(file.name)}});
      json = await reply.json().catch(() => null);
    } catch (e) {
      showError(`${file.name}: the server cannot be reached (${e.message})`);
      return;
    }
    if (!reply.ok || !json || !json.record) {
      showError(json && json.error ? json.error : `${file.name}: the server answered ${reply.status} ${reply.statusText}`);
      return;
    }
    CX.addImage(json.record);
    const summary = document.querySelector("header .summary"), n = data.images.length;
    if (summary) summary.textContent = summary.textContent.replace(/^\d+ images?/, n + (n === 1 ? " image" : " images"));
  }

  CX.live = {upload: upload, send: send};
})();
