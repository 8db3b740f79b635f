/* caption explore, text: per source, the seq2seq alignment matrix as a grid of cells (source
   characters along x, output characters along y, colour = weight on a fixed 0..1 viridis scale,
   as caption/viz/heatmap.py). Hover an output character (its label or a cell) to see its weights
   over the source; hover a source character to see the weight each output character gives it.
   Click pins (click again or Esc unpins); ↑ ↓ step through the output characters, ← → through
   the source characters. Local attention: every row's window [p_t − D, p_t + D] is outlined
   faintly and the shown row's window strongly, with its centre p_t marked.
   Layout that must hold without explorer.css (the grid, the colours) is set here; the rest is
   in text.css. */
(function () {
  "use strict";
  const el = CX.el;
  const CELL = 26;                           // px; the grid's overlays are placed by row and column
  const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const states = [];                         // per source: {cur, hover, pinned, built, ...}
  let data = null, active = 0;

  CX.renderText = function (app, d) {
    data = d;
    app.append(header());
    const list = el("div", {id: "sources"});
    app.append(list);
    (data.sources || []).forEach((rec, i) => {
      states[i] = {cur: {row: 0, col: null}, hover: null, pinned: false, built: false};
      list.append(el("section", {class: "source", id: "source-" + i, dataset: {index: i},
                                 onmouseenter: () => { active = i; }}));
    });
    const lazy = "IntersectionObserver" in window ? new IntersectionObserver((entries) => {
      for (const e of entries) if (e.isIntersecting) { build(+e.target.dataset.index); lazy.unobserve(e.target); }
    }, {rootMargin: "800px"}) : null;
    list.querySelectorAll("section.source").forEach((s) => lazy ? lazy.observe(s) : build(+s.dataset.index));
    document.addEventListener("keydown", onKey);
  };

  /* what source i shows now: the output row or source column in view, and whether it is pinned */
  CX.textState = function (i) {
    build(i);
    const s = states[i], v = shown(i);
    return {row: v.row, col: v.col, pinned: s.pinned};
  };
  /* the weight of output t on source s, dequantised (q * scale_t / 255) */
  CX.textWeight = (i, t, s) => { build(i); return weight(i, t, s); };
  CX.buildText = (i) => build(i);

  function header() {
    const m = data.model || {}, n = (data.sources || []).length;
    const bad = (data.sources || []).filter((r) => r.error).length;
    const att = m.model === "transformer" ? `Transformer (${m.layers} layer(s)), the last layer's mean head` :
      m.local ? `${m.local} local attention, window half-width D = ${m.window}` : "global attention";
    return el("header", {},
      el("h1", {}, data.title || "caption seq2seq explore"),
      el("p", {class: "summary"}, `${n} source${n === 1 ? "" : "s"}` + (bad ? ` (${bad} not read)` : "") +
         ` \u00b7 model ${m.name || "?"}: ${m.score || "?"} score, ${att}` +
         (m.reverse_source ? ", source read reversed (shown in reading order)" : "") +
         ` \u00b7 beam ${m.beam_size || 1} \u00b7 ${data.generator || ""}`),
      el("div", {class: "toolbar"}, legend(),
        el("button", {type: "button", id: "export-all", onclick: () => CX.download("alignments.json", CX.jsonBlob(data))},
          "Export all as JSON")),
      el("p", {class: "help"}, "Hover an output character (left) or a cell to shade the source by its weights; " +
         "hover a source character (top) for the weight each output character gives it. Click pins (click " +
         "again or Esc unpins); \u2191 \u2193 step through the output, \u2190 \u2192 through the source." +
         (m.local ? " Outlined: each output character's window [p\u209c \u2212 D, p\u209c + D]; the bar marks p\u209c." : "")));
  }

  function legend() {
    const stops = VIRIDIS.map((c, k) => `rgb(${c}) ${(100 * k / (VIRIDIS.length - 1)).toFixed(0)}%`).join(", ");
    const bar = el("span", {class: "colorbar"});
    Object.assign(bar.style, {display: "inline-block", width: "120px", height: "12px", verticalAlign: "middle",
                              background: `linear-gradient(to right, ${stops})`});
    return el("span", {class: "legend"}, "weight 0 ", bar, " 1");
  }

  function color(w) {
    const x = Math.max(0, Math.min(1, w)) * (VIRIDIS.length - 1);
    const lo = Math.min(Math.floor(x), VIRIDIS.length - 2), f = x - lo;
    return `rgb(${[0, 1, 2].map((c) => Math.round(VIRIDIS[lo][c] * (1 - f) + VIRIDIS[lo + 1][c] * f)).join(",")})`;
  }
  const ink = (w) => (w > 0.55 ? "#111" : "#fff");      // readable on viridis: dark on yellow-green
  const show = (ch) => (ch === " " ? "\u00b7" : ch);     // a visible space, as the heat map

  function weight(i, t, s) {
    const st = states[i], rec = data.sources[i];
    if (!st.q) st.q = CX.bytes(rec.weights);
    return st.q[t * st.S + s] * rec.scales[t] / 255;
  }

  function shown(i) {
    const s = states[i];
    return !s.pinned && s.hover ? s.hover : s.cur;
  }

  /* the columns inside row t's window, clipped to the source: [lo, hi], or null when none is */
  function windowOf(i, t) {
    const w = data.sources[i].window, S = states[i].S;
    if (!w) return null;
    const p = w.center[t], lo = Math.max(0, Math.ceil(p - w.half - 1e-9)), hi = Math.min(S - 1, Math.floor(p + w.half + 1e-9));
    return lo <= hi ? {lo, hi, p} : {lo: null, hi: null, p};
  }

  function build(i) {
    const s = states[i];
    if (!s || s.built) return;
    s.built = true;
    const rec = data.sources[i], sec = document.getElementById("source-" + i);
    sec.textContent = "";
    if (rec.error) {
      sec.classList.add("bad");
      sec.append(el("h2", {}, `source ${i + 1}`), el("p", {class: "error"}, "not read: " + rec.error));
      return;
    }
    s.src = Array.from(rec.source);
    s.out = Array.from(rec.output);
    s.S = s.src.length;
    s.T = s.out.length;
    s.status = el("span", {class: "status"});
    sec.append(el("h2", {}, el("span", {class: "src-text"}, rec.source), " \u2192 ",
                  el("span", {class: "out-text"}, rec.output || "(empty output)")),
      el("div", {class: "controls"}, s.status,
        el("button", {type: "button", class: "export-json", onclick: () => exportJson(i)}, "Export JSON")),
      grid(i));
    if (!s.T) s.cur = {row: null, col: null};
    redraw(i);
  }

  function place(node, row, col, span) {
    node.style.gridRow = String(row);
    node.style.gridColumn = span ? `${col} / span ${span}` : String(col);
    return node;
  }

  function grid(i) {
    const s = states[i], rec = data.sources[i];
    const g = el("div", {class: "matrix", dataset: {index: i}, role: "grid"});
    Object.assign(g.style, {display: "grid", position: "relative", width: "max-content",
                            gridTemplateColumns: `auto repeat(${s.S}, ${CELL}px)`,
                            gridTemplateRows: `${CELL}px repeat(${s.T}, ${CELL}px)`});
    g.append(place(el("div", {class: "corner"}), 1, 1));
    s.srcEls = s.src.map((ch, k) => g.appendChild(place(el("div", {class: "src-char", dataset: {s: k},
      title: `source character ${k + 1}` + (ch === " " ? " (space)" : "")}, show(ch)), 1, k + 2)));
    s.outEls = [];
    s.cells = [];
    for (let t = 0; t < s.T; t++) {
      const lp = rec.logprobs ? ` \u00b7 log p ${CX.fmt(rec.logprobs[t])}` : "";
      s.outEls.push(g.appendChild(place(el("div", {class: "out-char", dataset: {t: t},
        title: `output character ${t + 1}${lp}`}, show(s.out[t])), t + 2, 1)));
      const row = [];
      for (let k = 0; k < s.S; k++) {
        const w = weight(i, t, k);
        const c = place(el("div", {class: "cell", dataset: {t: t, s: k, w: w.toFixed(4)},
          title: `\u201c${s.out[t]}\u201d \u2190 \u201c${s.src[k]}\u201d: ${w.toFixed(3)}`}), t + 2, k + 2);
        c.style.background = color(w);
        row.push(g.appendChild(c));
      }
      s.cells.push(row);
    }
    s.windows = [];
    if (rec.window) for (let t = 0; t < s.T; t++) s.windows.push(windowBox(i, t, g));
    g.addEventListener("mouseover", (e) => {
      const target = at(e.target);
      if (!target) return;
      active = i;
      s.hover = target;
      redraw(i);
    });
    g.addEventListener("mouseleave", () => { s.hover = null; redraw(i); });
    g.addEventListener("click", (e) => { const target = at(e.target); if (target) pin(i, target); });
    return g;
  }

  /* the output row or source column an element of the grid stands for */
  function at(node) {
    const n = node && node.closest ? node.closest(".cell, .out-char, .src-char") : null;
    if (!n) return null;
    if (n.classList.contains("src-char")) return {row: null, col: +n.dataset.s};
    return {row: +n.dataset.t, col: null};
  }

  function windowBox(i, t, g) {
    const w = windowOf(i, t);
    if (w.lo === null) return null;                          // the window lies outside the source
    const box = place(el("div", {class: "window", dataset: {t: t, lo: w.lo, hi: w.hi, center: w.p}}), t + 2, w.lo + 2, w.hi - w.lo + 1);
    Object.assign(box.style, {pointerEvents: "none", boxSizing: "border-box", zIndex: 1});
    const pct = 100 * (w.p - w.lo + 0.5) / (w.hi - w.lo + 1);
    if (pct >= 0 && pct <= 100) {
      const mark = el("div", {class: "center"});
      Object.assign(mark.style, {position: "absolute", left: `calc(${pct.toFixed(2)}% - 1px)`, top: "0", bottom: "0"});
      box.style.position = "relative";
      box.append(mark);
    }
    g.append(box);
    return box;
  }

  function pin(i, target) {
    const s = states[i];
    active = i;
    if (s.pinned && s.cur.row === target.row && s.cur.col === target.col) s.pinned = false;
    else { s.cur = target; s.pinned = true; }
    redraw(i);
  }

  /* step the output row (axis "row") or source column by d; a pin moves with it */
  function step(i, axis, d) {
    const s = states[i], n = axis === "row" ? s.T : s.S;
    if (!n) return;
    const from = shown(i)[axis];
    const k = from === null ? (d > 0 ? 0 : n - 1) : Math.max(0, Math.min(n - 1, from + d));
    s.cur = axis === "row" ? {row: k, col: null} : {row: null, col: k};
    s.hover = null;
    redraw(i);
  }

  function onKey(e) {
    if (e.target && /^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName)) return;
    const i = active, s = states[i];
    if (!s || !s.built || data.sources[i].error) return;
    const move = {ArrowDown: ["row", 1], ArrowUp: ["row", -1], ArrowRight: ["col", 1], ArrowLeft: ["col", -1]}[e.key];
    if (move) { step(i, move[0], move[1]); e.preventDefault(); }
    else if (e.key === "Escape") { s.pinned = false; redraw(i); }
  }

  function shade(node, w) {
    if (w === null) {
      node.style.background = node.style.color = "";
      delete node.dataset.w;
      return;
    }
    node.style.background = color(w);
    node.style.color = ink(w);
    node.dataset.w = w.toFixed(4);
  }

  function redraw(i) {
    const s = states[i];
    if (!s.built || data.sources[i].error) return;
    const {row, col} = shown(i), rec = data.sources[i];
    s.outEls.forEach((n, t) => {
      n.classList.toggle("current", t === row);
      n.classList.toggle("pinned", s.pinned && t === row);
      shade(n, col !== null ? weight(i, t, col) : null);
    });
    const win = row !== null ? windowOf(i, row) : null;
    s.srcEls.forEach((n, k) => {
      n.classList.toggle("current", k === col);
      n.classList.toggle("pinned", s.pinned && k === col);
      n.classList.toggle("in-window", !!(win && win.lo !== null && k >= win.lo && k <= win.hi));
      shade(n, row !== null ? weight(i, row, k) : null);
    });
    s.cells.forEach((cells, t) => cells.forEach((c, k) => c.classList.toggle("hl", t === row || k === col)));
    s.windows.forEach((box, t) => { if (box) box.classList.toggle("current", t === row); });
    const sec = document.getElementById("source-" + i);
    sec.dataset.row = row === null ? "" : row;
    sec.dataset.col = col === null ? "" : col;
    sec.dataset.pinned = s.pinned ? "1" : "0";
    s.status.textContent = status(i, row, col, rec, win) + (s.pinned ? " \u00b7 pinned" : "");
  }

  function status(i, row, col, rec, win) {
    const s = states[i];
    if (row !== null) {
      let best = 0;
      for (let k = 1; k < s.S; k++) if (weight(i, row, k) > weight(i, row, best)) best = k;
      const lp = rec.logprobs ? ` \u00b7 log p ${CX.fmt(rec.logprobs[row])}` : "";
      const w = win ? ` \u00b7 window centre p\u209c ${CX.fmt(win.p)} \u00b1 ${rec.window.half}` +
        (win.lo === null ? " (outside the source)" : "") : "";
      return `output \u201c${s.out[row]}\u201d (${row + 1} of ${s.T})${lp} \u00b7 peak ` +
             `${CX.fmt(weight(i, row, best), 3)} on \u201c${s.src[best]}\u201d (${best + 1})${w}`;
    }
    if (col !== null) {
      let total = 0;
      for (let t = 0; t < s.T; t++) total += weight(i, t, col);
      return `source \u201c${s.src[col]}\u201d (${col + 1} of ${s.S}) \u00b7 \u03a3\u209c weight ${CX.fmt(total, 3)}`;
    }
    return s.T ? "" : "the model wrote nothing for this source";
  }

  function exportJson(i) {
    const one = {...data, sources: [data.sources[i]]};
    CX.download(CX.slug(data.sources[i].source) + ".alignment.json", CX.jsonBlob(one));
  }
})();
