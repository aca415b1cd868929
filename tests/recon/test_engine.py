"""Whole-file reconstruction: real data, the C++ reference, every method, Dask equality and bad input."""

from __future__ import annotations

import shutil
import subprocess

import h5py
import numpy as np
import pytest

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from cloudmri_kernel.mrd.reader import MRDFile
from cloudmri_kernel.quality import nrmse, ssim
from cloudmri_kernel.recon.engine import reconstruct_file
from cloudmri_kernel.recon.grappa import ghost_energy_fraction, object_support
from cloudmri_kernel.recon.recipe import (
    CSTVRecipe,
    CSWaveletRecipe,
    GrappaRecipe,
    IfftRecipe,
    NufftRecipe,
    SenseRecipe,
    parse_recipe,
)
from tests.conftest import GRAPPA_FILE, needs_shared_data


def truth(path) -> np.ndarray:
    return np.abs(MRDFile(path).read_array("phantom")[0])


@pytest.fixture(scope="module")
def undersampled(tmp_path_factory):
    path = tmp_path_factory.mktemp("engine") / "r4.h5"
    write_phantom(path, PhantomSpec(matrix=128, coils=8, accel=4, calib=24, pattern="poisson", noise=0.005, seed=2))
    return path


@needs_shared_data
@pytest.mark.parametrize("prewhiten", [False, True])
def test_default_for_the_siemens_scan_is_grappa_without_aliasing(prewhiten):
    grappa = reconstruct_file(GRAPPA_FILE, None if not prewhiten else GrappaRecipe(prewhiten=True,
                                                                                    partial_fourier="pocs"))
    zero_filled = reconstruct_file(GRAPPA_FILE, IfftRecipe())
    assert grappa.recipe.method == "grappa" and grappa.recipe.partial_fourier == "pocs"
    assert grappa.images.shape == (1, 1, 144, 192) and grappa.dims == ("slice", "z", "y", "x")
    support = object_support(grappa.images[0, 0])
    ghosts_grappa = ghost_energy_fraction(grappa.images[0, 0], support, 3)
    ghosts_zero_filled = ghost_energy_fraction(zero_filled.images[0, 0], support, 3)
    assert ghosts_zero_filled > 0.3 and ghosts_grappa < 0.01 * ghosts_zero_filled


def test_ifft_matches_the_cpp_reference_reconstruction(cpp_phantom_full, tmp_path):
    reference = tmp_path / "reference.h5"
    shutil.copy(cpp_phantom_full, reference)
    subprocess.run(["ismrmrd_recon_cartesian_2d", str(reference)], check=True, capture_output=True)
    with h5py.File(reference) as f:
        cpp = f["dataset/cpp/data"][0, 0, 0]
    ours = reconstruct_file(cpp_phantom_full, IfftRecipe()).images[0, 0]
    scale = np.vdot(ours, cpp).real / np.vdot(ours, ours).real
    assert np.linalg.norm(scale * ours - cpp) / np.linalg.norm(cpp) < 1e-3


@pytest.mark.parametrize("recipe, bar", [
    (SenseRecipe(max_iter=30), 0.2),
    (CSWaveletRecipe(max_iter=100), 0.2),
    (CSTVRecipe(max_iter=100), 0.2),
])
def test_iterative_methods_beat_zero_filling(undersampled, recipe, bar):
    gt = truth(undersampled)
    zero_filled = nrmse(gt, reconstruct_file(undersampled, IfftRecipe()).images[:, 0])
    result = reconstruct_file(undersampled, recipe)
    error = nrmse(gt, result.images[:, 0])
    assert error < bar < zero_filled
    assert ssim(gt, result.images[:, 0]) > 0.6


def test_grappa_on_a_uniformly_undersampled_phantom(tmp_path):
    path = tmp_path / "r2.h5"
    write_phantom(path, PhantomSpec(matrix=96, coils=8, accel=2, calib=24, noise=0.002, seed=4))
    result = reconstruct_file(path)
    assert result.recipe.method == "grappa"
    assert nrmse(truth(path), result.images[:, 0]) < 0.08


def test_radial_phantom_with_nufft(tmp_path):
    path = tmp_path / "radial.h5"
    write_phantom(path, PhantomSpec(matrix=64, coils=4, trajectory="radial", noise=0.002, seed=1))
    gt = truth(path)
    gridding = reconstruct_file(path, NufftRecipe(iterative=False)).images[:, 0]
    iterative = reconstruct_file(path).images[:, 0]
    assert np.corrcoef(gt.ravel(), gridding.ravel())[0, 1] > 0.9
    assert nrmse(gt, iterative) < nrmse(gt, gridding)


@pytest.mark.slow
def test_one_and_two_dask_workers_give_the_same_images(tmp_path):
    path = tmp_path / "slices.h5"
    write_phantom(path, PhantomSpec(matrix=64, coils=4, accel=2, calib=16, slices=4, noise=0.003, seed=5))
    recipe = parse_recipe({"method": "sense", "max_iter": 10, "maps": "lowres"})
    local = reconstruct_file(path, recipe)
    one = reconstruct_file(path, recipe, workers=1)
    two = reconstruct_file(path, recipe, workers=2)
    assert local.images.shape == (4, 1, 64, 64)
    np.testing.assert_allclose(one.images, local.images, rtol=0, atol=1e-5 * local.images.max())
    np.testing.assert_allclose(two.images, one.images, rtol=0, atol=1e-5 * one.images.max())


def test_nan_in_kspace_is_reported_with_its_location(cpp_phantom_full, tmp_path):
    broken = tmp_path / "nan.h5"
    shutil.copy(cpp_phantom_full, broken)
    with h5py.File(broken, "r+") as f:
        record = f["dataset/data"][10]
        record["data"][6] = np.nan
        f["dataset/data"][10] = record
    with pytest.raises(InvalidDataError, match=r"k-space has 1 NaN/Inf values, first at slice 0, coil 0, kz 0, "
                                               r"ky 10, kx 3"):
        reconstruct_file(broken, IfftRecipe())


def test_methods_that_do_not_fit_the_data_say_which_would(tmp_path, cpp_phantom_full):
    radial = tmp_path / "radial.h5"
    write_phantom(radial, PhantomSpec(matrix=32, coils=2, trajectory="radial"))
    with pytest.raises(UsageError, match="this file is radial: use --method nufft"):
        reconstruct_file(radial, SenseRecipe())
    with pytest.raises(UsageError, match="this file is Cartesian: use --method ifft"):
        reconstruct_file(cpp_phantom_full, NufftRecipe())
    with pytest.raises(UsageError, match="GRAPPA needs calibration lines and this file has none"):
        reconstruct_file(cpp_phantom_full, GrappaRecipe())
    no_centre = tmp_path / "r4.h5"
    write_phantom(no_centre, PhantomSpec(matrix=32, coils=2, accel=4, calib=0))
    with pytest.raises(UsageError, match="coil maps need at least 8"):
        reconstruct_file(no_centre, SenseRecipe())


def test_gpu_out_of_memory_falls_back_to_the_cpu(monkeypatch, tmp_path):
    import torch

    from cloudmri_kernel.recon import engine

    path = tmp_path / "p.h5"
    write_phantom(path, PhantomSpec(matrix=32, coils=2, noise=0.0))
    prepared = engine._prepare(path, IfftRecipe())
    task = prepared.tasks[0]
    real = engine._reconstruct

    def out_of_memory_on_gpu(job):
        if job.recipe.device == "cuda":
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(job)

    monkeypatch.setattr(engine, "_reconstruct", out_of_memory_on_gpu)
    result = engine.reconstruct_slice(engine.replace(task, recipe=IfftRecipe(device="cuda")))
    assert result.note == "the GPU ran out of memory; reconstructed on the CPU instead"
    np.testing.assert_array_equal(result.image, real(task).image)


def test_many_files_are_one_batch(tmp_path):
    from cloudmri_kernel.recon.engine import reconstruct_files

    paths = []
    for seed in (1, 2, 3):
        paths.append(tmp_path / f"p{seed}.h5")
        write_phantom(paths[-1], PhantomSpec(matrix=32, coils=2, slices=seed, seed=seed))
    outputs = reconstruct_files(paths, IfftRecipe())
    assert [o.images.shape[0] for o in outputs] == [1, 2, 3]
    for path, output in zip(paths, outputs, strict=True):
        np.testing.assert_array_equal(output.images, reconstruct_file(path, IfftRecipe()).images)
