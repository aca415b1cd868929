"""The reconstruction widget without a browser, against a real service process: the form generated from the
recipe schema, refused parameters, a job followed to the end and shown next to the zero-filled image, a
cancelled job, and an expired token; the service's jobs and series are checked afterwards."""

from __future__ import annotations

import time

import ipywidgets as widgets
import numpy as np
import pytest
from cloudmri_widgets import Reconstruct
from cloudmri_widgets.reconstruct import AUTO, quality_rows

from cloudmri_kernel.client import Client
from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from cloudmri_kernel.quality import compare, gradient_entropy, tenengrad
from cloudmri_kernel.recon.recipe import METHODS, CSWaveletRecipe


def _upload(widget_service, path, spec: PhantomSpec) -> str:
    with widget_service.client("alice") as client:
        return client.upload(write_phantom(path, spec))["id"]


@pytest.fixture(scope="module")
def dataset_id(widget_service, tmp_path_factory) -> str:
    """A one-slice phantom (32 x 32, 4 coils, R = 2 with 8 calibration lines)."""
    return _upload(widget_service, tmp_path_factory.mktemp("recon") / "slice.h5",
                   PhantomSpec(matrix=32, coils=4, accel=2, calib=8, oversampling=1, seed=101))


@pytest.fixture(scope="module")
def slab_id(widget_service, tmp_path_factory) -> str:
    """Sixteen slices of the same, so that a job runs for several slices and can be cancelled between them."""
    return _upload(widget_service, tmp_path_factory.mktemp("recon") / "slab.h5",
                   PhantomSpec(matrix=32, coils=4, accel=2, calib=8, oversampling=1, slices=16, seed=102))


def job_ids(client: Client) -> set[str]:
    return {j["id"] for j in client.jobs(limit=1000)}


def test_the_form_is_generated_from_the_recipe_schema(alice, dataset_id):
    form = Reconstruct(alice, dataset_id)
    assert form.dataset.value == dataset_id
    assert [value for _label, value in form.method.options] == [AUTO, *METHODS]
    assert form.fields == {} and form.recipe() is None  # auto: the service picks the recipe from the header

    form.method.value = "cs-wavelet"
    assert list(form.fields) == [name for name in CSWaveletRecipe.model_fields if name != "method"]
    assert isinstance(form.fields["lamda"], widgets.FloatText) and form.fields["lamda"].value == 0.005
    assert isinstance(form.fields["max_iter"], widgets.IntText)
    assert form.fields["max_iter"].description == "max_iter (≥ 1, ≤ 10000)"
    assert isinstance(form.fields["random_shift"], widgets.Checkbox) and form.fields["random_shift"].value
    assert form.fields["wavelet"].options == ("db2", "db4", "haar")
    assert form.parameters.children == tuple(form.fields.values())
    assert form.recipe() == CSWaveletRecipe().model_dump(mode="json")

    form.fields["wavelet"].value, form.fields["max_iter"].value = "haar", 7
    assert form.recipe() == CSWaveletRecipe(wavelet="haar", max_iter=7).model_dump(mode="json")

    form.method.value = "grappa"
    kernel = form.fields["kernel"]  # a (ky, kx) tuple: a row of integer boxes
    assert [type(box) for box in kernel.children[1:]] == [widgets.IntText, widgets.IntText]
    kernel.children[1].value = 3
    assert form.recipe()["kernel"] == [3, 5] and form.recipe()["method"] == "grappa"


def test_a_bad_parameter_gets_a_message_and_no_job_is_submitted(alice, dataset_id):
    before = job_ids(alice)
    form = Reconstruct(alice, dataset_id, method="cs-wavelet")
    form.fields["max_iter"].value = 0
    assert "max_iter: Input should be greater than or equal to 1" in form.problems.value  # at once, as typed
    form.fields["lamda"].value = -0.1

    assert form.run() is None
    assert form.status == "refused" and form.job_id == ""
    assert "Nothing was submitted" in form.message.value
    assert "max_iter: Input should be greater than or equal to 1" in form.message.value
    assert "lamda: Input should be greater than 0" in form.message.value
    assert job_ids(alice) == before

    form.fields["max_iter"].value, form.fields["lamda"].value = 100, 0.005
    assert form.problems.value == ""  # fixed: the message goes away


def test_the_result_is_shown_next_to_the_zero_filled_image_with_quality_figures(alice, dataset_id):
    form = Reconstruct(alice, dataset_id, method="sense", poll_interval=0.1)
    form.fields["maps"].value, form.fields["max_iter"].value = "lowres", 10

    job = form.run()

    assert job["status"] == "done" and job["recipe"]["method"] == "sense" and job["recipe"]["max_iter"] == 10
    assert alice.job(form.job_id)["status"] == "done"
    assert (form.status, form.series_id, form.progress.value) == ("done", job["series_id"], 100)
    series = {s["id"]: s["method"] for s in alice.series_of(dataset_id)}
    assert series == {form.series_id: "sense", form.zero_filled_id: "ifft"}  # an ifft job was run for it

    result, zero_filled = alice.images(form.series_id), alice.images(form.zero_filled_id)
    assert form.viewer.titles == ["zero-filled (ifft)", "sense"]
    np.testing.assert_allclose(form.viewer.volume("magnitude"), np.stack([zero_filled, result]), rtol=1e-6)
    assert form.result.children[0] is form.viewer
    (versus,) = compare(zero_filled, {"sense": result})
    assert form.metrics == quality_rows(zero_filled, result, "sense")
    assert form.metrics[1] == {"image": "sense", "ssim": pytest.approx(versus.ssim),
                               "psnr": pytest.approx(versus.psnr), "nmse": pytest.approx(versus.nmse),
                               "tenengrad": pytest.approx(tenengrad(result)),
                               "gradient_entropy": pytest.approx(gradient_entropy(result))}
    assert 0 < versus.ssim < 1 and np.isfinite(versus.psnr)
    assert f"{versus.ssim:.4f}" in form.result.children[1].value

    # A second method reuses the zero-filled series instead of reconstructing it again.
    zero_filled_id = form.zero_filled_id
    form.method.value = "cs-wavelet"
    form.fields["maps"].value, form.fields["max_iter"].value = "lowres", 20
    assert form.run()["status"] == "done"
    assert form.zero_filled_id == zero_filled_id and form.viewer.titles == ["zero-filled (ifft)", "cs-wavelet"]
    assert sorted(s["method"] for s in alice.series_of(dataset_id)) == ["cs-wavelet", "ifft", "sense"]


def test_cancel_stops_a_running_job_and_nothing_is_stored(alice, slab_id):
    form = Reconstruct(alice, slab_id, method="cs-wavelet", poll_interval=0.1)
    form.fields["maps"].value, form.fields["max_iter"].value = "lowres", 1000
    form.submit_button.click()  # the job is followed in a thread, as in the notebook
    deadline = time.monotonic() + 60
    while not (form.job_id and alice.job(form.job_id)["status"] == "running") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not form.cancel_button.disabled

    form.cancel_button.click()
    form.wait(120)

    assert alice.job(form.job_id)["status"] == "cancelled"
    assert form.status == "cancelled" and form.progress.bar_style == "warning"
    assert "was cancelled; nothing was stored" in form.message.value
    assert form.series_id == "" and form.viewer is None and alice.series_of(slab_id) == []
    assert form.cancel_button.disabled and not form.submit_button.disabled


def test_an_expired_token_gets_a_message_and_no_job(widget_service, alice, dataset_id):
    before = job_ids(alice)
    expired = widget_service.client("expired")
    form = Reconstruct(expired)
    assert "the token has expired" in form.message.value and form.dataset.options == ()

    form.client = alice
    form.refresh_datasets(dataset_id)
    form.method.value = "ifft"
    form.client = expired  # the token expires while the form is open
    assert form.run() is None
    assert form.status == "refused" and "the token has expired" in form.message.value
    assert form.dataset.value == dataset_id and form.method.value == "ifft"  # the choices are kept
    assert job_ids(alice) == before
