// What the Cloud-MRI image widgets' ES modules share (viewer.js, labeler.js): Python prepends this file to each
// module it sends (cloudmri_widgets.esm.es_module), so both stay single hand-written modules with no build step.

// Bytes arrive as a DataView (anywidget), an ArrayBuffer or a typed array at any byte offset: copy them once to an
// aligned buffer, so typed views of it are legal and independent of the message's buffer.
function toBytes(value, who) {
  if (!value) return new Uint8Array(0);
  let bytes;
  if (value instanceof ArrayBuffer) bytes = new Uint8Array(value);
  else if (ArrayBuffer.isView(value)) bytes = new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  else throw new TypeError(`cloudmri ${who}: expected bytes, got ${typeof value}`);
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return copy;
}

function clamp(value, lo, hi) {
  return Math.min(hi, Math.max(lo, value));
}

function element(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}
