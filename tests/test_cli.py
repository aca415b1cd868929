"""The `cloudmri` command as a user runs it: real processes, exit codes, output files, one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cloudmri_kernel.mrd.reader import MRDFile
from tests.conftest import GRAPPA_FILE, TWIX_FILE, cpp_recon_summary, needs_shared_data

CLOUDMRI = [sys.executable, "-m", "cloudmri_kernel"]


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*CLOUDMRI, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)


def info_json(path: Path) -> dict:
    result = run("info", path, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_agrees_with_cpp(path: Path, tmp_path: Path) -> dict:
    """info/validate and the C++ reference library report the same matrix, coils and acquisitions."""
    summary = info_json(path)
    copy = tmp_path / f"cpp_{path.name}"
    shutil.copy(path, copy)
    cpp = cpp_recon_summary(copy)
    assert cpp["Encoding Matrix Size"] == "[{}, {}, {}]".format(*summary["encoded_matrix"])
    assert cpp["Reconstruction Matrix Size"] == "[{}, {}, {}]".format(*summary["recon_matrix"])
    assert cpp["Number of Channels"] == str(summary["coils"])
    assert cpp["Number of acquisitions"] == str(summary["acquisitions"])
    xml = tmp_path / f"{path.stem}.xml"
    xml.write_bytes(MRDFile(path).xml)
    parsed = subprocess.run(["ismrmrd_test_xml", str(xml)], capture_output=True, text=True, cwd=tmp_path)
    assert parsed.returncode == 0, parsed.stderr
    assert run("validate", path).returncode == 0
    return summary


def test_help_everywhere():
    for command in ([], ["ingest"], ["info"], ["validate"], ["anonymize"], ["phantom"], ["demo"],
                    ["config", "show"]):
        result = run(*command, "--help")
        assert result.returncode == 0 and "Usage" in result.stdout, command


def test_phantom_info_validate_agree_with_cpp_on_our_file(tmp_path):
    result = run("phantom", "-o", tmp_path / "p.h5", "--matrix", "64", "--coils", "6", "--accel", "2",
                 "--calib", "16", "--slices", "2", "--seed", "3")
    assert result.returncode == 0, result.stderr
    summary = assert_agrees_with_cpp(tmp_path / "p.h5", tmp_path)
    assert summary["encoded_matrix"] == [128, 64, 1] and summary["recon_matrix"] == [64, 64, 1]
    assert summary["coils"] == 6 and summary["slices"] == 2
    assert summary["acceleration"] == [2, 1] and summary["calibration_mode"] == "embedded"
    assert summary["noise_acquisitions"] == 2
    # per slice: 32 imaging lines + 8 calibration-only lines; plus 2 noise scans
    assert summary["acquisitions"] == 2 * 40 + 2
    assert summary["flags"]["IS_PARALLEL_CALIBRATION"] == 16
    assert summary["arrays"] == ["csm", "mask", "noise_covariance", "phantom"]


def test_info_validate_agree_with_cpp_on_its_own_file(cpp_phantom, tmp_path):
    summary = assert_agrees_with_cpp(cpp_phantom, tmp_path)
    assert summary["institution"] == "ISMRM Synthetic Imaging Lab"
    assert summary["repetitions"] == 2 and summary["noise_acquisitions"] == 1


@pytest.mark.parametrize("trajectory", ["radial", "spiral"])
def test_non_cartesian_phantoms(tmp_path, trajectory):
    out = tmp_path / f"{trajectory}.h5"
    assert run("phantom", "-o", out, "--matrix", "64", "--coils", "4", "--trajectory", trajectory).returncode == 0
    summary = info_json(out)
    assert summary["trajectory"] == trajectory
    assert run("validate", out).returncode == 0
    block = MRDFile(out).read_acquisitions()
    assert block.traj[-1].shape[1] == 2 and np.abs(block.traj[-1]).max() <= 0.5


@needs_shared_data
def test_info_on_the_real_grappa_scan():
    summary = info_json(GRAPPA_FILE)
    assert (summary["vendor"], summary["model"], summary["field_strength_t"]) == ("SIEMENS", "Skyra", 2.89362)
    assert summary["encoded_matrix"] == [384, 144, 1] and summary["recon_matrix"] == [192, 144, 1]
    assert summary["recon_fov_mm"] == [280.0, 210.0, 8.0]
    assert summary["coils"] == 14 and summary["acceleration"] == [3, 1]
    assert summary["calibration_mode"] == "embedded" and summary["acquisitions"] == 69
    assert summary["flags"]["IS_PARALLEL_CALIBRATION_AND_IMAGING"] == 16
    table = run("info", GRAPPA_FILE)
    assert "SIEMENS / Skyra" in table.stdout and "384 x 144 x 1" in table.stdout


@needs_shared_data
def test_real_twix_file_ingests_validates_and_summarizes(tmp_path):
    result = run("ingest", TWIX_FILE, "-o", tmp_path / "gre.h5", "--anonymize", "--site", "erlangen")
    assert result.returncode == 0, result.stderr
    assert "twix -> MRD" in result.stdout
    summary = info_json(tmp_path / "gre.h5")
    assert summary["vendor"] == "SIEMENS" and summary["acquisitions"] > 0
    assert run("validate", tmp_path / "gre.h5").returncode == 0


def test_ingest_and_anonymize_commands(cpp_phantom, tmp_path):
    result = run("ingest", cpp_phantom, "-o", tmp_path / "a.h5", "--anonymize", "--site", "s1")
    assert result.returncode == 0, result.stderr
    assert "de-identified: institutionName: remove" in result.stdout
    result = run("anonymize", cpp_phantom, "-o", tmp_path / "b.h5", "--site", "s1")
    assert result.returncode == 0 and "institutionName: remove" in result.stdout
    assert MRDFile(tmp_path / "b.h5").header.acquisitionSystemInformation.institutionName is None


def test_validate_json_and_exit_codes(cpp_phantom, tmp_path):
    result = run("validate", cpp_phantom, "--json")
    assert result.returncode == 0 and json.loads(result.stdout) == {
        "file": str(cpp_phantom), "valid": True, "findings": []}
    bad = tmp_path / "cut.h5"
    bad.write_bytes(cpp_phantom.read_bytes()[:3000])
    result = run("validate", bad, "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["valid"] is False
    assert "truncated or damaged HDF5" in report["findings"][0]["message"]


@pytest.mark.parametrize("args, code, message", [
    (["info", "missing.h5"], 2, "missing.h5: no such file"),
    (["validate", "missing.h5"], 2, "missing.h5: no such file"),
    (["ingest", "missing.dat", "-o", "x.h5"], 2, "missing.dat: no such file"),
    (["info", "notes.txt"], 1, "notes.txt: cannot be opened as MRD: not an HDF5 file"),
    (["ingest", "notes.txt", "-o", "x.h5"], 2, "notes.txt: unknown raw-data format"),
    (["ingest", "cut.dat", "-o", "x.h5"], 1, "cut.dat"),
    (["ingest", "k.npy", "-o", "x.h5"], 1, "k-space must be complex"),
    (["phantom", "-o", "x.h5", "--matrix", "15"], 2, "matrix"),
    (["phantom", "-o", "x.h5", "--pattern", "zigzag"], 2, "zigzag"),
    (["anonymize", "notes.txt", "-o", "x.h5", "--policy", "nope.yaml"], 2, "nope.yaml: no such policy file"),
])
def test_expected_errors_are_one_line_without_traceback(tmp_path, args, code, message):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "cut.dat").write_bytes(b"\x00" * 2000)
    np.save(tmp_path / "k.npy", np.zeros((2, 8, 8), np.float32))
    (tmp_path / "k.yaml").write_text("fov_mm: [1, 1, 1]\n")
    result = run(*args, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert message in " ".join(result.stderr.split())
    assert not (tmp_path / "x.h5").exists()


def test_config_show_lists_every_setting(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("site: charite\n")
    env = {**os.environ, "CLOUDMRI_CONFIG": str(config), "CLOUDMRI_READ_CHUNK_MB": "8"}
    result = subprocess.run([*CLOUDMRI, "config", "show", "--json"], capture_output=True, text=True, env=env)
    values = json.loads(result.stdout)
    assert values["site"] == "charite" and values["read_chunk_mb"] == 8
    config.write_text("stie: typo\n")
    result = subprocess.run([*CLOUDMRI, "config", "show"], capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "stie" in result.stderr and "Traceback" not in result.stderr


def test_demo_reconstructs_the_phantom(tmp_path):
    result = run("demo", "--out", tmp_path / "demo", "--matrix", "64")
    assert result.returncode == 0, result.stderr
    nrmse = float(result.stdout.split("NRMSE against the ground truth:")[1])
    assert nrmse < 0.05
    with MRDFile(tmp_path / "demo" / "phantom_recon.h5") as mrd:
        headers, images, _ = mrd.read_images("image_0")
    assert images.shape == (1, 1, 1, 64, 64) and headers[0]["matrix_size"].tolist() == [64, 64, 1]
    assert (tmp_path / "demo" / "phantom_recon.png").stat().st_size > 1000
    assert MRDFile(tmp_path / "demo" / "phantom_mrd.h5").header.subjectInformation is None


def test_package_entry_point_is_installed():
    script = Path(sys.executable).parent / "cloudmri"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "cloudmri 0.1.0"


def test_invalid_mrd_files_through_the_cli(cpp_phantom, tmp_path):
    bad_schema = tmp_path / "schema.h5"
    shutil.copy(cpp_phantom, bad_schema)
    with h5py.File(bad_schema, "r+") as f:
        xml = f["dataset/xml"][0].decode().replace("<trajectory>cartesian", "<trajectory>zigzag")
        del f["dataset/xml"]
        f["dataset"].create_dataset("xml", (1,), dtype=h5py.string_dtype("ascii"))
        f["dataset/xml"][0] = xml.encode()
    bad_sizes = tmp_path / "sizes.h5"
    shutil.copy(cpp_phantom, bad_sizes)
    with h5py.File(bad_sizes, "r+") as f:
        record = f["dataset/data"][9]
        record["head"]["active_channels"] = 2
        f["dataset/data"][9] = record
    for path, finding in ((bad_schema, "zigzag"), (bad_sizes, "(acquisitions 9)")):
        result = run("validate", path)
        assert result.returncode == 1 and finding in " ".join(result.stdout.split()) and "INVALID" in result.stdout
        result = run("ingest", path, "-o", tmp_path / "out.h5")
        assert result.returncode == 1 and "is not valid MRD" in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "out.h5").exists()


def test_recon_quality_and_exports(tmp_path):
    raw = tmp_path / "ph.h5"
    assert run("phantom", "-o", raw, "--matrix", "64", "--coils", "4", "--accel", "2", "--calib", "16",
               "--slices", "2", "--noise", "0.002").returncode == 0
    result = run("recon", raw, "-o", tmp_path / "grappa.h5", "--export", "dicom", tmp_path / "dicom")
    assert result.returncode == 0, result.stderr
    assert "(grappa, 2 image(s) of 64x64)" in result.stdout and "exported 2 dicom file(s)" in result.stdout
    assert len(list((tmp_path / "dicom").glob("*.dcm"))) == 2
    recipe = tmp_path / "sense.yaml"
    recipe.write_text("method: sense\nmax_iter: 15\nmaps: lowres\n")
    result = run("recon", raw, "-o", tmp_path / "sense.h5", "--recipe", recipe, "--lambda", "0.001",
                 "--export", "nifti", tmp_path / "nifti")
    assert result.returncode == 0, result.stderr
    headers, images, attributes = MRDFile(tmp_path / "sense.h5").read_images("images")
    stored = json.loads(attributes[0])
    assert stored["recipe"]["method"] == "sense" and stored["recipe"]["lamda"] == 0.001
    assert stored["recipe"]["max_iter"] == 15 and len(stored["source_sha256"]) == 64
    assert images.shape == (2, 1, 1, 64, 64) and headers["slice"].tolist() == [0, 1]
    assert (tmp_path / "nifti" / "sense.nii.gz").exists()
    assert run("recon", raw, "-o", tmp_path / "zf.h5", "--method", "ifft", "--export", "png",
               tmp_path / "png").returncode == 0
    assert len(list((tmp_path / "png").glob("*.png"))) == 2
    table = run("quality", raw, tmp_path / "grappa.h5", tmp_path / "zf.h5", "--json")
    rows = {row["method"]: row for row in json.loads(table.stdout)}
    assert rows["grappa"]["nmse"] < rows["zf"]["nmse"] and rows["grappa"]["ssim"] > rows["zf"]["ssim"]
    blind = run("quality", "--no-reference", tmp_path / "grappa.h5", tmp_path / "zf.h5", "--json")
    measures = {row["method"]: row for row in json.loads(blind.stdout)}
    assert set(measures) == {"grappa", "zf"}
    assert all(row["snr"] > 5 and row["gradient_entropy"] > 0 and row["tenengrad"] > 0 for row in measures.values())


@pytest.mark.parametrize("args, code, message", [
    (["recon", "ph.h5", "-o", "x.h5", "--method", "nufft"], 2, "this file is Cartesian: use --method ifft"),
    (["recon", "ph.h5", "-o", "x.h5", "--recipe", "bad.yaml"], 2, "sense.lamdaa: Extra inputs are not permitted"),
    (["recon", "ph.h5", "-o", "x.h5", "--export", "png"], 2, "Option '--export' requires 2 arguments"),
    pytest.param(["recon", "ph.h5", "-o", "x.h5", "--device", "cuda"], 2, "no CUDA GPU is visible here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present, so cuda works")),
    (["quality", "ph.h5", "notes.h5"], 1, "notes.h5: cannot be opened as MRD"),
    (["quality", "ph.h5"], 2, "give a reference and at least one reconstruction"),
])
def test_recon_errors_are_one_line(tmp_path, args, code, message):
    run("phantom", "-o", tmp_path / "ph.h5", "--matrix", "32", "--coils", "2")
    (tmp_path / "bad.yaml").write_text("method: sense\nlamdaa: 1\n")
    (tmp_path / "notes.h5").write_text("not hdf5")
    result = run(*args, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert message in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
    assert not (tmp_path / "x.h5").exists()


def test_recon_of_several_files_in_one_batch_on_dask(tmp_path):
    for seed in (1, 2):
        assert run("phantom", "-o", tmp_path / f"p{seed}.h5", "--matrix", "32", "--coils", "2", "--seed",
                   str(seed)).returncode == 0
    result = run("recon", tmp_path / "p1.h5", tmp_path / "p2.h5", "-o", tmp_path / "out", "--workers", "2",
                 "--export", "png", tmp_path / "png")
    assert result.returncode == 0, result.stderr
    for seed in (1, 2):
        assert (tmp_path / "out" / f"p{seed}_recon.h5").exists()
        assert len(list((tmp_path / "png" / f"p{seed}").glob("*.png"))) == 1
