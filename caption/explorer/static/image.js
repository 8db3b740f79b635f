/* caption explore, images: per image, every run's caption as words and the map of the current
   word over the picture, the runs side by side and aligned by word position.
   A map is drawn as the figures draw it (caption/viz/overlay.py): scaled to its maximum, upsampled
   (smoothed: bilinear and blurred by half a cell; sharp: one block per cell), and
   out = 0.35 picture + 0.65 white * map. */
(function () {
  "use strict";
  const el = CX.el;
  const view = {smooth: true, boxes: true, size: 320, active: 0};
  const states = [];        // per image: {t, pinned, hover, beams, timer, built, ...}
  let data = null;
  const decoded = new WeakMap();   // beam -> its maps as bytes, kept outside the data (exports stay clean)
  const decodedHeads = new WeakMap();   // beam -> a Transformer's every head's maps as bytes

  CX.renderImages = function (app, d) {
    data = d;
    app.append(header());
    const list = el("div", {id: "images"});
    app.append(list);
    data.images.forEach((img, i) => list.append(section(i)));
    const lazy = "IntersectionObserver" in window ? new IntersectionObserver((entries) => {
      for (const e of entries) if (e.isIntersecting) { build(+e.target.dataset.index); lazy.unobserve(e.target); }
    }, {rootMargin: "800px"}) : null;
    list.querySelectorAll("section.image").forEach((s) => lazy ? lazy.observe(s) : build(+s.dataset.index));
    document.addEventListener("keydown", onKey);
  };

  function section(i) {
    states[i] = {t: 0, pinned: false, hover: null, beams: data.runs.map(() => 0), heads: data.runs.map(() => -1),
                 timer: null, built: false};
    return el("section", {class: "image", id: "image-" + i, dataset: {index: i},
                          onmouseenter: () => { view.active = i; }});
  }

  /* live mode (caption serve): a record for one more image, of the same runs, shown first */
  CX.addImage = function (record) {
    const i = data.images.length;
    data.images.push(record);
    const node = section(i);
    document.getElementById("images").prepend(node);
    build(i);
    return i;
  };

  /* the API tests and other scripts read: what image i shows now */
  CX.imageState = function (i) {
    build(i);
    const s = states[i];
    return {t: s.t, pinned: s.pinned, shown: shownT(i), beams: s.beams.slice(), playing: s.timer !== null,
            runs: data.runs.map((run, r) => { const b = beamOf(i, r); return {words: b.words, beam: s.beams[r], head: s.heads[r]}; })};
  };
  /* the map run r of image i shows now, dequantised (alpha = q * max / 255); null for none */
  CX.shownMap = function (i, r) {
    const b = beamOf(i, r), t = shownT(i);
    if (data.runs[r].attention === "none" || t >= b.words.length) return null;
    const scale = scaleOf(i, r, t);
    return Array.from(mapBytes(i, r, t), (q) => q * scale / 255);
  };
  /* show head k of run r (layer k / heads + 1, head k % heads + 1); -1: the last layer's mean head */
  CX.setHead = (i, r, k) => setHead(i, r, k);
  CX.build = (i) => build(i);

  function header() {
    const runs = data.runs.map((r) => el("li", {}, el("b", {}, r.label), " \u2014 ", describe(r)));
    const hasObjects = data.images.some((im) => im.objects && im.objects.length);
    return el("header", {},
      el("h1", {}, data.title || "caption explore"),
      el("p", {class: "summary"}, `${data.images.length} image${data.images.length === 1 ? "" : "s"}, ` +
         `${data.runs.length} model run${data.runs.length === 1 ? "" : "s"} \u00b7 ${data.generator || ""}`),
      el("ul", {class: "runs-legend"}, runs),
      el("div", {class: "toolbar"},
        el("label", {}, el("input", {type: "checkbox", id: "smooth", checked: view.smooth,
          onchange: (e) => { view.smooth = e.target.checked; redrawAll(); }}), " smoothed maps"),
        hasObjects ? el("label", {}, el("input", {type: "checkbox", id: "boxes", checked: view.boxes,
          onchange: (e) => { view.boxes = e.target.checked; redrawAll(); }}), " box of the named object") : null,
        el("label", {}, " map size ", el("select", {id: "size", onchange: (e) => { view.size = +e.target.value; rebuildAll(); }},
          [224, 320, 448].map((s) => el("option", {value: s, selected: s === view.size}, s + " px")))),
        el("button", {type: "button", id: "export-all", onclick: () => CX.download("attention-report.json", CX.jsonBlob(data))},
          "Export all as JSON")),
      el("p", {class: "help"}, "Hover a word to see its map; click it to pin (click again to unpin). " +
         "\u2190 \u2192 step through the words of the image under the pointer, Esc unpins. " +
         "Entropy is in nats against the uniform map's log L; coverage is \u03a3\u209c \u03b1\u209c over the caption."));
  }

  function describe(run) {
    if (run.attention === "none") return "no attention (the ablation: the mean annotation); no map to show";
    if (run.attention === "hard") return `hard attention, ${run.mode} context at test time` +
      (run.mode === "expected" ? " (dashed: the argmax cell of \u03b1)" : " (red: the cell used)");
    if (run.decoder === "transformer") return `Transformer, multi-head attention (${run.layers} layers \u00d7 ` +
      `${run.heads} heads): the map is the last layer's mean head, or the head the selector picks`;
    return "soft attention";
  }

  function beamOf(i, r) {
    const run = data.images[i].runs[r];
    return run.beams[Math.min(states[i].beams[r], run.beams.length - 1)];
  }
  function maxWords(i) {
    return Math.max(1, ...data.runs.map((_, r) => beamOf(i, r).words.length));
  }
  function shownT(i) {
    const s = states[i];
    return s.pinned || s.hover === null ? s.t : s.hover;
  }
  /* the slot of map t among the beam's maps: the word's, or with a head picked (k >= 0) its head's */
  function slot(i, r, t) {
    const k = states[i].heads[r], b = beamOf(i, r);
    return k >= 0 && b.heads ? k * b.words.length + t : t;
  }
  function mapBytes(i, r, t) {
    const b = beamOf(i, r), head = states[i].heads[r] >= 0 && b.heads;
    const cache = head ? decodedHeads : decoded;
    if (!cache.has(b)) cache.set(b, CX.bytes(head ? b.heads.maps : b.maps));
    const [gh, gw] = data.runs[r].grid, L = gh * gw, n = slot(i, r, t);
    return cache.get(b).subarray(n * L, (n + 1) * L);
  }
  function scaleOf(i, r, t) {
    const b = beamOf(i, r);
    return states[i].heads[r] >= 0 && b.heads ? b.heads.scales[slot(i, r, t)] : b.scales[t];
  }
  function setHead(i, r, k) {
    states[i].heads[r] = k;
    drawCoverage(i, r);
    redraw(i);
  }

  function build(i) {
    const s = states[i];
    if (s.built) return;
    s.built = true;
    const rec = data.images[i], sec = document.getElementById("image-" + i);
    sec.textContent = "";
    s.slider = el("input", {type: "range", class: "slider", min: 0, max: maxWords(i) - 1, value: s.t,
                            "aria-label": "word", oninput: (e) => setT(i, +e.target.value)});
    s.play = el("button", {type: "button", class: "play", onclick: () => togglePlay(i)}, "\u25b6 play");
    s.status = el("span", {class: "status"});
    sec.append(el("h2", {}, rec.name),
      el("div", {class: "controls"},
        el("button", {type: "button", class: "prev", onclick: () => setT(i, s.t - 1)}, "\u2190"),
        s.slider,
        el("button", {type: "button", class: "next", onclick: () => setT(i, s.t + 1)}, "\u2192"),
        s.play, s.status,
        el("button", {type: "button", class: "export-png", onclick: () => exportPng(i)}, "Save PNG"),
        el("button", {type: "button", class: "export-json", onclick: () => exportJson(i)}, "Export JSON")));
    s.cols = data.runs.map((run, r) => column(i, r));
    sec.append(el("div", {class: "columns"}, s.cols.map((c) => c.node)));
    s.picture = null;
    const img = new Image();
    img.onload = () => { s.picture = img; redraw(i); };
    if (rec.image) img.src = rec.image;
    redraw(i);
  }

  function column(i, r) {
    const run = data.runs[r], rr = data.images[i].runs[r], col = {};
    col.canvas = el("canvas", {class: "map", width: view.size, height: view.size, dataset: {run: r}});
    col.words = el("div", {class: "words"});
    col.figures = el("div", {class: "figures"});
    col.cover = el("canvas", {class: "coverage", width: 112, height: 112});
    const badge = rr.collapsed ? el("span", {class: "badge", title:
      "variation = mean over words of the total variation distance between a word's map and the " +
      "caption's mean map; under 0.05 the maps barely change from word to word"},
      `\u26a0 maps barely change (variation ${CX.fmt(rr.variation, 3)})`) : null;
    const beams = rr.beams.length > 1 ? el("select", {class: "beam", onchange: (e) => setBeam(i, r, +e.target.value)},
      rr.beams.map((b, j) => el("option", {value: j}, `beam ${j + 1}: ${CX.fmt(b.score)}  ${b.words.join(" ")}`))) : null;
    const heads = run.decoder === "transformer" ? el("select", {class: "head", "aria-label": "layer and head",
      onchange: (e) => setHead(i, r, +e.target.value)},
      [el("option", {value: -1}, `mean of layer ${run.layers}'s ${run.heads} heads (\u03b1)`),
       ...Array.from({length: run.layers * run.heads}, (_, k) =>
         el("option", {value: k}, `layer ${Math.floor(k / run.heads) + 1}, head ${k % run.heads + 1}`))]) : null;
    col.node = el("div", {class: "run", dataset: {run: r}, style: `width:${view.size + 18}px`},
      el("div", {class: "run-head"}, el("b", {}, run.label), " ",
         el("span", {class: "tag"}, run.decoder === "transformer" ? "multi-head" : run.attention), badge),
      beams, heads, col.canvas, col.words, col.figures,
      run.attention === "none" ? null : el("div", {class: "cover-box"}, col.cover,
        el("span", {class: "cover-label"}, "coverage \u03a3\u209c \u03b1\u209c")));
    return col;
  }

  function fillWords(i, r) {
    const col = states[i].cols[r], b = beamOf(i, r);
    col.words.textContent = "";
    b.words.forEach((w, t) => col.words.append(el("span", {class: "word", dataset: {t: t}, tabindex: 0,
      onmouseenter: () => { states[i].hover = t; redraw(i); },
      onmouseleave: () => { states[i].hover = null; redraw(i); },
      onclick: () => pin(i, t)}, w), " "));      // a space between words: a long caption wraps
    drawCoverage(i, r);
  }

  function pin(i, t) {
    const s = states[i];
    view.active = i;
    if (s.pinned && s.t === t) s.pinned = false;
    else { s.pinned = true; s.t = t; }
    redraw(i);
  }

  /* step to word t (a pin moves with it) */
  function setT(i, t) {
    const s = states[i];
    s.t = Math.max(0, Math.min(maxWords(i) - 1, t));
    s.hover = null;
    view.active = i;
    redraw(i);
  }

  function setBeam(i, r, j) {
    states[i].beams[r] = j;
    states[i].slider.max = maxWords(i) - 1;
    fillWords(i, r);
    setT(i, states[i].t);
  }

  function togglePlay(i) {
    const s = states[i];
    if (s.timer !== null) { clearInterval(s.timer); s.timer = null; s.play.textContent = "\u25b6 play"; return; }
    s.pinned = false;
    if (s.t >= maxWords(i) - 1) s.t = -1;
    s.play.textContent = "\u275a\u275a pause";
    const tick = () => {
      if (s.t >= maxWords(i) - 1) { togglePlay(i); return; }
      setT(i, s.t + 1);
    };
    tick();
    s.timer = setInterval(tick, 700);
  }

  function onKey(e) {
    if (e.target && /^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName) && e.target.type !== "range") return;
    const i = view.active, s = states[i];
    if (!s || !s.built) return;
    const step = {ArrowRight: 1, ArrowLeft: -1}[e.key];
    if (step) { setT(i, s.t + step); e.preventDefault(); }
    else if (e.key === "Home") { setT(i, 0); e.preventDefault(); }
    else if (e.key === "End") { setT(i, maxWords(i) - 1); e.preventDefault(); }
    else if (e.key === "Escape") { s.pinned = false; redraw(i); }
  }

  function redraw(i) {
    const s = states[i];
    if (!s.built) return;
    const t = shownT(i);
    s.slider.value = s.t;
    s.status.textContent = `word ${t + 1} of ${maxWords(i)}` + (s.pinned ? " \u00b7 pinned" : "");
    data.runs.forEach((run, r) => {
      const col = s.cols[r];
      if (!col.words.childElementCount && beamOf(i, r).words.length) fillWords(i, r);
      col.words.querySelectorAll(".word").forEach((w) => {
        w.classList.toggle("current", +w.dataset.t === t);
        w.classList.toggle("pinned", s.pinned && +w.dataset.t === t);
      });
      drawMap(i, r, t);
      col.figures.textContent = figures(i, r, t);
    });
  }

  function figures(i, r, t) {
    const run = data.runs[r], b = beamOf(i, r);
    if (t >= b.words.length) return "(caption ended)";
    const L = run.grid[0] * run.grid[1];
    const logp = b.logprobs ? ` \u00b7 log p ${CX.fmt(b.logprobs[t])}` : "";
    if (run.attention === "none") return `\u201c${b.words[t]}\u201d${logp} \u00b7 no attention, no map`;
    let peak = b.peak[t], entropy = b.entropy[t];
    if (states[i].heads[r] >= 0 && b.heads) {     // one head: its figures from its stored map
      const scale = scaleOf(i, r, t), a = Array.from(mapBytes(i, r, t), (q) => q * scale / 255);
      peak = scale;
      entropy = -a.reduce((sum, x) => sum + (x > 0 ? x * Math.log(x) : 0), 0);
    }
    return `\u201c${b.words[t]}\u201d \u00b7 peak \u03b1 ${CX.fmt(peak)} \u00b7 entropy ` +
           `${CX.fmt(entropy)} of ${CX.fmt(Math.log(L))} nats${logp}`;
  }

  /* the picture at the canvas size, as RGBA bytes (grey without one) */
  function base(i, size) {
    const s = states[i];
    if (s.base && s.base.width === size && s.base.ready === !!s.picture) return s.base;
    const c = el("canvas", {width: size, height: size}), ctx = c.getContext("2d");
    ctx.fillStyle = "#888";
    ctx.fillRect(0, 0, size, size);
    if (s.picture) ctx.drawImage(s.picture, 0, 0, size, size);
    s.base = ctx.getImageData(0, 0, size, size);
    s.base.ready = !!s.picture;
    return s.base;
  }

  /* the map t of run r, upsampled to size x size: one grey value per pixel, 0..255 of its max */
  function upsampled(i, r, t, size) {
    const [gh, gw] = data.runs[r].grid, q = mapBytes(i, r, t);
    const small = el("canvas", {width: gw, height: gh}), sctx = small.getContext("2d");
    const img = sctx.createImageData(gw, gh);
    for (let k = 0; k < gh * gw; k++) {
      img.data[4 * k] = img.data[4 * k + 1] = img.data[4 * k + 2] = q[k];
      img.data[4 * k + 3] = 255;
    }
    sctx.putImageData(img, 0, 0);
    const big = el("canvas", {width: size, height: size}), ctx = big.getContext("2d");
    ctx.imageSmoothingEnabled = view.smooth;
    if (view.smooth) ctx.filter = `blur(${(size / Math.max(gh, gw) / 2).toFixed(1)}px)`;
    ctx.drawImage(small, 0, 0, size, size);
    return ctx.getImageData(0, 0, size, size).data;
  }

  function drawMap(i, r, t) {
    const col = states[i].cols[r], run = data.runs[r], b = beamOf(i, r), size = view.size;
    const ctx = col.canvas.getContext("2d"), px = base(i, size);
    const out = ctx.createImageData(size, size);
    const ended = t >= b.words.length, none = run.attention === "none";
    if (ended || none) {
      for (let k = 0; k < out.data.length; k++) out.data[k] = (k & 3) === 3 ? 255 : (ended ? 0.4 * px.data[k] + 150 : px.data[k]);
    } else {
      const m = upsampled(i, r, t, size);
      for (let k = 0; k < out.data.length; k += 4) {
        const lit = 0.65 * m[k];
        out.data[k] = 0.35 * px.data[k] + lit;
        out.data[k + 1] = 0.35 * px.data[k + 1] + lit;
        out.data[k + 2] = 0.35 * px.data[k + 2] + lit;
        out.data[k + 3] = 255;
      }
    }
    ctx.putImageData(out, 0, 0);
    col.canvas.dataset.t = ended ? "" : t;
    col.canvas.dataset.beam = states[i].beams[r];
    if (none) caption(ctx, size, "no attention: no map");
    else if (ended) caption(ctx, size, "caption ended");
    else { outline(ctx, i, r, t, size); boxes(ctx, i, r, t, size); }
  }

  function caption(ctx, size, text) {
    ctx.fillStyle = "rgba(0,0,0,0.6)";
    ctx.fillRect(0, size - 26, size, 26);
    ctx.fillStyle = "#fff";
    ctx.font = "14px sans-serif";
    ctx.fillText(text, 8, size - 8);
  }

  function outline(ctx, i, r, t, size) {
    const run = data.runs[r], b = beamOf(i, r), [gh, gw] = run.grid;
    if (run.attention !== "hard") return;
    let cell, dashed = false;
    if (b.locations) cell = b.locations[t];
    else {                                   // expected context: mark the argmax of alpha
      const q = mapBytes(i, r, t);
      let best = 0;
      for (let k = 1; k < q.length; k++) if (q[k] > q[best]) best = k;
      cell = [Math.floor(best / gw), best % gw];
      dashed = true;
    }
    const cw = size / gw, ch = size / gh;
    ctx.save();
    ctx.strokeStyle = "rgb(255,40,40)";
    ctx.lineWidth = 2;
    if (dashed) ctx.setLineDash([5, 4]);
    ctx.strokeRect(cell[1] * cw + 1, cell[0] * ch + 1, cw - 2, ch - 2);
    ctx.restore();
  }

  function boxes(ctx, i, r, t, size) {
    const objects = data.images[i].objects, b = beamOf(i, r);
    if (!view.boxes || !objects || !b.objects || !b.objects[t]) return;
    ctx.save();
    ctx.strokeStyle = "rgb(40,220,90)";
    ctx.lineWidth = 2;
    for (const k of b.objects[t]) {
      const [x, y, w, h] = objects[k].bbox;
      ctx.strokeRect(x * size, y * size, w * size, h * size);
    }
    ctx.restore();
  }

  function drawCoverage(i, r) {
    const run = data.runs[r], b = beamOf(i, r), col = states[i].cols[r];
    if (run.attention === "none" || !b.words.length) return;
    const [gh, gw] = run.grid, L = gh * gw, sum = new Float64Array(L);
    for (let t = 0; t < b.words.length; t++) {
      const q = mapBytes(i, r, t), scale = scaleOf(i, r, t);
      for (let k = 0; k < L; k++) sum[k] += q[k] * scale / 255;
    }
    const top = Math.max(...sum, 1e-12), ctx = col.cover.getContext("2d");
    const img = ctx.createImageData(gw, gh);
    for (let k = 0; k < L; k++) {
      const v = Math.round(255 * sum[k] / top);
      img.data[4 * k] = v; img.data[4 * k + 1] = v; img.data[4 * k + 2] = v; img.data[4 * k + 3] = 255;
    }
    const small = el("canvas", {width: gw, height: gh});
    small.getContext("2d").putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(small, 0, 0, col.cover.width, col.cover.height);
    col.cover.title = `coverage: max ${CX.fmt(top)}, sum ${CX.fmt(sum.reduce((a, x) => a + x, 0))} ` +
                      `(= the number of words, each map sums to 1)`;
    col.cover.dataset.max = top.toFixed(4);
  }

  function redrawAll() { states.forEach((s, i) => { if (s.built) { s.cols.forEach((_, r) => drawCoverage(i, r)); redraw(i); } }); }
  function rebuildAll() {
    states.forEach((s, i) => {
      if (!s.built) return;
      s.cols.forEach((c) => { c.canvas.width = c.canvas.height = view.size; c.node.style.width = `${view.size + 18}px`; });
      redraw(i);
    });
  }

  function exportJson(i) {
    const one = {...data, images: [data.images[i]]};
    CX.download(CX.slug(data.images[i].name) + ".attention.json", CX.jsonBlob(one));
  }

  /* the current view as one picture: every run's map with its label and the shown word */
  function exportPng(i) {
    const s = states[i], size = view.size, pad = 8, head = 40, t = shownT(i);
    const c = el("canvas", {width: data.runs.length * (size + pad) + pad, height: size + head + pad});
    const ctx = c.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, c.width, c.height);
    ctx.fillStyle = "#000";
    ctx.font = "13px sans-serif";
    data.runs.forEach((run, r) => {
      const x = pad + r * (size + pad), b = beamOf(i, r);
      ctx.fillText(run.label, x, 16);
      ctx.fillText(t < b.words.length ? `\u201c${b.words[t]}\u201d (word ${t + 1})` : "(caption ended)", x, 32);
      ctx.drawImage(s.cols[r].canvas, x, head);
    });
    // toDataURL, not toBlob: synchronous (headless Chromium can take seconds to call toBlob back)
    const png = new Blob([CX.bytes(c.toDataURL("image/png").split(",")[1])], {type: "image/png"});
    CX.download(`${CX.slug(data.images[i].name)}-word-${t + 1}.png`, png);
  }
})();
