"""Every tutorial runs through with papermill (small parameters) and records its exercises' values."""

from __future__ import annotations

import math

import nbformat
import papermill
import pytest
from traitlets.config import Config

from cloudmri_kernel.teach import TUTORIALS_DIR, list_tutorials, read_records
from tests.conftest import GRAPPA_FILE

SMALL = {
    "01_mrd_files": {"matrix": 32, "coils": 2},
    "02_kspace_to_image": {"matrix": 32, "coils": 2},
    "03_parallel_imaging": {"matrix": 64, "coils": 4, "accel": 2, "calib": 16, "sense_iterations": 5},
    "04_compressed_sensing": {"matrix": 64, "coils": 4, "accel": 3, "calib": 16, "n_lambdas": 3, "max_iter": 15,
                              "lambda_min": 0.001, "lambda_max": 0.02},
    "05_image_quality": {"matrix": 64, "coils": 4, "slices": 2},
    "06_secure_data_platform": {"matrix": 32, "coils": 2},
    "07_ledger": {"datasets": 4, "matrix": 32, "leaf": 1, "singles": 2},
    "08_deep_learning_and_federated": {"matrix": 32, "train_samples": 8, "epochs": 1, "test_samples": 2,
                                       "phantom_matrix": 32, "rounds": 2, "site_train": 4, "site_test": 2},
    "09_scaling_with_dask": {"matrix": 32, "coils": 2, "slices": 2, "sense_iterations": 3},
}
RECORDS = {
    "01_mrd_files": {"readout_oversampling", "acquisitions", "net_acceleration", "kspace_peak_offset", "valid"},
    "02_kspace_to_image": {"energy_ratio", "crop_equivalence_nrmse", "fov_error_fits", "fov_error_wraps",
                           "noise_std", "background_rss", "background_adaptive", "nrmse_rss", "nrmse_adaptive"},
    "03_parallel_imaging": {"sense_best_iterations", "nrmse_zero_filled", "nrmse_sense", "ghosts_zero_filled",
                            "ghosts_grappa", "nrmse_grappa", "real_data"},
    "04_compressed_sensing": {"nrmse_10_percent_wavelets", "best_lambda_wavelet", "best_nrmse_wavelet",
                              "best_lambda_tv", "best_nrmse_tv", "nrmse_sense", "discrepancy_lambda",
                              "discrepancy_nrmse"},
    "05_image_quality": {"ssim_sense", "psnr_sense", "nmse_sense", "ssim_zero_filled", "nmse_wrong_scale",
                         "nmse_rescaled", "ssim_fixed_range", "ssim_volume_range", "ssim_per_slice_range",
                         "ssim_sense_masked", "ssim_zero_filled_masked", "psnr_identical"},
    "06_secure_data_platform": {"sha256_matches", "hex_digits_changed", "status_without_grant", "status_after_revoke",
                                "bob_refused", "audit_events"},
    "07_ledger": {"proof_length", "root_matches", "verified", "tampered_detected", "forged_proof_accepted",
                  "gas_per_batch", "gas_ratio", "daily_cost_ratio"},
    "08_deep_learning_and_federated": {"parameters", "dl_beats_zero_filled", "ssim_dl", "ssim_zero_filled",
                                       "phantom_ssim", "tampered_refused", "federated_ssim", "local_ssim",
                                       "failed_site", "failed_reason"},
    "09_scaling_with_dask": {"images_allclose", "relative_difference", "compute_per_byte_ratio", "speedup_sense",
                             "efficiency_sense"},
}
REAL_DATA_RECORDS = {"real_ghosts_zero_filled", "real_ghosts_grappa", "real_ghosts_sense"}


def execute(name: str, tmp_path, **overrides) -> dict:
    """Run a tutorial in a scratch folder; papermill raises on any cell error. Returns its records."""
    output = tmp_path / f"{name}.ipynb"
    # Unix sockets, as the class runner uses: TCP ports of kernels started at once (xdist) can collide.
    ipc = Config({"KernelManager": {"transport": "ipc"}})
    papermill.execute_notebook(str(TUTORIALS_DIR / f"{name}.ipynb"), str(output),
                               parameters={**SMALL[name], **overrides}, kernel_name="python3",
                               progress_bar=False, cwd=str(tmp_path), execution_timeout=300, config=ipc)
    executed = nbformat.read(str(output), as_version=4)
    figures = sum("image/png" in o.get("data", {}) for c in executed.cells for o in c.get("outputs", []))
    assert figures >= 1, "every tutorial draws figures"
    return read_records(output)


def test_the_tutorials_are_distributed_clean():
    """Committed without outputs, on the python3 kernel, with a parameters cell and stable cell ids."""
    tutorials = list_tutorials()
    assert [t.name for t in tutorials] == list(SMALL)
    for tutorial in tutorials:
        notebook = nbformat.read(str(tutorial.path), as_version=4)
        nbformat.validate(notebook)
        assert notebook.metadata.kernelspec.name == "python3"
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{tutorial.name}: clear outputs"
        assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
        assert set(SMALL[tutorial.name]) <= set(tutorial.parameters)
        assert all(p.type in ("int", "float", "str") and p.help for p in tutorial.parameters.values())
        assert len({c.id for c in notebook.cells}) == len(notebook.cells)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SMALL))
def test_tutorial_runs_with_small_parameters(name, tmp_path):
    records = execute(name, tmp_path)
    expected = RECORDS[name] | (REAL_DATA_RECORDS if name == "03_parallel_imaging" and GRAPPA_FILE.exists() else set())
    assert set(records) == expected
    if name == "03_parallel_imaging":
        assert records["real_data"] is GRAPPA_FILE.exists()
        assert records["ghosts_grappa"] < records["ghosts_zero_filled"] / 10
    if name == "05_image_quality":
        assert records["psnr_identical"] == math.inf
    if name == "06_secure_data_platform":
        assert records["sha256_matches"] is True
        refusals = (records["status_without_grant"], records["status_after_revoke"], records["bob_refused"])
        assert refusals == (403, 403, 2)
    if name == "07_ledger":
        assert records["proof_length"] == 2  # a batch of 4
        assert records["root_matches"] and records["verified"] and records["tampered_detected"]
        assert records["forged_proof_accepted"] is False
        assert 1.9 < records["gas_ratio"] < 2.1  # two single anchors against one batch of two
    if name == "08_deep_learning_and_federated":
        assert records["parameters"] == 28931  # the shipped modl-synthetic: 5 convolutions of 32 features, and λ
        assert records["dl_beats_zero_filled"] is True and records["ssim_dl"] > records["ssim_zero_filled"]
        assert set(records["phantom_ssim"]) == {"dl", "sense", "cs-wavelet"}
        assert all(0 < value <= 1 for value in records["phantom_ssim"].values())
        assert records["tampered_refused"] is True
        sites = {"ruijin", "charite", "ucsf"}
        assert set(records["federated_ssim"]) == set(records["local_ssim"]) == sites
        assert records["failed_site"] == "offline-site" and "ConnectionError" in records["failed_reason"]
    if name == "09_scaling_with_dask":
        assert records["images_allclose"] is True and records["relative_difference"] < 1e-4
        assert records["compute_per_byte_ratio"] > 1


@pytest.mark.slow
def test_parallel_imaging_explains_a_missing_dataset(tmp_path):
    records = execute("03_parallel_imaging", tmp_path, dataset="no/such/scan.h5", sense_iterations=2)
    assert records["real_data"] is False and not set(records) & REAL_DATA_RECORDS
    executed = nbformat.read(str(tmp_path / "03_parallel_imaging.ipynb"), as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "The real scan is not here (dataset = 'no/such/scan.h5'), so section 4 is skipped" in printed
