"""The viewer without a browser: what crosses to the browser, what is refused, and state coming back."""

from __future__ import annotations

import numpy as np
import pytest
import traitlets
from cloudmri_widgets import Viewer
from ipywidgets.widgets.widget import _remove_buffers


def _complex_volume(slices=3, rows=8, cols=6) -> np.ndarray:
    rng = np.random.default_rng(1)
    return (rng.standard_normal((slices, rows, cols)) + 1j * rng.standard_normal((slices, rows, cols))).astype(
        np.complex64)


def test_complex_volume_crosses_as_float32_magnitude_and_phase_bytes():
    volume = _complex_volume()
    viewer = Viewer(volume)

    state, paths, buffers = _remove_buffers(viewer.get_state())
    assert sorted(paths) == [["magnitude"], ["phase"]]
    assert "magnitude" not in state and "phase" not in state  # bytes go as binary buffers, never as JSON
    assert [len(b) for b in buffers] == [volume.size * 4] * 2
    magnitude = np.frombuffer(viewer.magnitude, "<f4").reshape(1, 3, 8, 6)
    phase = np.frombuffer(viewer.phase, "<f4").reshape(1, 3, 8, 6)
    np.testing.assert_allclose(magnitude[0], np.abs(volume), rtol=1e-6)
    np.testing.assert_allclose(phase[0], np.angle(volume), atol=1e-6)
    assert viewer.shape == [3, 8, 6] and viewer.dims == [] and viewer.indices == []
    assert viewer.is_complex and viewer.titles == ["series 1"]
    assert viewer.ranges == [[pytest.approx(float(np.abs(volume).min())), pytest.approx(float(np.abs(volume).max()))]]


def test_real_image_is_shown_signed_without_phase():
    image = np.array([[-2.0, 0.0], [1.0, 6.0]])
    viewer = Viewer(image)

    assert viewer.shape == [1, 2, 2]  # a single image is a volume of one slice
    assert not viewer.is_complex and viewer.phase == b""
    np.testing.assert_array_equal(np.frombuffer(viewer.magnitude, "<f4"), [-2, 0, 1, 6])
    assert viewer.ranges == [[-2.0, 6.0]]
    assert viewer.presets["full"] == [8.0, 2.0]
    with pytest.raises(traitlets.TraitError, match="real"):
        viewer.mode = "phase"


def test_default_window_spans_the_robust_range_and_presets_add_up():
    values = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    viewer = Viewer(values, presets={"brain": (80, 40)})

    low, high = np.percentile(values, [0.5, 99.5])
    assert viewer.window == pytest.approx(high - low)
    assert viewer.level == pytest.approx((high + low) / 2)
    assert viewer.presets == {"auto": [pytest.approx(high - low), pytest.approx((high + low) / 2)],
                              "full": [999.0, 499.5], "brain": [80.0, 40.0]}
    assert Viewer(values, window=10, level=3).window == 10


def test_extra_leading_dimensions_are_named_and_indexed():
    data = np.zeros((2, 4, 3, 5, 5), np.float32)  # repetitions, coils, slices, y, x
    viewer = Viewer(data)
    assert viewer.dims == ["repetition", "coil"] and viewer.indices == [0, 0]
    assert Viewer(data[0], dims=["echo"]).dims == ["echo"]

    viewer.indices = [1, 3]
    with pytest.raises(traitlets.TraitError, match="do not fit"):
        viewer.indices = [2, 0]
    with pytest.raises(ValueError, match="dimension name"):
        Viewer(data, dims=["coil"])


def test_comparison_stacks_series_in_order_with_titles():
    a = _complex_volume()
    viewer = Viewer([a, 2 * a], titles=["SENSE", "CS"])

    magnitude = viewer.volume("magnitude")
    assert magnitude.shape == (2, 3, 8, 6)
    np.testing.assert_allclose(magnitude[1], 2 * np.abs(a), rtol=1e-6)
    assert viewer.titles == ["SENSE", "CS"]
    assert viewer.ranges[1][1] == pytest.approx(2 * viewer.ranges[0][1])


def test_a_real_series_beside_a_complex_one_gets_magnitude_and_phase():
    real = np.full((2, 4, 4), -3.0)
    viewer = Viewer([real, _complex_volume(2, 4, 4)])
    assert viewer.is_complex
    np.testing.assert_allclose(viewer.volume("magnitude")[0], 3.0)
    np.testing.assert_allclose(viewer.volume("phase")[0], np.pi)


@pytest.mark.parametrize(("data", "error", "message"), [
    (np.zeros(5), ValueError, r"shape \(5,\).*\(y, x\)"),
    (np.zeros((0, 4, 4)), ValueError, "empty"),
    (np.array([["a", "b"]]), TypeError, "dtype"),
    ([], ValueError, "no series"),
    (np.array([[1.0, np.nan], [np.inf, 0.0]]), ValueError, "2 NaN or infinite.*nan_to_num"),
])
def test_bad_input_is_refused_with_a_message_that_says_what_to_do(data, error, message):
    with pytest.raises(error, match=message):
        Viewer(data)


def test_comparison_of_different_shapes_names_the_shapes():
    with pytest.raises(ValueError, match=r"same shape, got \(2, 4, 4\), \(2, 4, 5\)"):
        Viewer([np.zeros((2, 4, 4)), np.zeros((2, 4, 5))])
    with pytest.raises(ValueError, match="series 2 holds 1 NaN"):
        Viewer([np.zeros((2, 2)), np.array([[0, np.nan], [0, 0]])])
    with pytest.raises(ValueError, match="1 title"):
        Viewer([np.zeros((2, 2)), np.zeros((2, 2))], titles=["only one"])


def test_state_from_the_browser_updates_the_traits_and_is_validated():
    viewer = Viewer(_complex_volume())
    # What the comm delivers when the browser calls save_changes() after a drag and a scroll.
    viewer.set_state({"slice": 2, "window": 3.5, "level": 1.25, "zoom": 2.0, "pan": [1.5, -2.0],
                      "mode": "phase", "profile": [0.5, 0.5, 5.5, 7.5]})
    assert (viewer.slice, viewer.window, viewer.level, viewer.mode) == (2, 3.5, 1.25, "phase")
    with pytest.raises(traitlets.TraitError, match="outside 0…2"):
        viewer.slice = 3
    with pytest.raises(traitlets.TraitError, match="window must be positive"):
        viewer.window = 0


def test_profile_values_interpolate_between_pixel_centres():
    image = np.array([[0.0, 10.0, 20.0], [30.0, 40.0, 50.0]], np.float32)
    viewer = Viewer(image)
    viewer.profile = [0.5, 0.5, 2.5, 0.5]  # along the first row, centre to centre
    np.testing.assert_allclose(viewer.profile_values(), [[0, 10, 20]])
    viewer.profile = [1.0, 0.5, 1.0, 1.5]  # half way between columns 0 and 1, down one row
    np.testing.assert_allclose(viewer.profile_values(), [[5, 35]])
    viewer.profile = []
    with pytest.raises(ValueError, match="no line profile"):
        viewer.profile_values()


def test_too_large_volumes_are_refused_before_anything_is_sent(monkeypatch):
    monkeypatch.setattr("cloudmri_widgets.viewer.MAX_BYTES", 1000)
    with pytest.raises(ValueError, match="crop"):
        Viewer(np.zeros((4, 16, 16), np.complex64))


class _FakeClient:
    def __init__(self, arrays):
        self.arrays, self.asked = arrays, []

    def images(self, series_id, index=None):
        self.asked.append(series_id)
        return self.arrays[series_id]


def test_from_series_fetches_each_series_through_the_client():
    client = _FakeClient({"s1": np.ones((2, 4, 4), np.float32), "s2": np.full((2, 4, 4), 2, np.float32)})
    viewer = Viewer.from_series(client, ["s1", "s2"])
    assert client.asked == ["s1", "s2"]
    assert viewer.titles == ["s1", "s2"]
    np.testing.assert_array_equal(viewer.volume()[:, 0, 0, 0], [1, 2])
    assert Viewer.from_series(client, "s1", titles=["zero-filled"]).titles == ["zero-filled"]


def test_from_series_without_a_client_uses_the_notebook_default(monkeypatch):
    client = _FakeClient({"s1": np.ones((4, 4), np.float32)})
    monkeypatch.setattr("cloudmri_kernel.notebook.default_client", lambda: client)
    assert Viewer.from_series(None, "s1").shape == [1, 4, 4]
