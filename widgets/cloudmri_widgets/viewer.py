"""An image viewer for MRI volumes in the notebook: slices, window/level, zoom, phase, comparison, profiles.

The volume is sent to the browser once, as float32 bytes; everything that happens per frame (window/level
dragging, scrolling, zooming, difference maps, line profiles) is computed by the widget's ES module
(``viewer.js``) in the browser. The kernel only hears of the result (``slice``, ``window``, ``level`` …) when
an interaction ends.

Example:
    >>> import numpy as np
    >>> from cloudmri_widgets import Viewer
    >>> volume = np.random.default_rng(0).standard_normal((8, 64, 64)).astype(np.complex64)
    >>> viewer = Viewer([volume, 0.9 * volume], titles=["SENSE", "CS"])
    >>> viewer.slice = 3
    >>> viewer.window, viewer.level = 2.0, 1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anywidget
import numpy as np
import traitlets

from cloudmri_widgets.esm import es_module

if TYPE_CHECKING:
    from cloudmri_kernel.client import Client

__all__ = ["Viewer", "MAX_BYTES"]

#: The most bytes of image data (magnitude plus phase, all series) one viewer sends to the browser; larger
#: volumes are refused with a message to crop or pick slices first, rather than stalling the notebook.
MAX_BYTES = 1 << 30

_DEFAULT_DIMS = ("repetition", "coil")
_MODES = ("magnitude", "phase")
_TOOLS = ("window", "pan", "profile")


def _as_volume(data, name: str) -> np.ndarray:
    """One series as a numeric array of at least (y, x), with a message for people when it is not."""
    try:
        array = np.asarray(data)
    except Exception as error:
        raise TypeError(f"{name} is not an array ({type(data).__name__}): pass a numpy array") from error
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise TypeError(f"{name} has dtype {array.dtype}: the viewer shows numeric (real or complex) arrays")
    if array.ndim < 2:
        raise ValueError(f"{name} has shape {array.shape}: the viewer needs an image (y, x), a volume "
                         "(slices, y, x), or extra leading dimensions such as (repetitions, slices, y, x)")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}): there is nothing to show")
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        raise ValueError(f"{name} holds {bad} NaN or infinite value(s) of {array.size}: replace them first, "
                         "e.g. np.nan_to_num(data), so that window/level and differences stay meaningful")
    return array if array.ndim >= 3 else array[np.newaxis]


def _percentile_window(values: np.ndarray, low: float, high: float) -> list[float]:
    """``[window, level]`` spanning the given percentiles of ``values`` (never a zero-width window)."""
    lo, hi = (float(v) for v in np.percentile(values, [low, high]))
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    width = hi - lo if hi > lo else max(abs(hi), 1.0)
    return [width, (hi + lo) / 2 if hi > lo else lo]


class Viewer(anywidget.AnyWidget):
    """An interactive viewer of one or more image volumes of the same shape, linked side by side.

    Each series is a real or complex array ``(y, x)``, ``(slices, y, x)`` or ``(*extra, slices, y, x)``
    where the extra leading dimensions are named by ``dims`` (default repetition, then coil). Complex data
    can be shown as magnitude or phase; real data are shown as they are (signed). In the browser: the mouse
    wheel scrolls slices (Ctrl+wheel zooms); a left drag with the *W/L* tool changes the window (right =
    wider) and level (down = higher); *Pan* drags the image; *Profile* draws a line whose values are
    plotted under the images. All panels share slice, window/level, zoom and pan. With two or more series,
    *Difference* adds a panel per series showing it minus the first one (grey = 0, ±window/2 = white/black).

    Args:
        data: one array, or a list of arrays of the same shape to compare.
        titles: a title per series; default "series 1", "series 2" …
        dims: names of the extra leading dimensions, outermost first.
        window: initial window width; default the 0.5–99.5 percentile range of the magnitude.
        level: initial window centre; default the middle of that range.
        presets: extra window/level presets, ``{"name": (window, level)}``, besides "auto" and "full".
        size: the longest side of each image panel on screen, in CSS pixels.

    Raises:
        TypeError: a series is not a numeric array.
        ValueError: a series is empty, not at least 2-D, holds NaN/inf, or the series' shapes differ.
    """

    _esm = es_module("viewer.js")
    _css = Path(__file__).with_name("viewer.css")

    magnitude = traitlets.Bytes(help="float32 magnitude (real data: the values), all series, C order").tag(sync=True)
    phase = traitlets.Bytes(help="float32 phase in radians, all series, C order; empty for real data").tag(sync=True)
    shape = traitlets.List(traitlets.Int(), help="the shape of one series, e.g. [64, 256, 256]").tag(sync=True)
    dims = traitlets.List(traitlets.Unicode(), help="names of the leading dimensions before slice").tag(sync=True)
    titles = traitlets.List(traitlets.Unicode(), help="one title per series").tag(sync=True)
    is_complex = traitlets.Bool(False, help="whether phase is available").tag(sync=True)
    ranges = traitlets.List(traitlets.List(traitlets.Float()),
                            help="[min, max] of the magnitude per series").tag(sync=True)

    slice = traitlets.Int(0, help="the slice shown (0-based)").tag(sync=True)
    indices = traitlets.List(traitlets.Int(), help="the index along each of `dims`").tag(sync=True)
    window = traitlets.Float(1.0, help="window width (magnitude units)").tag(sync=True)
    level = traitlets.Float(0.5, help="window centre (magnitude units)").tag(sync=True)
    presets = traitlets.Dict(help='window/level presets, {"name": [window, level]}').tag(sync=True)
    mode = traitlets.Enum(_MODES, "magnitude", help="magnitude or phase (complex data only)").tag(sync=True)
    tool = traitlets.Enum(_TOOLS, "window", help="what a left drag does: window, pan or profile").tag(sync=True)
    zoom = traitlets.Float(1.0, help="magnification over the fitted size").tag(sync=True)
    pan = traitlets.List(traitlets.Float(), [0.0, 0.0], minlen=2, maxlen=2,
                         help="image offset in image pixels, [x, y]").tag(sync=True)
    difference = traitlets.Bool(False, help="show each series minus the first").tag(sync=True)
    profile = traitlets.List(traitlets.Float(), [], help="line profile [x0, y0, x1, y1] in image pixels, "
                             "pixel (row r, column c) covering [c, c+1) x [r, r+1); empty for none").tag(sync=True)
    size = traitlets.Int(384, help="longest side of each panel on screen, CSS pixels").tag(sync=True)

    def __init__(self, data, titles: Sequence[str] | None = None, dims: Sequence[str] | None = None,
                 window: float | None = None, level: float | None = None,
                 presets: dict[str, Sequence[float]] | None = None, size: int = 384, **kwargs):
        series = list(data) if isinstance(data, list | tuple) else [data]
        if not series:
            raise ValueError("no series given: pass an array, or a list of arrays to compare")
        volumes = [_as_volume(item, f"series {i + 1}" if len(series) > 1 else "the image")
                   for i, item in enumerate(series)]
        shapes = {v.shape for v in volumes}
        if len(shapes) > 1:
            listed = ", ".join(str(tuple(v.shape)) for v in volumes)
            raise ValueError(f"series to compare must have the same shape, got {listed}: resample or crop them")
        if titles is None:
            titles = [f"series {i + 1}" for i in range(len(volumes))]
        titles = [str(t) for t in titles]
        if len(titles) != len(volumes):
            raise ValueError(f"{len(titles)} title(s) for {len(volumes)} series: give one title per series")
        shape = volumes[0].shape
        extra = len(shape) - 3
        if dims is None:
            dims = [*_DEFAULT_DIMS[:extra], *(f"axis {i}" for i in range(len(_DEFAULT_DIMS), extra))]
        dims = [str(d) for d in dims]
        if len(dims) != extra:
            raise ValueError(f"{len(dims)} dimension name(s) {dims} for shape {tuple(shape)}, which has {extra} "
                             "dimension(s) before (slices, y, x)")
        is_complex = any(np.iscomplexobj(v) for v in volumes)
        count = math.prod(shape) * len(volumes)
        needed = count * 4 * (2 if is_complex else 1)
        if needed > MAX_BYTES:
            raise ValueError(f"{len(volumes)} series of shape {tuple(shape)} need {needed / 2**20:.0f} MiB in the "
                             f"browser, more than {MAX_BYTES / 2**20:.0f} MiB: crop, or pick slices or coils first")

        magnitude = np.stack([np.abs(v) if is_complex else v for v in volumes]).astype("<f4", copy=False)
        phase = np.stack([np.angle(v) for v in volumes]).astype("<f4") if is_complex else None
        auto = _percentile_window(magnitude, 0.5, 99.5)
        full = _percentile_window(magnitude, 0, 100)
        all_presets = {"auto": auto, "full": full}
        for name, (w, lvl) in (presets or {}).items():
            all_presets[str(name)] = [float(w), float(lvl)]
        super().__init__(
            magnitude=np.ascontiguousarray(magnitude).tobytes(),
            phase=b"" if phase is None else np.ascontiguousarray(phase).tobytes(),
            shape=list(shape), dims=dims, titles=titles, is_complex=is_complex,
            ranges=[[float(m.min()), float(m.max())] for m in magnitude],
            indices=[0] * extra, presets=all_presets, size=size,
            window=auto[0] if window is None else window, level=auto[1] if level is None else level,
            **kwargs)

    @classmethod
    def from_series(cls, client: Client | None, series_id: str | Sequence[str], titles: Sequence[str] | None = None,
                    **kwargs) -> Viewer:
        """A viewer of one or more reconstructed series fetched from the Cloud-MRI service.

        Args:
            client: a :class:`cloudmri_kernel.client.Client`; None for the notebook's default client.
            series_id: a series ID, or a list of them to compare side by side.
            titles: a title per series; default the series IDs.
            **kwargs: further :class:`Viewer` arguments.
        """
        if client is None:
            from cloudmri_kernel.notebook import default_client
            client = default_client()
        ids = [series_id] if isinstance(series_id, str) else list(series_id)
        volumes = [client.images(sid) for sid in ids]
        return cls(volumes, titles=list(ids) if titles is None else titles, **kwargs)

    @property
    def series_count(self) -> int:
        return len(self.titles)

    def volume(self, mode: str | None = None) -> np.ndarray:
        """The data as sent, ``(series, *shape)`` float32: magnitude, or phase with ``mode="phase"``."""
        mode = mode or self.mode
        if mode == "phase" and not self.is_complex:
            raise ValueError("the data are real: there is no phase to show")
        raw = self.phase if mode == "phase" else self.magnitude
        return np.frombuffer(raw, dtype="<f4").reshape(self.series_count, *self.shape)

    def profile_values(self) -> np.ndarray:
        """The current line profile as the browser plots it, ``(series, points)``, in the current mode.

        Points are spaced one pixel apart from one end of ``profile`` to the other (both included) and
        sampled bilinearly at the current slice and indices.
        """
        if len(self.profile) != 4:
            raise ValueError("no line profile drawn: pick the Profile tool and drag across the image, or set "
                             "viewer.profile = [x0, y0, x1, y1]")
        images = self.volume()[(slice(None), *self.indices, self.slice)]
        x0, y0, x1, y1 = self.profile
        count = max(2, math.ceil(math.hypot(x1 - x0, y1 - y0)) + 1)
        t = np.linspace(0.0, 1.0, count)
        return np.stack([_bilinear(image, x0 + t * (x1 - x0), y0 + t * (y1 - y0)) for image in images])

    @traitlets.validate("slice")
    def _valid_slice(self, proposal):
        count = self.shape[-3] if self.shape else 1
        if not 0 <= proposal.value < count:
            raise traitlets.TraitError(f"slice {proposal.value} is outside 0…{count - 1}")
        return proposal.value

    @traitlets.validate("indices")
    def _valid_indices(self, proposal):
        extent = self.shape[:-3]
        value = list(proposal.value)
        if len(value) != len(extent) or any(not 0 <= i < n for i, n in zip(value, extent, strict=True)):
            raise traitlets.TraitError(f"indices {value} do not fit dimensions {self.dims} of sizes {extent}")
        return value

    @traitlets.validate("window", "zoom", "size")
    def _valid_positive(self, proposal):
        if not proposal.value > 0:
            raise traitlets.TraitError(f"{proposal.trait.name} must be positive, got {proposal.value}")
        return proposal.value

    @traitlets.validate("mode")
    def _valid_mode(self, proposal):
        if proposal.value == "phase" and not self.is_complex:
            raise traitlets.TraitError("the data are real: there is no phase to show")
        return proposal.value


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Values at continuous positions, pixel centres at +0.5, clamped at the edges (as viewer.js does)."""
    rows, cols = image.shape
    u = np.clip(x - 0.5, 0, cols - 1)
    v = np.clip(y - 0.5, 0, rows - 1)
    c0 = np.floor(u).astype(int)
    r0 = np.floor(v).astype(int)
    c1 = np.minimum(c0 + 1, cols - 1)
    r1 = np.minimum(r0 + 1, rows - 1)
    fu, fv = u - c0, v - r0
    top = image[r0, c0] * (1 - fu) + image[r0, c1] * fu
    bottom = image[r1, c0] * (1 - fu) + image[r1, c1] * fu
    return (top * (1 - fv) + bottom * fv).astype(np.float32)
