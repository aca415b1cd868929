// The Cloud-MRI labeler: one hand-written ES module, no build step, nothing fetched at run time.
//
// The kernel sends the volume once (float32 magnitude bytes) and the label vocabulary. Shapes are drawn here
// and sent as `rois` (image pixel coordinates) when finished; brush and eraser strokes change a local copy of
// the painted mask (uint8 per pixel, label index + 1) that is sent as bytes when the stroke ends. Undo lives in
// the kernel (Labeler.undo), which keeps the history of `rois` and `mask`: Ctrl+Z and the button ask it.
// Viewing follows the image viewer (viewer.js): wheel = slice, Ctrl+wheel = zoom, right drag = window/level,
// middle or Shift+left drag = pan, keys 1-9 = window presets, 0 = reset zoom and pan; all of it stays here.

const SHAPES = ["polygon", "rectangle", "ellipse"];
const TOOLS = [...SHAPES, "brush", "eraser", "select"];
const CLOSE_DISTANCE = 8; // screen pixels from the first vertex that close a polygon

function rgb(hex) {
  const value = parseInt(hex.replace("#", ""), 16);
  return [(value >> 16) & 255, (value >> 8) & 255, value & 255];
}

// Whether point (x, y) lies inside an ROI: the rule Labeler.masks() applies to pixel centres.
function contains(roi, x, y) {
  const points = roi.points;
  if (roi.kind === "rectangle" || roi.kind === "ellipse") {
    const [x0, x1] = [Math.min(points[0][0], points[1][0]), Math.max(points[0][0], points[1][0])];
    const [y0, y1] = [Math.min(points[0][1], points[1][1]), Math.max(points[0][1], points[1][1])];
    if (roi.kind === "rectangle") return x >= x0 && x < x1 && y >= y0 && y < y1;
    const a = (x1 - x0) / 2;
    const b = (y1 - y0) / 2;
    return a > 0 && b > 0 && ((x - x0 - a) / a) ** 2 + ((y - y0 - b) / b) ** 2 <= 1;
  }
  let inside = false;
  for (let i = 0, j = points.length - 1; i < points.length; j = i++) {
    const [xi, yi] = points[i];
    const [xj, yj] = points[j];
    if (yi !== yj && (yi > y) !== (yj > y) && x < xi + ((y - yi) * (xj - xi)) / (yj - yi)) inside = !inside;
  }
  return inside;
}

function tracePath(context, roi) {
  const points = roi.points;
  context.beginPath();
  if (roi.kind === "polygon") {
    points.forEach(([x, y], i) => (i === 0 ? context.moveTo(x, y) : context.lineTo(x, y)));
    context.closePath();
    return;
  }
  const [x0, y0] = points[0];
  const [x1, y1] = points[1];
  if (roi.kind === "rectangle") context.rect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
  else context.ellipse((x0 + x1) / 2, (y0 + y1) / 2, Math.abs(x1 - x0) / 2, Math.abs(y1 - y0) / 2, 0, 0, 2 * Math.PI);
}

function build(model, el) {
  const listeners = [];
  const listen = (name, callback) => {
    model.on(`change:${name}`, callback);
    listeners.push([name, callback]);
  };

  const [nslices, ny, nx] = model.get("shape");
  const frameSize = nx * ny;
  const bytes = toBytes(model.get("image"), "labeler");
  const image = new Float32Array(bytes.buffer);
  let mask = toBytes(model.get("mask"), "labeler");
  let draft = null; // the shape or stroke being drawn: {kind, points} in image pixels
  let hover = "";

  // ---- layout
  const root = element("div", { className: "cml-root", tabIndex: 0 });
  const tools = element("div", { className: "cml-bar" });
  const labels = element("div", { className: "cml-bar" });
  const canvas = element("canvas");
  const status = element("div", { className: "cml-status" });
  const message = element("div", { className: "cml-message" });
  root.append(tools, labels, canvas, status, message);
  el.append(root);
  const context = canvas.getContext("2d");
  const native = element("canvas", { width: nx, height: ny });
  const nativeContext = native.getContext("2d");
  const pixels = nativeContext.createImageData(nx, ny);

  const commit = (changes) => {
    for (const [name, value] of Object.entries(changes)) model.set(name, value);
    model.save_changes();
  };
  const say = (text) => commit({ message: text, message_ok: false });
  const button = (bar, text, title, onClick) => {
    const node = element("button", { textContent: text, title, type: "button" });
    node.addEventListener("click", () => {
      onClick();
      root.focus(); // keep keyboard shortcuts working when the button disables itself
    });
    bar.append(node);
    return node;
  };

  const toolButtons = Object.fromEntries(TOOLS.map((tool) => {
    const node = button(tools, tool[0].toUpperCase() + tool.slice(1), `the ${tool} tool`, () => {
      draft = null;
      commit({ tool });
    });
    node.dataset.tool = tool;
    return [tool, node];
  }));
  const radius = element("input", { type: "number", min: 1, max: 64, step: 1, style: "width: 4em" });
  radius.addEventListener("change", () => {
    const value = Number(radius.value);
    if (value > 0) commit({ brush_radius: value });
  });
  tools.append(element("label", { title: "brush and eraser radius in image pixels" }, ["radius", radius]));
  const undoButton = button(tools, "Undo", "take back the last change (Ctrl+Z)", () => model.send({ event: "undo" }));
  const deleteButton = button(tools, "Delete ROI", "remove the selected ROI (Delete)", () => deleteSelected());
  const sliceInput = element("input", { type: "range", min: 0, max: nslices - 1, step: 1, disabled: nslices < 2 });
  sliceInput.addEventListener("input", () => {
    draft = null;
    commit({ slice: Number(sliceInput.value) });
  });
  tools.append(element("label", {}, ["slice", sliceInput]));
  const view = element("div", { className: "cml-bar" });
  root.insertBefore(view, canvas);
  const presetButtons = {};
  const applyPreset = (name) => {
    const preset = model.get("presets")[name];
    if (preset) commit({ window: preset[0], level: preset[1] });
  };
  const drawPresets = () => {
    view.replaceChildren();
    Object.keys(model.get("presets")).forEach((name, i) => {
      const key = i < 9 ? ` (${i + 1})` : "";
      const node = button(view, name, `window/level preset ${name}${key}`, () => applyPreset(name));
      node.dataset.preset = name;
      presetButtons[name] = node;
    });
    button(view, "Reset view", "zoom 1, no pan (0)", () => commit({ zoom: 1, pan: [0, 0] }));
  };

  const labelButtons = {};
  const drawLabels = () => {
    labels.replaceChildren();
    for (const { name, color } of model.get("vocabulary")) {
      const node = element("button", { type: "button", title: `draw with label ${name}` },
        [element("span", { className: "cml-swatch", style: `background: ${color}` }), name]);
      node.dataset.label = name;
      node.addEventListener("click", () => commit({ label: name }));
      labels.append(node);
      labelButtons[name] = node;
    }
  };

  // ---- geometry: at zoom 1 and no pan the image fills the canvas; pan shifts the image centre (image pixels)
  const scale = () => model.get("size") / Math.max(nx, ny);
  const magnification = () => scale() * model.get("zoom");
  const toImage = (event) => {
    const rect = canvas.getBoundingClientRect();
    const x = (event.clientX - rect.left) * (canvas.width / rect.width);
    const y = (event.clientY - rect.top) * (canvas.height / rect.height);
    const [px, py] = model.get("pan");
    const k = magnification();
    return [(x - canvas.width / 2) / k + nx / 2 - px, (y - canvas.height / 2) / k + ny / 2 - py];
  };
  let fullRange = 0;
  for (let i = 0; i < image.length; i++) fullRange = Math.max(fullRange, image[i]);
  fullRange = fullRange || 1;
  let viewDrag = null; // a right (window/level) or middle/Shift (pan) drag: where it started
  const onImage = ([x, y]) => x >= 0 && y >= 0 && x <= nx && y <= ny;
  const toEdge = ([x, y]) => [clamp(x, 0, nx), clamp(y, 0, ny)];
  const refuse = ([x, y]) => say(`The point (${x.toFixed(1)}, ${y.toFixed(1)}) is outside the ${nx} x ${ny} ` +
    "image: start shapes and place polygon vertices on the image.");

  const labelValue = () => model.get("vocabulary").findIndex((item) => item.name === model.get("label")) + 1;
  const paintAt = (x, y, value) => {
    const r = model.get("brush_radius");
    const offset = model.get("slice") * frameSize;
    for (let row = Math.max(0, Math.floor(y - r)); row <= Math.min(ny - 1, Math.ceil(y + r)); row++) {
      for (let col = Math.max(0, Math.floor(x - r)); col <= Math.min(nx - 1, Math.ceil(x + r)); col++) {
        if ((col + 0.5 - x) ** 2 + (row + 0.5 - y) ** 2 <= r * r) mask[offset + row * nx + col] = value;
      }
    }
  };
  const paintLine = ([x0, y0], [x1, y1], value) => {
    const steps = Math.max(1, Math.ceil(Math.hypot(x1 - x0, y1 - y0) * 2));
    for (let i = 1; i <= steps; i++) paintAt(x0 + ((x1 - x0) * i) / steps, y0 + ((y1 - y0) * i) / steps, value);
  };

  const addRoi = (kind, points) => {
    draft = null;
    commit({ rois: [...model.get("rois"), { slice: model.get("slice"), label: model.get("label"), kind, points }],
      message: "" });
  };
  const closePolygon = () => {
    if (!draft || draft.kind !== "polygon") return;
    const points = draft.points;
    if (points.length < 3) {
      say("A polygon needs at least 3 vertices: keep clicking, or press Escape to drop it.");
      return;
    }
    addRoi("polygon", points);
  };
  const deleteSelected = () => {
    const index = model.get("selected");
    const rois = model.get("rois");
    if (index < 0 || index >= rois.length) {
      say("Select an ROI first: pick the Select tool and click inside it.");
      return;
    }
    commit({ rois: rois.filter((_, i) => i !== index), selected: -1 });
  };

  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  canvas.addEventListener("pointerdown", (event) => {
    if (event.button === 2 || event.button === 1 || (event.button === 0 && event.shiftKey)) {
      event.preventDefault();
      root.focus();
      canvas.setPointerCapture(event.pointerId);
      viewDrag = { kind: event.button === 2 ? "window" : "pan", x: event.clientX, y: event.clientY,
        window: model.get("window"), level: model.get("level"), pan: [...model.get("pan")] };
      return;
    }
    if (event.button !== 0) return;
    event.preventDefault();
    root.focus();
    const point = toImage(event);
    const tool = model.get("tool");
    if (tool === "polygon") {
      if (!onImage(point)) {
        refuse(point);
        return;
      }
      if (!draft) draft = { kind: "polygon", points: [] };
      const [fx, fy] = draft.points[0] || [NaN, NaN];
      const k = magnification();
      if (draft.points.length >= 3 && Math.hypot((point[0] - fx) * k, (point[1] - fy) * k) <= CLOSE_DISTANCE) {
        closePolygon();
      } else {
        draft.points.push(point);
      }
      redraw();
      return;
    }
    if (tool === "select") {
      const rois = model.get("rois");
      let found = -1;
      for (let i = rois.length - 1; i >= 0 && found < 0; i--) {
        if (rois[i].slice === model.get("slice") && contains(rois[i], ...point)) found = i;
      }
      commit({ selected: found });
      return;
    }
    if (!onImage(point)) {
      refuse(point);
      return;
    }
    canvas.setPointerCapture(event.pointerId);
    if (tool === "brush" || tool === "eraser") {
      const value = tool === "brush" ? labelValue() : 0;
      draft = { kind: tool, points: [point], value };
      paintAt(...point, value);
    } else {
      draft = { kind: tool, points: [point, point] };
    }
    redraw();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (viewDrag) {
      const dx = event.clientX - viewDrag.x;
      const dy = event.clientY - viewDrag.y;
      if (viewDrag.kind === "window") {
        const step = fullRange / canvas.width; // a drag across the image sweeps the whole range
        model.set("window", Math.max(viewDrag.window + dx * step, fullRange * 1e-6));
        model.set("level", viewDrag.level + dy * step);
      } else {
        model.set("pan", [viewDrag.pan[0] + dx / magnification(), viewDrag.pan[1] + dy / magnification()]);
      }
      return;
    }
    const point = toImage(event);
    hover = onImage(point) ? `x ${point[0].toFixed(1)}, y ${point[1].toFixed(1)}` : "";
    if (draft && (draft.kind === "rectangle" || draft.kind === "ellipse")) {
      draft.points[1] = toEdge(point);
    } else if (draft && (draft.kind === "brush" || draft.kind === "eraser")) {
      paintLine(draft.points[draft.points.length - 1], point, draft.value);
      draft.points.push(point);
    }
    redraw();
  });
  const end = (event) => {
    if (canvas.hasPointerCapture(event.pointerId)) canvas.releasePointerCapture(event.pointerId);
    if (viewDrag) {
      viewDrag = null;
      model.save_changes();
      return;
    }
    if (!draft || draft.kind === "polygon") return;
    if (draft.kind === "brush" || draft.kind === "eraser") {
      draft = null;
      commit({ mask: new DataView(mask.slice().buffer) });
      return;
    }
    const [[x0, y0], [x1, y1]] = draft.points;
    if (x0 === x1 || y0 === y1) {
      draft = null; // a click without a drag draws nothing
      redraw();
      return;
    }
    addRoi(draft.kind, draft.points);
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  canvas.addEventListener("dblclick", (event) => {
    event.preventDefault();
    if (draft && draft.kind === "polygon") {
      // The double click's two clicks placed the same vertex twice.
      const points = draft.points;
      while (points.length > 1 && Math.hypot(points.at(-1)[0] - points.at(-2)[0],
        points.at(-1)[1] - points.at(-2)[1]) * magnification() <= CLOSE_DISTANCE) points.pop();
      closePolygon();
    }
  });
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    if (event.deltaY === 0) return;
    if (event.ctrlKey) { // zoom about the pointer: the image point under it stays put
      const before = toImage(event);
      model.set("zoom", clamp(model.get("zoom") * Math.exp(-event.deltaY * 0.002), 0.25, 32));
      const after = toImage(event);
      const [px, py] = model.get("pan");
      commit({ pan: [px + after[0] - before[0], py + after[1] - before[1]] });
      return;
    }
    draft = null;
    commit({ slice: clamp(model.get("slice") + Math.sign(event.deltaY), 0, nslices - 1) });
  }, { passive: false });
  root.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") {
      event.preventDefault();
      model.send({ event: "undo" });
    } else if (event.key === "Delete" || event.key === "Backspace") {
      event.preventDefault();
      deleteSelected();
    } else if (event.key === "Enter") {
      closePolygon();
    } else if (event.key === "Escape") {
      draft = null;
      redraw();
    } else if (/^[1-9]$/.test(event.key) && !event.ctrlKey && !event.altKey && !event.metaKey) {
      const name = Object.keys(model.get("presets"))[Number(event.key) - 1];
      if (name) applyPreset(name);
    } else if (event.key === "0") {
      commit({ zoom: 1, pan: [0, 0] });
    }
  });

  // ---- drawing
  const draw = () => {
    pending = 0;
    const slice = model.get("slice");
    const vocabulary = model.get("vocabulary");
    const colours = vocabulary.map((item) => rgb(item.color));
    const lo = model.get("level") - model.get("window") / 2;
    const width = model.get("window");
    const out = pixels.data;
    const offset = slice * frameSize;
    for (let i = 0; i < frameSize; i++) {
      const g = Math.round(clamp((image[offset + i] - lo) / width, 0, 1) * 255);
      const value = mask[offset + i];
      if (value > 0 && value <= colours.length) {
        const [r, gg, b] = colours[value - 1];
        out[4 * i] = Math.round(0.5 * g + 0.5 * r);
        out[4 * i + 1] = Math.round(0.5 * g + 0.5 * gg);
        out[4 * i + 2] = Math.round(0.5 * g + 0.5 * b);
      } else {
        out[4 * i] = out[4 * i + 1] = out[4 * i + 2] = g;
      }
      out[4 * i + 3] = 255;
    }
    nativeContext.putImageData(pixels, 0, 0);
    const w = Math.round(nx * scale());
    const h = Math.round(ny * scale());
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    const k = magnification();
    const [px, py] = model.get("pan");
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.fillStyle = "#000";
    context.fillRect(0, 0, w, h);
    context.imageSmoothingEnabled = false;
    context.setTransform(k, 0, 0, k, w / 2 + (px - nx / 2) * k, h / 2 + (py - ny / 2) * k);
    context.drawImage(native, 0, 0);
    const colourOf = (name) => (vocabulary.find((item) => item.name === name) || { color: "#ffffff" }).color;
    model.get("rois").forEach((roi, index) => {
      if (roi.slice !== slice) return;
      tracePath(context, roi);
      context.globalAlpha = 0.3;
      context.fillStyle = colourOf(roi.label);
      context.fill();
      context.globalAlpha = 1;
      context.strokeStyle = index === model.get("selected") ? "#ffffff" : colourOf(roi.label);
      context.lineWidth = (index === model.get("selected") ? 3 : 1.5) / k;
      context.setLineDash(index === model.get("selected") ? [6 / k, 4 / k] : []);
      context.stroke();
      context.setLineDash([]);
    });
    if (draft && SHAPES.includes(draft.kind)) {
      context.strokeStyle = colourOf(model.get("label"));
      context.lineWidth = 1.5 / k;
      if (draft.kind === "polygon") {
        context.beginPath();
        draft.points.forEach(([x, y], i) => (i === 0 ? context.moveTo(x, y) : context.lineTo(x, y)));
        context.stroke();
        for (const [x, y] of draft.points) context.strokeRect(x - 2 / k, y - 2 / k, 4 / k, 4 / k);
      } else {
        tracePath(context, draft);
        context.stroke();
      }
    }
    for (const [name, node] of Object.entries(toolButtons)) node.classList.toggle("cml-on", model.get("tool") === name);
    for (const [name, node] of Object.entries(labelButtons)) node.classList.toggle("cml-on", model.get("label") === name);
    if (document.activeElement !== radius) radius.value = String(model.get("brush_radius"));
    sliceInput.value = String(slice);
    undoButton.disabled = !model.get("can_undo");
    deleteButton.disabled = model.get("selected") < 0;
    const count = model.get("rois").filter((roi) => roi.slice === slice).length;
    for (const [name, node] of Object.entries(presetButtons)) {
      const [pw, pl] = model.get("presets")[name] || [NaN, NaN];
      node.classList.toggle("cml-on", Math.abs(pw - model.get("window")) < 1e-9 * fullRange &&
        Math.abs(pl - model.get("level")) < 1e-9 * fullRange);
    }
    status.textContent = `slice ${slice + 1}/${nslices} · ${count} ROI(s) on this slice · label ` +
      `${model.get("label")} · W ${model.get("window").toPrecision(3)} L ${model.get("level").toPrecision(3)} · ` +
      `zoom ${model.get("zoom").toFixed(2)}×${hover ? ` · ${hover}` : ""}`;
    message.textContent = model.get("message");
    message.classList.toggle("cml-ok", model.get("message_ok"));
  };
  let pending = 0;
  const redraw = () => {
    if (!pending) pending = requestAnimationFrame(draw);
  };

  listen("mask", () => {
    mask = toBytes(model.get("mask"), "labeler");
    redraw();
  });
  for (const name of ["rois", "slice", "tool", "label", "window", "level", "size", "selected", "can_undo",
    "message", "message_ok", "brush_radius", "zoom", "pan"]) listen(name, redraw);
  listen("presets", () => {
    drawPresets();
    redraw();
  });
  drawPresets();
  listen("vocabulary", () => {
    drawLabels();
    redraw();
  });
  drawLabels();
  draw();

  // For tests and debugging: the painted mask as the page holds it.
  el.cloudmriLabeler = { mask: () => mask };

  return () => {
    if (pending) cancelAnimationFrame(pending);
    for (const [name, callback] of listeners) model.off(`change:${name}`, callback);
    root.remove();
  };
}

function render({ model, el }) {
  let teardown = build(model, el);
  const rebuild = () => {
    teardown();
    teardown = build(model, el);
  };
  for (const name of ["image", "shape"]) model.on(`change:${name}`, rebuild);
  return () => {
    for (const name of ["image", "shape"]) model.off(`change:${name}`, rebuild);
    teardown();
  };
}

export default { render };
