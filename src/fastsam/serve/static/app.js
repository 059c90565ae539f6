// fastsam web UI: upload an image, show its everything-mode masks, select masks by prompts.
// Plain browser JavaScript, no dependencies. All coordinates sent to the server are original-image
// pixels (x = column, y = row); the canvases hold the image at its original size and CSS scales them.
// The page's state is mirrored on #stage's data- attributes (read by tests and scripts).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const stage = $("stage"), status = $("status"), holder = $("canvases");
  const layers = { image: $("image"), everything: $("everything"), selection: $("selection"), prompts: $("prompts") };
  const DRAG_MIN = 4; // screen pixels a press must move to count as a box instead of a click
  const SELECTION_RGBA = [255, 170, 0, 170];

  const state = {
    id: null, name: "image", width: 0, height: 0, records: [],
    prompts: [],        // {type: "point", x, y, label} | {type: "box", box: [x1, y1, x2, y2]} | {type: "text", text}
    result: null,       // last prompt answer of the server (indices, mask, records)
    seq: 0,             // prompt requests sent; answers of older requests are dropped
    textPrompts: false,
    drag: null,
  };

  // ---- COCO RLE (the server's records): column-major runs, background first ---------------------------
  // Compressed counts: 5-bit groups, low first, 0x20 = more groups follow, offset 48; from the third
  // count on, each is stored as the difference to the count two places before. Counts are below
  // 2^29 for any image this server accepts, so 32-bit integer arithmetic is exact here.
  function rleCounts(s) {
    const counts = [];
    let p = 0;
    while (p < s.length) {
      let x = 0, k = 0, more = true;
      while (more) {
        const c = s.charCodeAt(p) - 48;
        x |= (c & 0x1f) << (5 * k);
        more = (c & 0x20) !== 0;
        p++; k++;
        if (!more && (c & 0x10)) x |= -1 << (5 * k);
      }
      if (counts.length > 2) x += counts[counts.length - 2];
      counts.push(x);
    }
    return counts;
  }

  // Paint the foreground runs of an RLE mask (H x W, column-major) into RGBA pixels (row-major).
  function paintRle(pixels, rle, rgba) {
    const [h, w] = rle.size;
    const counts = typeof rle.counts === "string" ? rleCounts(rle.counts) : rle.counts;
    let pos = 0;
    for (let i = 0; i < counts.length; i++) {
      let n = counts[i];
      if (i % 2 === 1) {
        let p = pos;
        while (n > 0) {
          const x = Math.floor(p / h), y = p - x * h, run = Math.min(n, h - y);
          for (let r = y, o = (y * w + x) * 4; r < y + run; r++, o += w * 4) {
            pixels[o] = rgba[0]; pixels[o + 1] = rgba[1]; pixels[o + 2] = rgba[2]; pixels[o + 3] = rgba[3];
          }
          p += run; n -= run;
        }
      }
      pos += counts[i];
    }
  }

  function maskColor(k) { // well separated hues: golden-ratio steps around the colour wheel
    const hue = (k * 0.618034) % 1, s = 0.75, v = 0.95, i = Math.floor(hue * 6), f = hue * 6 - i;
    const [p, q, t] = [v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)];
    const rgb = [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i % 6];
    return rgb.map((c) => Math.round(c * 255));
  }

  // ---- state shown in the DOM -------------------------------------------------------------------------
  function setData(values) { for (const [k, v] of Object.entries(values)) stage.dataset[k] = String(v); }

  function say(text, error = false) {
    status.textContent = text;
    status.classList.toggle("error", error);
    setData({ error: error ? text : "" });
  }

  function refreshButtons() {
    const ready = state.id !== null;
    $("undo").disabled = $("clear").disabled = !(ready && state.prompts.length);
    $("download-png").disabled = $("download-json").disabled = !ready;
    $("text").disabled = $("text-go").disabled = !(ready && state.textPrompts);
    $("text").placeholder = state.textPrompts ? "text prompt, e.g. a red star" : "text prompts: no CLIP weights";
  }

  async function errorText(response) {
    try { return (await response.json()).error || response.statusText; } catch { return response.statusText; }
  }

  // ---- upload ---------------------------------------------------------------------------------------
  async function openFile(file) {
    if (!file) return;
    state.id = null; state.prompts = []; state.result = null; state.seq++;
    state.name = (file.name || "image").replace(/\.[^.]*$/, "") || "image";
    setData({ state: "uploading", imageId: "", maskCount: 0, promptCount: 0, prompts: "{}", selectedCount: 0,
              selectedIndices: "", maskArea: 0, pending: 1 });
    refreshButtons();
    say(`Segmenting ${file.name || "image"}…`);
    let answer;
    try {
      const response = await fetch("/api/images", {
        method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" },
      });
      if (!response.ok) throw new Error(await errorText(response));
      answer = await response.json();
    } catch (e) {
      setData({ state: "error", pending: 0 });
      say(`Upload failed: ${e.message}`, true);
      return;
    }
    let bitmap = null;
    try { bitmap = await createImageBitmap(file); } catch { /* the server could decode it; show masks only */ }
    state.id = answer.id; state.width = answer.width; state.height = answer.height; state.records = answer.records;
    for (const c of Object.values(layers)) { c.width = answer.width; c.height = answer.height; }
    holder.style.width = `${answer.width}px`;
    holder.hidden = false;
    $("drop").hidden = true;
    const ctx = layers.image.getContext("2d");
    ctx.fillStyle = "#888"; ctx.fillRect(0, 0, answer.width, answer.height);
    if (bitmap) ctx.drawImage(bitmap, 0, 0, answer.width, answer.height);
    drawEverything();
    drawSelection(); drawPrompts();
    setData({ state: "ready", imageId: answer.id, maskCount: answer.count, pending: 0 });
    refreshButtons();
    say(`${answer.width}x${answer.height}, ${answer.count} masks (${answer.cached ? "cached" :
         `${Math.round(answer.everything_ms)} ms`}). Click, right click or drag on the image.`);
  }

  function drawEverything() {
    const ctx = layers.everything.getContext("2d");
    const img = ctx.createImageData(state.width, state.height);
    // largest first, so that small masks stay visible on top of the ones containing them
    const order = state.records.map((r, k) => k).sort((a, b) => state.records[b].area - state.records[a].area);
    for (const k of order) paintRle(img.data, state.records[k].segmentation, [...maskColor(k), 110]);
    ctx.putImageData(img, 0, 0);
  }

  // ---- prompts ----------------------------------------------------------------------------------------
  function promptBody() {
    const body = {};
    const points = state.prompts.filter((p) => p.type === "point");
    const boxes = state.prompts.filter((p) => p.type === "box");
    const texts = state.prompts.filter((p) => p.type === "text");
    if (points.length) { body.points = points.map((p) => [p.x, p.y]); body.labels = points.map((p) => p.label); }
    if (boxes.length) body.boxes = boxes.map((p) => p.box);
    if (texts.length) body.texts = texts.map((p) => p.text);
    return body;
  }

  async function update() {
    const seq = ++state.seq;
    setData({ promptCount: state.prompts.length, prompts: JSON.stringify(promptBody()) });
    refreshButtons();
    drawPrompts();
    if (!state.prompts.length) {
      state.result = null;
      drawSelection();
      setData({ selectedCount: 0, selectedIndices: "", maskArea: 0, pending: 0 });
      say(`${state.records.length} masks. Click, right click or drag on the image.`);
      return;
    }
    setData({ pending: 1 });
    try {
      const response = await fetch(`/api/images/${state.id}/prompt`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(promptBody()),
      });
      if (seq !== state.seq) return; // a newer prompt is on its way
      if (!response.ok) {
        const text = await errorText(response);
        state.prompts.pop(); // the prompt just added was refused: take it back
        setData({ promptCount: state.prompts.length, prompts: JSON.stringify(promptBody()), pending: 0 });
        refreshButtons(); drawPrompts();
        say(`Prompt refused: ${text}`, true);
        return;
      }
      const result = await response.json();
      if (seq !== state.seq) return;
      state.result = result;
      drawSelection();
      setData({ selectedCount: result.indices.length, selectedIndices: result.indices.join(","),
                maskArea: result.mask_area, pending: 0 });
      say(`${result.indices.length} mask(s) selected, ${result.mask_area} pixels ` +
          `(${result.elapsed_ms.toFixed(1)} ms).`);
    } catch (e) {
      if (seq === state.seq) { setData({ pending: 0 }); say(`Prompt failed: ${e.message}`, true); }
    }
  }

  function add(prompt) { if (state.id === null) return; state.prompts.push(prompt); update(); }

  function drawSelection() {
    const ctx = layers.selection.getContext("2d");
    ctx.clearRect(0, 0, state.width, state.height);
    holder.classList.toggle("has-selection", !!state.result); // the other masks fade behind a selection
    if (!state.result) return;
    const img = ctx.createImageData(state.width, state.height);
    paintRle(img.data, state.result.mask, SELECTION_RGBA);
    outline(img.data, state.width, state.height);
    ctx.putImageData(img, 0, 0);
  }

  // Mask pixels next to a non-mask pixel become opaque white, so that a selection stays visible on an
  // object of the selection colour. Only mask pixels are touched: the layer's alpha is still the mask.
  function outline(px, w, h) {
    const inside = (x, y) => x >= 0 && y >= 0 && x < w && y < h && px[(y * w + x) * 4 + 3] > 0;
    const edge = [];
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        if (inside(x, y) && !(inside(x - 1, y) && inside(x + 1, y) && inside(x, y - 1) && inside(x, y + 1))) {
          edge.push((y * w + x) * 4);
        }
      }
    }
    for (const o of edge) { px[o] = 255; px[o + 1] = 255; px[o + 2] = 255; px[o + 3] = 255; }
  }

  function drawPrompts(rubber = null) {
    const ctx = layers.prompts.getContext("2d");
    ctx.clearRect(0, 0, state.width, state.height);
    const unit = Math.max(state.width, state.height) / 400; // marks about the same size on screen
    ctx.lineWidth = Math.max(1.5, unit);
    for (const p of state.prompts) {
      if (p.type === "point") {
        ctx.beginPath(); ctx.arc(p.x, p.y, Math.max(4, 3 * unit), 0, 2 * Math.PI);
        ctx.fillStyle = p.label ? "#2ecc40" : "#ff4136"; ctx.fill();
        ctx.strokeStyle = "#fff"; ctx.stroke();
      } else if (p.type === "box") {
        const [x1, y1, x2, y2] = p.box;
        ctx.strokeStyle = "#ffdc00"; ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      }
    }
    if (rubber) { ctx.setLineDash([6, 4]); ctx.strokeStyle = "#fff"; ctx.strokeRect(...rubber); ctx.setLineDash([]); }
  }

  // Original-image pixel under a pointer event (the canvases are scaled by CSS).
  function imagePoint(e) {
    const r = layers.prompts.getBoundingClientRect();
    const x = ((e.clientX - r.left) * state.width) / r.width, y = ((e.clientY - r.top) * state.height) / r.height;
    return [Math.min(Math.max(x, 0), state.width - 1e-3), Math.min(Math.max(y, 0), state.height - 1e-3)];
  }

  layers.prompts.addEventListener("contextmenu", (e) => e.preventDefault());
  layers.prompts.addEventListener("pointerdown", (e) => {
    if (state.id === null) return;
    e.preventDefault();
    if (e.button === 2) { const [x, y] = imagePoint(e); add({ type: "point", x, y, label: 0 }); return; }
    if (e.button !== 0) return;
    layers.prompts.setPointerCapture(e.pointerId);
    state.drag = { sx: e.clientX, sy: e.clientY, start: imagePoint(e), moved: false };
  });
  layers.prompts.addEventListener("pointermove", (e) => {
    const d = state.drag;
    if (!d) return;
    d.moved ||= Math.hypot(e.clientX - d.sx, e.clientY - d.sy) >= DRAG_MIN;
    if (d.moved) {
      const [x, y] = imagePoint(e);
      drawPrompts([d.start[0], d.start[1], x - d.start[0], y - d.start[1]]);
    }
  });
  layers.prompts.addEventListener("pointerup", (e) => {
    const d = state.drag;
    state.drag = null;
    if (!d || e.button !== 0) return;
    const [x, y] = imagePoint(e);
    if (d.moved) {
      const box = [Math.min(d.start[0], x), Math.min(d.start[1], y), Math.max(d.start[0], x), Math.max(d.start[1], y)];
      if (box[2] - box[0] >= 1 && box[3] - box[1] >= 1) add({ type: "box", box });
      else drawPrompts();
    } else {
      add({ type: "point", x: d.start[0], y: d.start[1], label: 1 });
    }
  });
  layers.prompts.addEventListener("pointercancel", () => { state.drag = null; drawPrompts(); });

  $("text-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value.trim();
    if (text) { add({ type: "text", text }); $("text").value = ""; }
  });
  $("undo").addEventListener("click", () => { state.prompts.pop(); update(); });
  $("clear").addEventListener("click", () => { state.prompts = []; update(); });
  $("show-all").addEventListener("change", (e) => holder.classList.toggle("hide-all", !e.target.checked));

  // ---- downloads: the selection, or every mask when nothing is selected -------------------------------
  function save(blob, name) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob); a.download = name;
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }
  $("download-json").addEventListener("click", () => {
    const records = state.result ? state.result.records : state.records;
    save(new Blob([JSON.stringify(records)], { type: "application/json" }), `${state.name}-masks.json`);
  });
  $("download-png").addEventListener("click", () => {
    const c = document.createElement("canvas");
    c.width = state.width; c.height = state.height;
    const ctx = c.getContext("2d");
    const img = ctx.createImageData(state.width, state.height);
    for (let o = 3; o < img.data.length; o += 4) img.data[o] = 255; // opaque black background
    const white = [255, 255, 255, 255];
    if (state.result) paintRle(img.data, state.result.mask, white);
    else for (const r of state.records) paintRle(img.data, r.segmentation, white);
    ctx.putImageData(img, 0, 0);
    c.toBlob((blob) => save(blob, `${state.name}-mask.png`), "image/png");
  });

  // ---- open / drop ------------------------------------------------------------------------------------
  $("file").addEventListener("change", (e) => { openFile(e.target.files[0]); e.target.value = ""; });
  document.addEventListener("dragover", (e) => { e.preventDefault(); stage.classList.add("dragging"); });
  document.addEventListener("dragleave", () => stage.classList.remove("dragging"));
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    stage.classList.remove("dragging");
    if (e.dataTransfer && e.dataTransfer.files.length) openFile(e.dataTransfer.files[0]);
  });

  fetch("/api/info").then((r) => r.json()).then((info) => {
    state.textPrompts = !!info.text_prompts;
    setData({ textPrompts: state.textPrompts });
    refreshButtons();
  }).catch(() => {});
  refreshButtons();
})();
