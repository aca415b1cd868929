"""A labeling widget: draw regions of interest on an image volume and save them per reader to the service.

Tools: polygon, rectangle and ellipse ROIs (kept as shapes), and a brush and eraser that paint a per-slice
mask. Every ROI and painted pixel carries a label of the project's vocabulary. The browser (``labeler.js``)
draws; the kernel holds the result: ``rois`` as a list of ``{"slice", "label", "kind", "points"}`` in image
pixel coordinates (pixel row ``r``, column ``c`` covers ``[c, c+1) x [r, r+1)``) and the painted mask as
uint8 bytes, the label's index in the vocabulary plus one per pixel (0 = unlabelled). :meth:`Labeler.masks`
rasterizes the shapes with the rule the browser draws them by: a pixel belongs to a shape when its centre lies
inside it (even-odd rule for polygons).

Example:
    >>> import numpy as np
    >>> from cloudmri_widgets import Labeler
    >>> labeler = Labeler(np.ones((2, 32, 32)), vocabulary={"lesion": "#e6194b", "liver": "#3cb44b"})
    >>> labeler.rois = [{"slice": 0, "label": "lesion", "kind": "rectangle", "points": [[4, 4], [8, 10]]}]
    >>> int(labeler.masks()[0].sum())
    24
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import numpy as np
import traitlets

from cloudmri_kernel.client import ServiceError
from cloudmri_kernel.errors import CloudMRIError
from cloudmri_widgets.esm import es_module
from cloudmri_widgets.viewer import _as_volume, _percentile_window

if TYPE_CHECKING:
    from cloudmri_kernel.client import Client

__all__ = ["Labeler", "KINDS", "TOOLS", "rasterize"]

#: The shapes an ROI can have; "mask" ROIs exist only in a saved label set (the painted pixels, run-length coded).
KINDS = ("polygon", "rectangle", "ellipse")
TOOLS = (*KINDS, "brush", "eraser", "select")
#: Colours given to vocabulary names passed without one (Sasha Trubetskoy's 20 distinct colours, first ten).
PALETTE = ("#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c",
           "#fabebe")
#: How many earlier states undo can go back to.
UNDO_DEPTH = 100


def _bytes_from_json(value, _widget) -> bytes:
    """The comm delivers binary buffers as memoryviews; the trait holds bytes."""
    return bytes(value)


def _pixel_centres(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(nx) + 0.5, np.arange(ny) + 0.5)


def rasterize(kind: str, points: Sequence[Sequence[float]], ny: int, nx: int) -> np.ndarray:
    """The pixels (ny, nx) bool whose centres lie inside a shape given in image pixel coordinates.

    Args:
        kind: "rectangle" or "ellipse" (``points`` two opposite corners of the box), or "polygon" (its
            vertices, closed implicitly; even-odd rule).
    """
    px, py = _pixel_centres(ny, nx)
    xy = np.asarray(points, np.float64).reshape(-1, 2)
    if kind in ("rectangle", "ellipse"):
        (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
        if kind == "rectangle":
            return (px >= x0) & (px < x1) & (py >= y0) & (py < y1)
        a, b = (x1 - x0) / 2, (y1 - y0) / 2
        if a <= 0 or b <= 0:
            return np.zeros((ny, nx), bool)
        return ((px - (x0 + a)) / a) ** 2 + ((py - (y0 + b)) / b) ** 2 <= 1
    inside = np.zeros((ny, nx), bool)
    for (xi, yi), (xj, yj) in zip(xy, np.roll(xy, 1, axis=0), strict=True):
        if yi == yj:
            continue
        crosses = (yi > py) != (yj > py)
        inside ^= crosses & (px < xi + (py - yi) * (xj - xi) / (yj - yi))
    return inside


def _runs(flags: np.ndarray) -> list[int]:
    """Run-length code of a flat bool array: [start, length, start, length, …] of its True runs."""
    padded = np.concatenate([[False], flags, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = edges[0::2], edges[1::2]
    return np.column_stack([starts, ends - starts]).ravel().tolist()


def _vocabulary(vocabulary: Mapping[str, str] | Sequence[str]) -> list[dict[str, str]]:
    if isinstance(vocabulary, Mapping):
        items = [(str(name), str(colour)) for name, colour in vocabulary.items()]
    else:
        items = [(str(name), PALETTE[i % len(PALETTE)]) for i, name in enumerate(vocabulary)]
    if not items:
        raise ValueError("the vocabulary is empty: give the label names of the project, e.g. "
                         "vocabulary={'lesion': '#e6194b'} or vocabulary=['lesion', 'liver']")
    names = [name for name, _ in items]
    if len(set(names)) != len(names):
        raise ValueError(f"the vocabulary names a label twice: {names}")
    if len(names) > 255:
        raise ValueError(f"{len(names)} labels: a uint8 mask holds at most 255")
    return [{"name": name, "color": colour} for name, colour in items]


class Labeler(anywidget.AnyWidget):
    """ROIs and painted masks on an image volume, per slice, with a label vocabulary, undo and saving.

    In the browser: pick a tool and a label; *Rectangle*/*Ellipse* drag a box; *Polygon* clicks vertices and
    closes on a click near the first vertex, a double click or Enter (Escape drops it); *Brush*/*Eraser* paint
    and erase pixels of the painted mask within the brush radius; *Select* picks an ROI, which Delete (or the
    button) removes. Ctrl+Z or *Undo* takes back the last change. The mouse wheel scrolls slices and Ctrl+wheel
    zooms (about the pointer); a right drag changes the window (right = wider) and level (down = higher); a
    middle or Shift+left drag pans. Keys 1–9 pick the window presets in order ("auto" = 0.5–99.5th percentile,
    "full" = the whole range, then ``presets``), 0 resets zoom and pan. A shape begun outside the image is
    refused with a message; a drag that leaves the image stops at its edge.

    Args:
        data: the image, real or complex ``(y, x)`` or ``(slices, y, x)``; complex data are shown as magnitude.
        vocabulary: the project's labels, ``{"name": "#rrggbb"}`` or a list of names (colours assigned).
        size: the longest side of the image on screen, in CSS pixels.
        presets: extra window/level presets, ``{"name": (window, level)}``, after "auto" and "full".

    Raises:
        TypeError, ValueError: the image is not a numeric volume, or the vocabulary is empty or repeats a name.
    """

    _esm = es_module("labeler.js")
    _css = Path(__file__).with_name("labeler.css")

    image = traitlets.Bytes(help="float32 magnitude (slices, y, x), C order").tag(sync=True)
    shape = traitlets.List(traitlets.Int(), help="[slices, y, x]").tag(sync=True)
    vocabulary = traitlets.List(traitlets.Dict(), help='the labels, [{"name": …, "color": "#rrggbb"}]').tag(sync=True)
    label = traitlets.Unicode(help="the label new ROIs and brush strokes get").tag(sync=True)
    tool = traitlets.Enum(TOOLS, "rectangle", help="what a left click or drag does").tag(sync=True)
    brush_radius = traitlets.Float(3.0, help="brush and eraser radius in image pixels").tag(sync=True)
    slice = traitlets.Int(0, help="the slice shown (0-based)").tag(sync=True)
    window = traitlets.Float(1.0, help="window width").tag(sync=True)
    level = traitlets.Float(0.5, help="window centre").tag(sync=True)
    size = traitlets.Int(512, help="longest side of the image on screen, CSS pixels").tag(sync=True)
    presets = traitlets.Dict(help='window/level presets in key order, {"name": [window, level]}').tag(sync=True)
    zoom = traitlets.Float(1.0, help="magnification over the fitted size").tag(sync=True)
    pan = traitlets.List(traitlets.Float(), [0.0, 0.0], minlen=2, maxlen=2,
                         help="shift of the image centre, image pixels [x, y]").tag(sync=True)
    rois = traitlets.List(traitlets.Dict(), help='the shapes, [{"slice", "label", "kind", "points"}]').tag(sync=True)
    mask = traitlets.Bytes(help="painted mask, uint8 (slices, y, x): vocabulary index + 1, 0 = none").tag(
        sync=True, from_json=_bytes_from_json)
    selected = traitlets.Int(-1, help="index in rois of the selected ROI, -1 for none").tag(sync=True)
    can_undo = traitlets.Bool(False, help="whether there is a change to take back").tag(sync=True)
    message = traitlets.Unicode("", help="what went wrong or what was saved, for the reader").tag(sync=True)
    message_ok = traitlets.Bool(False, help="the message reports a success (shown plain, not as a problem)").tag(
        sync=True)

    def __init__(self, data, vocabulary: Mapping[str, str] | Sequence[str], size: int = 512,
                 presets: Mapping[str, Sequence[float]] | None = None, **kwargs):
        volume = np.abs(_as_volume(data, "the image"))
        if volume.ndim != 3:
            raise ValueError(f"the image has shape {volume.shape}: the labeler takes (y, x) or (slices, y, x)")
        vocabulary = _vocabulary(vocabulary)
        window, level = _percentile_window(volume, 0.5, 99.5)
        all_presets = {"auto": [window, level], "full": _percentile_window(volume, 0, 100)}
        all_presets.update({str(name): [float(w), float(lvl)] for name, (w, lvl) in (presets or {}).items()})
        self._history: list[tuple[list[dict], bytes]] = []
        self._restoring = False
        #: (series ID, label set name) -> the stored version this drawing replaces (0: none stored yet).
        self.versions: dict[tuple[str, str], int] = {}
        super().__init__(image=np.ascontiguousarray(volume, "<f4").tobytes(), shape=list(volume.shape),
                         vocabulary=vocabulary, label=vocabulary[0]["name"], window=window, level=level,
                         size=size, presets=all_presets, mask=bytes(volume.size), **kwargs)
        self.observe(self._remember, names=["rois", "mask"])
        self.on_msg(self._on_message)

    @property
    def names(self) -> list[str]:
        """The vocabulary's label names, in order (mask value = position + 1)."""
        return [item["name"] for item in self.vocabulary]

    def painted(self) -> np.ndarray:
        """The painted mask (brush and eraser) alone, (slices, y, x) uint8."""
        return np.frombuffer(self.mask, np.uint8).reshape(self.shape).copy()

    def masks(self) -> np.ndarray:
        """The label map (slices, y, x) uint8: the painted mask, then every ROI filled in order over it.

        A pixel's value is its label's position in the vocabulary plus one; 0 is unlabelled.
        """
        result = self.painted()
        _, ny, nx = self.shape
        for roi in self.rois:
            result[roi["slice"]][rasterize(roi["kind"], roi["points"], ny, nx)] = self.names.index(roi["label"]) + 1
        return result

    def undo(self) -> bool:
        """Take back the last change of ``rois`` or ``mask``; False when there is none."""
        if not self._history:
            return False
        rois, mask = self._history.pop()
        self._restoring = True
        try:
            with self.hold_sync():
                self.rois, self.mask, self.selected = rois, mask, -1
        finally:
            self._restoring = False
        self.can_undo = bool(self._history)
        return True

    def delete(self, index: int) -> None:
        """Remove the ROI at ``index`` of ``rois`` (undo brings it back)."""
        if not 0 <= index < len(self.rois):
            raise IndexError(f"there is no ROI {index}: {len(self.rois)} ROI(s) are drawn")
        self.rois = [roi for i, roi in enumerate(self.rois) if i != index]
        self.selected = -1

    def label_set(self) -> tuple[list[dict], list[str]]:
        """What :meth:`save` stores: the ROIs plus the painted mask as ``"mask"`` ROIs, and the label names.

        A mask ROI holds one label's painted pixels on one slice as ``"runs"``: ``[start, length, …]`` of
        flat (row-major) pixel indices within the slice.
        """
        rois = [dict(roi) for roi in self.rois]
        for index, plane in enumerate(self.painted()):
            flat = plane.ravel()
            for value in np.unique(flat[flat > 0]):
                rois.append({"slice": index, "label": self.names[value - 1], "kind": "mask", "points": [],
                             "runs": _runs(flat == value)})
        return rois, self.names

    def save(self, client: Client, series_id: str, name: str = "default") -> bool:
        """Store the drawing as the caller's label set ``name`` of a series (replacing their earlier one).

        The service keeps one set per reader and name; other readers' sets are untouched. The save names the
        version this labeler loaded or last saved (``versions``): when the set was saved meanwhile elsewhere (a
        second tab) the service refuses, ``message`` says so, and the next save replaces it deliberately. When
        the service refuses (an expired token, a missing scope …) ``message`` says why, the drawing stays as it
        is, and False is returned.
        """
        rois, names = self.label_set()
        key = (series_id, name)
        try:
            stored = client.save_labels(series_id, name, rois, names, version=self.versions.get(key))
        except ServiceError as error:
            if error.status == 409 and isinstance(error.detail, dict):
                theirs = error.detail.get("stored") or {"rois": [], "version": 0}
                self.versions[key] = theirs["version"]
                self._tell(f"Not saved: label set '{name}' of series {series_id} was saved meanwhile elsewhere "
                           f"({len(theirs['rois'])} ROI(s), version {theirs['version']}). Your drawing is kept "
                           "here: save again to replace that set with it, or load to see it.")
                return False
            self._tell(f"Not saved: {_problem(error)}")
            return False
        except CloudMRIError as error:
            self._tell(f"Not saved: {error}. Your drawing is kept here; try again.")
            return False
        self.versions[key] = stored["version"]
        self._tell(f"Saved {len(self.rois)} ROI(s) and the painted mask as label set '{name}' of series "
                   f"{series_id} (reader {stored['reader']}).", ok=True)
        return True

    def load(self, client: Client, series_id: str, name: str = "default") -> bool:
        """Replace the drawing with the caller's own label set ``name`` of a series; False when there is none.

        Labels outside this labeler's vocabulary are refused (the drawing stays) with a message naming them.
        """
        try:
            me = client.whoami()["user"]
            found = [s for s in client.labels(series_id, reader=me) if s["name"] == name]
        except CloudMRIError as error:
            self._tell(f"Not loaded: {_problem(error) if isinstance(error, ServiceError) else error}")
            return False
        if not found:
            self.versions[(series_id, name)] = 0
            self._tell(f"You have no label set '{name}' on series {series_id} yet.", ok=True)
            return False
        stored = found[0]["rois"]
        unknown = sorted({roi.get("label") for roi in stored} - set(self.names))
        if unknown:
            self._tell(f"Not loaded: the label set uses label(s) {unknown} that are not in this vocabulary "
                       f"{self.names}: create the labeler with the project's vocabulary.")
            return False
        slices, ny, nx = self.shape
        painted = np.zeros((slices, ny * nx), np.uint8)
        shapes = []
        for roi in stored:
            if roi["kind"] != "mask":
                shapes.append(roi)
                continue
            runs = np.asarray(roi["runs"], np.int64).reshape(-1, 2)
            for start, length in runs:
                painted[roi["slice"], start:start + length] = self.names.index(roi["label"]) + 1
        with self.hold_sync():
            self.rois, self.mask, self.selected = shapes, painted.tobytes(), -1
        self.versions[(series_id, name)] = found[0]["version"]
        self._tell(f"Loaded label set '{name}' of series {series_id}: {len(shapes)} ROI(s).", ok=True)
        return True

    def _remember(self, change) -> None:
        if self._restoring:
            return
        rois = change["old"] if change["name"] == "rois" else self.rois
        mask = change["old"] if change["name"] == "mask" else self.mask
        self._history = [*self._history[-(UNDO_DEPTH - 1):], (rois, mask)]
        self.can_undo = True

    def _tell(self, text: str, ok: bool = False) -> None:
        """Show ``text`` under the image: a problem (the default) or, with ``ok``, a plain report."""
        with self.hold_sync():
            self.message_ok, self.message = ok, text

    def _on_message(self, _widget, content: dict[str, Any], _buffers) -> None:
        if content.get("event") == "undo":
            self.undo()

    @traitlets.validate("rois")
    def _valid_rois(self, proposal) -> list[dict]:
        slices, ny, nx = self.shape
        kept, dropped = [], []
        for number, roi in enumerate(proposal.value):
            if set(roi) != {"slice", "label", "kind", "points"}:
                raise traitlets.TraitError(f"ROI {number} has keys {sorted(roi)}: an ROI is "
                                           "{'slice', 'label', 'kind', 'points'}")
            if roi["kind"] not in KINDS:
                raise traitlets.TraitError(f"ROI {number} is a {roi['kind']!r}: the kinds are {list(KINDS)}")
            if roi["label"] not in self.names:
                raise traitlets.TraitError(f"ROI {number} has label {roi['label']!r}, which is not in the "
                                           f"vocabulary {self.names}")
            if not (isinstance(roi["slice"], int) and 0 <= roi["slice"] < slices):
                raise traitlets.TraitError(f"ROI {number} is on slice {roi['slice']!r}, outside 0…{slices - 1}")
            try:
                points = np.asarray(roi["points"], np.float64).reshape(-1, 2)
            except (TypeError, ValueError):
                raise traitlets.TraitError(f"ROI {number} has points {roi['points']!r}: give [[x, y], …] in "
                                           "image pixels") from None
            needed = 3 if roi["kind"] == "polygon" else 2
            if len(points) < needed or (roi["kind"] != "polygon" and len(points) != 2):
                raise traitlets.TraitError(f"ROI {number} ({roi['kind']}) has {len(points)} point(s): a polygon "
                                           "needs at least 3 vertices, a rectangle or ellipse 2 corners")
            if not np.isfinite(points).all():
                raise traitlets.TraitError(f"ROI {number} has a point that is not a finite number")
            clamped = np.clip(points, 0, [nx, ny])
            if not (clamped == points).all():
                # Drawn partly or wholly outside the image: keep what lies on it, or drop it when nothing does.
                if not rasterize(roi["kind"], clamped, ny, nx).any():
                    dropped.append(number)
                    continue
                roi = {**roi, "points": clamped.tolist()}
            kept.append(roi)
        if dropped:
            self._tell(f"ROI(s) {dropped} lay outside the {nx} x {ny} image and were not kept; points off "
                       "the image are moved to its edge.")
        return kept

    @traitlets.validate("mask")
    def _valid_mask(self, proposal) -> bytes:
        value = bytes(proposal.value)
        expected = math.prod(self.shape)
        if len(value) != expected:
            raise traitlets.TraitError(f"the painted mask has {len(value)} bytes, the image {self.shape} needs "
                                       f"{expected} (uint8 per pixel)")
        top = max(value, default=0)
        if top > len(self.vocabulary):
            raise traitlets.TraitError(f"the painted mask holds label value {top}, but the vocabulary has only "
                                       f"{len(self.vocabulary)} label(s)")
        return value

    @traitlets.validate("label")
    def _valid_label(self, proposal) -> str:
        if proposal.value not in self.names:
            raise traitlets.TraitError(f"label {proposal.value!r} is not in the vocabulary {self.names}")
        return proposal.value

    @traitlets.validate("slice")
    def _valid_slice(self, proposal) -> int:
        if not 0 <= proposal.value < self.shape[0]:
            raise traitlets.TraitError(f"slice {proposal.value} is outside 0…{self.shape[0] - 1}")
        return proposal.value

    @traitlets.validate("brush_radius", "window", "size")
    def _valid_positive(self, proposal):
        if not proposal.value > 0:
            raise traitlets.TraitError(f"{proposal.trait.name} must be positive, got {proposal.value}")
        return proposal.value


def _problem(error: ServiceError) -> str:
    """The service's refusal in words, with what to do; the drawing is never touched by a refusal."""
    detail = error.detail.get("message", error.detail) if isinstance(error.detail, dict) else error.detail
    if error.status == 401:
        return (f"the service did not accept your token (401: {detail}). Your drawing is kept here: get a new "
                "token (log in to the hub again, or `cloudmri service token create … --save`) and save again "
                "with a new client.")
    if error.status == 403:
        return f"the service refused (403: {detail}): your role needs the 'label' scope. Your drawing is kept."
    return f"the service answered {error.status}: {detail}. Your drawing is kept here."
