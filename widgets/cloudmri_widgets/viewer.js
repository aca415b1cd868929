// The Cloud-MRI image viewer: one hand-written ES module, no build step, nothing fetched at run time.
//
// The kernel sends the volume once (float32 bytes: magnitude and, for complex data, phase). Every frame is
// made here: windowing, slices, zoom/pan, difference maps and line profiles never wait for Python. Model
// state changes are applied locally with model.set() as the mouse moves and sent to the kernel with
// model.save_changes() only when an interaction ends, so a drag costs no round trip per frame.

const PALETTE = ["#2b6cb0", "#c53030", "#2f855a", "#b7791f", "#6b46c1", "#319795"];
const PROFILE_SIZE = [360, 120];

function toFloat32(value) {
  return new Float32Array(toBytes(value, "viewer").buffer);
}

// Bilinear sample with pixel centres at +0.5, clamped at the edges: the same rule as Viewer.profile_values().
function sample(frame, nx, ny, x, y) {
  const u = clamp(x - 0.5, 0, nx - 1);
  const v = clamp(y - 0.5, 0, ny - 1);
  const c0 = Math.floor(u);
  const r0 = Math.floor(v);
  const c1 = Math.min(c0 + 1, nx - 1);
  const r1 = Math.min(r0 + 1, ny - 1);
  const fu = u - c0;
  const fv = v - r0;
  const top = frame[r0 * nx + c0] * (1 - fu) + frame[r0 * nx + c1] * fu;
  const bottom = frame[r1 * nx + c0] * (1 - fu) + frame[r1 * nx + c1] * fu;
  return top * (1 - fv) + bottom * fv;
}

function profilePoints(line) {
  const [x0, y0, x1, y1] = line;
  const count = Math.max(2, Math.ceil(Math.hypot(x1 - x0, y1 - y0)) + 1);
  const points = [];
  for (let i = 0; i < count; i++) {
    const t = i / (count - 1);
    points.push([x0 + t * (x1 - x0), y0 + t * (y1 - y0)]);
  }
  return points;
}

function wrapPhase(d) {
  return d - 2 * Math.PI * Math.round(d / (2 * Math.PI));
}

function build(model, el) {
  const listeners = [];
  const listen = (name, callback) => {
    model.on(`change:${name}`, callback);
    listeners.push([name, callback]);
  };

  const shape = model.get("shape");
  const [ny, nx] = shape.slice(-2);
  const nslices = shape[shape.length - 3];
  const extent = shape.slice(0, -3);
  const dims = model.get("dims");
  const titles = model.get("titles");
  const nseries = titles.length;
  const frameSize = nx * ny;
  const seriesSize = shape.reduce((a, b) => a * b, 1);
  const data = { magnitude: toFloat32(model.get("magnitude")), phase: toFloat32(model.get("phase")) };
  const isComplex = model.get("is_complex") && data.phase.length === data.magnitude.length;
  const ranges = model.get("ranges");
  const fullRange = Math.max(...ranges.map((r) => r[1]), 0) - Math.min(...ranges.map((r) => r[0]), 0) || 1;
  const stats = { frames: 0, profile: [] };

  const frameOf = (series, mode) => {
    const indices = model.get("indices");
    let flat = 0;
    for (let i = 0; i < extent.length; i++) flat = flat * extent[i] + (indices[i] || 0);
    const start = series * seriesSize + (flat * nslices + model.get("slice")) * frameSize;
    return data[mode].subarray(start, start + frameSize);
  };
  const currentMode = () => (isComplex && model.get("mode") === "phase" ? "phase" : "magnitude");

  // ---- layout
  const root = element("div", { className: "cmv-root" });
  const bar = element("div", { className: "cmv-bar" });
  const sliders = element("div", { className: "cmv-bar" });
  const panelsBox = element("div", { className: "cmv-panels" });
  const readout = element("div", { className: "cmv-readout" });
  const profileCanvas = element("canvas", { className: "cmv-profile", width: PROFILE_SIZE[0],
    height: PROFILE_SIZE[1] });
  const legend = element("div", { className: "cmv-legend" });
  const profileBox = element("div", {}, [profileCanvas, legend]);
  root.append(bar, sliders, panelsBox, readout, profileBox);
  el.append(root);

  const button = (label, title, onClick) => {
    const node = element("button", { textContent: label, title, type: "button" });
    node.addEventListener("click", onClick);
    bar.append(node);
    return node;
  };
  const commit = (changes) => {
    for (const [name, value] of Object.entries(changes)) model.set(name, value);
    model.save_changes();
  };

  const toolButtons = {
    window: button("W/L", "drag: right = wider window, down = higher level", () => commit({ tool: "window" })),
    pan: button("Pan", "drag to move the image (or Shift+drag with any tool)", () => commit({ tool: "pan" })),
    profile: button("Profile", "drag a line to plot the values along it", () => commit({ tool: "profile" })),
  };
  const modeButtons = {
    magnitude: button("Magnitude", "show the magnitude", () => commit({ mode: "magnitude" })),
    phase: button("Phase", "show the phase (−π…π)", () => commit({ mode: "phase" })),
  };
  modeButtons.phase.disabled = !isComplex;
  const diffLabel = element("label", { title: "add a panel per series showing it minus the first" });
  const diffBox = element("input", { type: "checkbox", disabled: nseries < 2 });
  diffBox.addEventListener("change", () => commit({ difference: diffBox.checked }));
  diffLabel.append(diffBox, "Difference");
  bar.append(diffLabel);
  const presetBox = element("span", { className: "cmv-presets" });
  bar.append(presetBox);
  const drawPresets = () => {
    presetBox.replaceChildren();
    for (const [name, [window, level]] of Object.entries(model.get("presets"))) {
      const node = element("button", { textContent: name, type: "button",
        title: `window ${window.toPrecision(4)}, level ${level.toPrecision(4)}` });
      node.dataset.preset = name;
      node.addEventListener("click", () => commit({ window, level }));
      presetBox.append(node);
    }
  };
  button("Reset view", "zoom 1, no pan", () => commit({ zoom: 1, pan: [0, 0] }));
  button("Clear profile", "remove the line profile", () => commit({ profile: [] }));

  const slider = (label, count, get, set) => {
    const input = element("input", { type: "range", min: 0, max: count - 1, step: 1 });
    const text = element("span");
    input.addEventListener("input", () => set(Number(input.value)));
    input.addEventListener("change", () => model.save_changes());
    const box = element("label", {}, [label, input, text]);
    input.disabled = count < 2;
    sliders.append(box);
    return () => {
      input.value = String(get());
      text.textContent = `${get() + 1}/${count}`;
    };
  };
  const sliderUpdates = [slider("slice", nslices, () => model.get("slice"), (v) => model.set("slice", v))];
  extent.forEach((count, axis) => {
    sliderUpdates.push(slider(dims[axis] || `axis ${axis}`, count, () => model.get("indices")[axis], (v) => {
      const indices = [...model.get("indices")];
      indices[axis] = v;
      model.set("indices", indices);
    }));
  });

  // ---- panels: one per series, then one difference panel per further series
  const panels = [];
  const addPanel = (kind, series) => {
    const title = kind === "series" ? titles[series] : `${titles[series]} − ${titles[0]}`;
    const canvas = element("canvas");
    const native = element("canvas", { width: nx, height: ny });
    const nativeContext = native.getContext("2d");
    const panel = { kind, series, canvas, context: canvas.getContext("2d"), native, nativeContext,
      pixels: nativeContext.createImageData(nx, ny) };
    panel.box = element("div", { className: "cmv-panel" }, [element("div", { className: "cmv-title",
      textContent: title }), canvas]);
    panel.box.dataset.kind = kind;
    panel.box.dataset.series = String(series);
    panelsBox.append(panel.box);
    attachMouse(panel);
    panels.push(panel);
  };

  const scale = () => model.get("size") / Math.max(nx, ny);
  const toImage = (panel, event) => {
    const rect = panel.canvas.getBoundingClientRect();
    const k = scale() * model.get("zoom");
    const [px, py] = model.get("pan");
    const x = (event.clientX - rect.left) * (panel.canvas.width / rect.width);
    const y = (event.clientY - rect.top) * (panel.canvas.height / rect.height);
    return [(x - panel.canvas.width / 2) / k + nx / 2 - px, (y - panel.canvas.height / 2) / k + ny / 2 - py];
  };

  const showValue = (panel, event) => {
    const [x, y] = toImage(panel, event);
    const c = Math.floor(x);
    const r = Math.floor(y);
    if (c < 0 || r < 0 || c >= nx || r >= ny) return;
    const mode = currentMode();
    let value = frameOf(panel.series, mode)[r * nx + c];
    if (panel.kind === "difference") {
      value -= frameOf(0, mode)[r * nx + c];
      if (mode === "phase") value = wrapPhase(value);
    }
    hover = `${panel.kind === "difference" ? "difference" : titles[panel.series]} (x ${c}, y ${r}): ` +
      value.toPrecision(4);
    drawReadout();
  };

  let drag = null;
  let hover = "";
  function attachMouse(panel) {
    const canvas = panel.canvas;
    canvas.addEventListener("pointerdown", (event) => {
      if (event.button !== 0 && event.button !== 1) return;
      event.preventDefault();
      canvas.setPointerCapture(event.pointerId);
      const tool = event.shiftKey || event.button === 1 ? "pan" : model.get("tool");
      drag = { panel, tool, x: event.clientX, y: event.clientY, window: model.get("window"),
        level: model.get("level"), pan: [...model.get("pan")], start: toImage(panel, event) };
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!drag || drag.panel !== panel) {
        showValue(panel, event);
        return;
      }
      const dx = event.clientX - drag.x;
      const dy = event.clientY - drag.y;
      if (drag.tool === "window") {
        // A drag across the whole panel sweeps the whole data range.
        const step = fullRange / canvas.width;
        model.set("window", Math.max(drag.window + dx * step, fullRange * 1e-6));
        model.set("level", drag.level + dy * step);
      } else if (drag.tool === "pan") {
        const k = scale() * model.get("zoom");
        model.set("pan", [drag.pan[0] + dx / k, drag.pan[1] + dy / k]);
      } else {
        model.set("profile", [...drag.start, ...toImage(panel, event)]);
      }
    });
    const end = (event) => {
      if (!drag || drag.panel !== panel) return;
      if (canvas.hasPointerCapture(event.pointerId)) canvas.releasePointerCapture(event.pointerId);
      drag = null;
      model.save_changes();
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener("wheel", (event) => {
      event.preventDefault();
      if (event.ctrlKey) {
        model.set("zoom", clamp(model.get("zoom") * Math.exp(-event.deltaY * 0.002), 0.1, 64));
      } else if (event.deltaY !== 0) {
        model.set("slice", clamp(model.get("slice") + Math.sign(event.deltaY), 0, nslices - 1));
      }
      model.save_changes();
    }, { passive: false });
  }

  for (let s = 0; s < nseries; s++) addPanel("series", s);
  for (let s = 1; s < nseries; s++) addPanel("difference", s);

  // ---- drawing
  const paint = (panel, mode) => {
    const out = panel.pixels.data;
    const frame = frameOf(panel.series, mode);
    let lo;
    let width;
    if (panel.kind === "difference") {
      const reference = frameOf(0, mode);
      width = mode === "phase" ? 2 * Math.PI : model.get("window");
      for (let i = 0; i < frameSize; i++) {
        const d = mode === "phase" ? wrapPhase(frame[i] - reference[i]) : frame[i] - reference[i];
        const g = Math.round(clamp(0.5 + d / width, 0, 1) * 255);
        out[4 * i] = out[4 * i + 1] = out[4 * i + 2] = g;
        out[4 * i + 3] = 255;
      }
    } else {
      [lo, width] = mode === "phase" ? [-Math.PI, 2 * Math.PI]
        : [model.get("level") - model.get("window") / 2, model.get("window")];
      for (let i = 0; i < frameSize; i++) {
        const g = Math.round(clamp((frame[i] - lo) / width, 0, 1) * 255);
        out[4 * i] = out[4 * i + 1] = out[4 * i + 2] = g;
        out[4 * i + 3] = 255;
      }
    }
    panel.nativeContext.putImageData(panel.pixels, 0, 0);
    const s = scale();
    const width_ = Math.round(nx * s);
    const height = Math.round(ny * s);
    if (panel.canvas.width !== width_ || panel.canvas.height !== height) {
      panel.canvas.width = width_;
      panel.canvas.height = height;
    }
    const context = panel.context;
    const k = s * model.get("zoom");
    const [px, py] = model.get("pan");
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.fillStyle = "#000";
    context.fillRect(0, 0, width_, height);
    context.imageSmoothingEnabled = false;
    context.setTransform(k, 0, 0, k, width_ / 2 + (px - nx / 2) * k, height / 2 + (py - ny / 2) * k);
    context.drawImage(panel.native, 0, 0);
    const line = model.get("profile");
    if (line.length === 4) {
      context.strokeStyle = "#ffd400";
      context.lineWidth = 1.5 / k;
      context.beginPath();
      context.moveTo(line[0], line[1]);
      context.lineTo(line[2], line[3]);
      context.stroke();
    }
  };

  const drawProfile = (mode) => {
    const line = model.get("profile");
    profileBox.style.display = line.length === 4 ? "" : "none";
    if (line.length !== 4) {
      stats.profile = [];
      return;
    }
    const points = profilePoints(line);
    stats.profile = titles.map((_, s) => {
      const frame = frameOf(s, mode);
      return points.map(([x, y]) => sample(frame, nx, ny, x, y));
    });
    const all = stats.profile.flat();
    let lo = Math.min(...all);
    let hi = Math.max(...all);
    if (hi <= lo) [lo, hi] = [lo - 1, hi + 1];
    const [w, h] = PROFILE_SIZE;
    const pad = 4;
    const context = profileCanvas.getContext("2d");
    context.clearRect(0, 0, w, h);
    context.fillStyle = "#666";
    context.font = "10px system-ui, sans-serif";
    context.fillText(hi.toPrecision(4), pad, 10);
    context.fillText(lo.toPrecision(4), pad, h - pad);
    stats.profile.forEach((values, s) => {
      context.strokeStyle = PALETTE[s % PALETTE.length];
      context.lineWidth = 1.5;
      context.beginPath();
      values.forEach((value, i) => {
        const x = pad + (i / (values.length - 1)) * (w - 2 * pad);
        const y = h - pad - ((value - lo) / (hi - lo)) * (h - 2 * pad);
        if (i === 0) context.moveTo(x, y);
        else context.lineTo(x, y);
      });
      context.stroke();
    });
    legend.replaceChildren(...titles.map((title, s) => element("span", {
      textContent: `— ${title}`, style: `color: ${PALETTE[s % PALETTE.length]}` })));
  };

  function drawReadout() {
    const mode = currentMode();
    const wl = mode === "phase" ? "phase −π…π" : `W ${model.get("window").toPrecision(4)} ` +
      `L ${model.get("level").toPrecision(4)}`;
    readout.textContent = `${wl} · zoom ${model.get("zoom").toFixed(2)}×${hover ? ` · ${hover}` : ""}`;
  }

  const drawControls = () => {
    for (const [name, node] of Object.entries(toolButtons)) node.classList.toggle("cmv-on", model.get("tool") === name);
    for (const [name, node] of Object.entries(modeButtons)) node.classList.toggle("cmv-on", currentMode() === name);
    diffBox.checked = model.get("difference");
    for (const update of sliderUpdates) update();
  };

  let pending = 0;
  const draw = () => {
    pending = 0;
    const mode = currentMode();
    const showDifference = model.get("difference") && nseries > 1;
    for (const panel of panels) {
      const visible = panel.kind === "series" || showDifference;
      panel.box.style.display = visible ? "" : "none";
      if (visible) paint(panel, mode);
    }
    drawProfile(mode);
    drawControls();
    drawReadout();
    stats.frames += 1;
  };
  const redraw = () => {
    if (!pending) pending = requestAnimationFrame(draw);
  };

  for (const name of ["slice", "indices", "window", "level", "mode", "tool", "zoom", "pan", "difference",
    "profile", "size"]) listen(name, redraw);
  listen("presets", drawPresets);
  drawPresets();
  draw();

  // For tests and debugging: how many frames were drawn and the profile values last plotted.
  el.cloudmriViewer = stats;

  return () => {
    if (pending) cancelAnimationFrame(pending);
    for (const [name, callback] of listeners) model.off(`change:${name}`, callback);
    root.remove();
  };
}

function render({ model, el }) {
  let teardown = build(model, el);
  // New data (or a new number of series) rebuilds the view; everything else only redraws.
  const rebuild = () => {
    teardown();
    teardown = build(model, el);
  };
  const dataTraits = ["magnitude", "phase", "shape", "titles", "dims"];
  for (const name of dataTraits) model.on(`change:${name}`, rebuild);
  return () => {
    for (const name of dataTraits) model.off(`change:${name}`, rebuild);
    teardown();
  };
}

export default { render };
