/* caption explore: helpers shared by the image and text views. No request leaves the page:
   everything it shows is in the attention-data element (schema.md). */
"use strict";
window.CX = window.CX || {};

/* el("div", {class: "x", onclick: f}, child, "text", ...) -> an element */
CX.el = function (tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
};

/* base64 -> Uint8Array (the quantised maps: q = round(255 alpha / max)) */
CX.bytes = function (b64) {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
};

CX.download = function (filename, blob) {
  const url = URL.createObjectURL(blob);
  const a = CX.el("a", {href: url, download: filename});
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
};

CX.jsonBlob = function (obj) {
  return new Blob([JSON.stringify(obj, null, 1)], {type: "application/json"});
};

CX.fmt = function (x, digits) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  return Number(x).toFixed(digits === undefined ? 2 : digits).replace("-", "\u2212");
};

/* file-name safe */
CX.slug = function (s) {
  return String(s).replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 80) || "view";
};
