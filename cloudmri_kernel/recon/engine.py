"""From an MRD raw file to images: the recipe's method applied to every slice, in this process or on Dask.

Steps: read and sort k-space (or the non-Cartesian samples), decorrelate coils with the noise scans, remove
readout oversampling, split into independent 2D tasks (slices, contrasts, repetitions, and partitions of 3D data
after an inverse FFT along kz), reconstruct each task with the recipe's method, crop to the recon matrix.
Each task is a plain picklable object, so the same code runs in-process and on any Dask cluster.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from cloudmri_kernel.compute.cluster import run_tasks
from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.mrd.header import Header
from cloudmri_kernel.mrd.kspace import read_cartesian
from cloudmri_kernel.mrd.reader import MRDFile, has_flag
from cloudmri_kernel.recon import coils as coil_tools
from cloudmri_kernel.recon import iterative
from cloudmri_kernel.recon.fft import centered_ifft, crop_center
from cloudmri_kernel.recon.grappa import calibration_region, reconstruct_grappa
from cloudmri_kernel.recon.model_files import load_model
from cloudmri_kernel.recon.operators import NUFFT, pipe_menon_dcf, remove_readout_oversampling
from cloudmri_kernel.recon.partial_fourier import homodyne, pocs
from cloudmri_kernel.recon.recipe import (
    CSTVRecipe,
    CSWaveletRecipe,
    DLRecipe,
    GrappaRecipe,
    IfftRecipe,
    NufftRecipe,
    Recipe,
    SenseRecipe,
    default_recipe,
)
from cloudmri_kernel.recon.tensors import like_input, to_tensor

#: Fewest fully sampled centre lines from which coil maps are estimated.
MIN_CALIBRATION_LINES = 8


@dataclass
class SliceTask:
    """One 2D reconstruction: Cartesian (``kspace``, ``mask``) or non-Cartesian (``samples``, ``traj``)."""

    index: tuple[int, ...]
    recipe: Recipe
    image_shape: tuple[int, int]
    kspace: np.ndarray | None = None  # (coils, ny, nx), readout oversampling removed
    mask: np.ndarray | None = None  # (ny,) lines acquired for imaging
    calibration: np.ndarray | None = None  # (coils, ny, nx) calibration lines in place, or None
    acceleration: int = 1
    samples: np.ndarray | None = None  # (coils, points)
    traj: np.ndarray | None = None  # (points, 2)


@dataclass
class SliceResult:
    image: np.ndarray  # complex64 (ny, nx)
    iterations: int | None = None
    converged: bool = True
    note: str | None = None


@dataclass
class ReconOutput:
    """Images (float32 magnitude, axes ``dims``), the recipe used, and one acquisition header per image."""

    images: np.ndarray
    dims: tuple[str, ...]
    recipe: Recipe
    header: Header
    acquisition_headers: np.ndarray
    warnings: list[str] = field(default_factory=list)


def _scaled_noise_covariance(noise: np.ndarray) -> np.ndarray:
    """Noise covariance divided by its mean variance: whitening then decorrelates the coils and equalizes their
    noise without changing the overall intensity scale of the images."""
    covariance = np.asarray(coil_tools.noise_covariance(noise))
    return covariance / np.real(np.trace(covariance)) * covariance.shape[0]


def _check_finite(values: np.ndarray, what: str, dims: tuple[str, ...]) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        first = np.argwhere(bad)[0]
        where = ", ".join(f"{name} {int(i)}" for name, i in zip(dims, first, strict=True))
        raise InvalidDataError(f"{what} has {int(bad.sum())} NaN/Inf values, first at {where}")


def _centre_block(kspace: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The contiguous fully sampled lines around the k-space centre, (coils, lines, nx)."""
    centre = len(mask) // 2
    if not mask[centre]:
        raise UsageError("the k-space centre line was not acquired, so coil maps cannot be estimated: "
                         "use --method grappa with calibration lines, or a fully sampled centre")
    low, high = centre, centre
    while low > 0 and mask[low - 1]:
        low -= 1
    while high + 1 < len(mask) and mask[high + 1]:
        high += 1
    if high - low + 1 < MIN_CALIBRATION_LINES:
        raise UsageError(f"only {high - low + 1} fully sampled centre lines: coil maps need at least "
                         f"{MIN_CALIBRATION_LINES}; use --method ifft, or acquire calibration lines")
    return kspace[:, low:high + 1]


def _calibration_block(task: SliceTask) -> np.ndarray:
    if task.calibration is not None and np.any(task.calibration):
        return np.asarray(calibration_region(task.calibration))
    return _centre_block(task.kspace, task.mask)


def _maps(task: SliceTask, kind: str) -> np.ndarray:
    block = _calibration_block(task)
    if kind == "espirit":
        return coil_tools.espirit_maps(block, task.image_shape, device=task.recipe.device)
    return coil_tools.lowres_maps(block, task.image_shape, device=task.recipe.device)


def _combine(coil_images: np.ndarray, how: str, device: str) -> np.ndarray:
    if how == "adaptive":
        combined, _ = coil_tools.adaptive_combine(coil_images, device=device)
        return np.asarray(combined, np.complex64)
    return np.asarray(coil_tools.rss(coil_images), np.float32).astype(np.complex64)


def _coil_images(kspace: np.ndarray, lines: np.ndarray, partial_fourier: str, device: str) -> np.ndarray:
    """Inverse FFT, with partial Fourier reconstruction when the acquired lines are off-centre."""
    acquired = np.zeros(len(lines), bool)
    rows = np.flatnonzero(lines)
    if rows.size:
        acquired[rows[0]:rows[-1] + 1] = True
    asymmetric = rows.size and abs((rows[0] + rows[-1]) / 2 - len(lines) // 2) > 1
    if partial_fourier == "none" or not asymmetric:
        return centered_ifft(kspace, (-2, -1)).astype(np.complex64)
    if partial_fourier == "homodyne":
        return np.asarray(homodyne(kspace, acquired, axis=-2, device=device), np.complex64)
    return np.asarray(pocs(kspace, acquired, axis=-2, device=device), np.complex64)


def reconstruct_slice(task: SliceTask) -> SliceResult:
    """Reconstruct one task with its recipe's method; on a GPU that runs out of memory, again on the CPU."""
    try:
        return _reconstruct(task)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        cpu_task = replace(task, recipe=task.recipe.model_copy(update={"device": "cpu"}))
        result = _reconstruct(cpu_task)
        result.note = "the GPU ran out of memory; reconstructed on the CPU instead"
        return result


def _reconstruct(task: SliceTask) -> SliceResult:
    recipe = task.recipe
    if isinstance(recipe, IfftRecipe):
        images = _coil_images(task.kspace, task.mask, recipe.partial_fourier, recipe.device)
        return SliceResult(_combine(images, recipe.combine, recipe.device))
    if isinstance(recipe, GrappaRecipe):
        if task.calibration is None or not np.any(task.calibration):
            raise UsageError("GRAPPA needs calibration lines and this file has none: use --method sense or "
                             "cs-wavelet (coil maps from a fully sampled centre) or --method ifft")
        filled = reconstruct_grappa(task.kspace, task.mask, task.calibration, task.acceleration,
                                    kernel=recipe.kernel, lamda=recipe.lamda, device=recipe.device)
        filled = np.asarray(filled)
        lines = task.mask | np.abs(filled).max(axis=(0, 2)).astype(bool)
        images = _coil_images(filled, lines, recipe.partial_fourier, recipe.device)
        return SliceResult(_combine(images, recipe.combine, recipe.device))
    if isinstance(recipe, SenseRecipe | CSWaveletRecipe | CSTVRecipe):
        maps = _maps(task, recipe.maps)
        mask2d = np.ascontiguousarray(np.broadcast_to(task.mask[:, np.newaxis], task.kspace.shape[1:]))
        if isinstance(recipe, SenseRecipe):
            result = iterative.reconstruct_sense(task.kspace, maps, mask2d, lamda=recipe.lamda,
                                                 max_iter=recipe.max_iter, tol=recipe.tol, device=recipe.device)
        elif isinstance(recipe, CSWaveletRecipe):
            result = iterative.reconstruct_cs_wavelet(task.kspace, maps, mask2d, lamda=recipe.lamda,
                                                      max_iter=recipe.max_iter, wavelet=recipe.wavelet,
                                                      random_shift=recipe.random_shift, coarsest=recipe.coarsest,
                                                      device=recipe.device)
        else:
            result = iterative.reconstruct_cs_tv(task.kspace, maps, mask2d, lamda=recipe.lamda,
                                                 max_iter=recipe.max_iter, device=recipe.device)
        return SliceResult(result.image, result.iterations, result.converged)
    if isinstance(recipe, DLRecipe):
        maps = _maps(task, recipe.maps)
        return SliceResult(run_network(recipe, task.kspace, task.mask, maps))
    if isinstance(recipe, NufftRecipe):
        if task.samples is None:
            raise UsageError("NUFFT reconstructs radial or spiral data; this file is Cartesian: use --method ifft, "
                             "grappa, sense, cs-wavelet or cs-tv")
        dcf = pipe_menon_dcf(task.traj, task.image_shape, device=recipe.device)
        operator = NUFFT(task.traj, (task.samples.shape[0], *task.image_shape), dcf=dcf, device=recipe.device)
        coil_images = operator.adjoint(to_tensor(task.samples, recipe.device, torch.complex64) * dcf.sqrt())
        _, maps = coil_tools.adaptive_combine(coil_images, device=recipe.device)
        maps = np.asarray(like_input(maps, task.samples))
        if not recipe.iterative:
            result = iterative.reconstruct_nufft_gridding(task.samples, task.traj, task.image_shape, maps=maps,
                                                          dcf=dcf, device=recipe.device)
        else:
            result = iterative.reconstruct_nufft_sense(task.samples, task.traj, task.image_shape, maps,
                                                       lamda=recipe.lamda, max_iter=recipe.max_iter,
                                                       device=recipe.device)
        return SliceResult(result.image, result.iterations, result.converged)
    raise UsageError(f"unknown method {recipe.method}")


@functools.lru_cache(maxsize=4)
def _network(reference: str, device: str):
    """The model once per worker process (its hash checked at load, see :func:`load_model`)."""
    return load_model(reference, device)[0]


@torch.no_grad()
def run_network(recipe: DLRecipe, kspace: np.ndarray, mask: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """The recipe's model on one slice: k-space and maps (coils, y, x), acquired lines (y,); complex (y, x)."""
    net = _network(recipe.model, recipe.device)
    inputs = [to_tensor(np.asarray(a)[np.newaxis], recipe.device) for a in (kspace, mask, maps)]
    return net(inputs[0].to(torch.complex64), inputs[1], inputs[2].to(torch.complex64))[0].cpu().numpy()


def _cartesian_tasks(mrd: MRDFile, recipe: Recipe) -> tuple[list[SliceTask], tuple[str, ...], tuple, np.ndarray]:
    header = mrd.header
    enc = header.encoding[0]
    if isinstance(recipe, NufftRecipe):
        raise UsageError("NUFFT reconstructs radial or spiral data; this file is Cartesian: use --method ifft, "
                         "grappa, sense, cs-wavelet or cs-tv")
    sorted_k = read_cartesian(mrd)
    _check_finite(sorted_k.kspace, "k-space", sorted_k.dims)
    kspace, calibration = sorted_k.kspace, sorted_k.calibration
    coil_axis = sorted_k.axis("coil")
    if recipe.prewhiten and sorted_k.noise is not None:
        covariance = _scaled_noise_covariance(sorted_k.noise)
        kspace = np.asarray(coil_tools.prewhiten(kspace, covariance, coil_axis=coil_axis))
        if calibration is not None:
            calibration = np.asarray(coil_tools.prewhiten(calibration, covariance, coil_axis=coil_axis))
    recon_nx = int(enc.reconSpace.matrixSize.x)
    kspace = remove_readout_oversampling(kspace, recon_nx)
    if calibration is not None:
        calibration = remove_readout_oversampling(calibration, recon_nx)
    nz = kspace.shape[sorted_k.axis("kz")]
    if nz > 1:  # 3D: separate the partitions, then reconstruct each as a 2D slice
        kspace = centered_ifft(kspace, (sorted_k.axis("kz"),)).astype(np.complex64)
        if calibration is not None:
            calibration = centered_ifft(calibration, (sorted_k.axis("kz"),)).astype(np.complex64)
    outer_shape = kspace.shape[:coil_axis]
    pi = enc.parallelImaging
    acceleration = pi.accelerationFactor.kspace_encoding_step_1 if pi is not None and pi.accelerationFactor else 1
    image_shape = (kspace.shape[-2], kspace.shape[-1])
    tasks = []
    for outer in itertools.product(*(range(n) for n in outer_shape)):
        for z in range(nz):
            here = (*outer, slice(None), z)
            tasks.append(SliceTask(
                index=(*outer, z), recipe=recipe, image_shape=image_shape,
                kspace=np.ascontiguousarray(kspace[here]), mask=sorted_k.mask[outer].any(axis=0),
                calibration=None if calibration is None else np.ascontiguousarray(calibration[here]),
                acceleration=int(acceleration)))
    dims = (*sorted_k.dims[:coil_axis], "z", "y", "x")
    return tasks, dims, (*outer_shape, nz), sorted_k.headers


def _noncartesian_tasks(mrd: MRDFile, recipe: Recipe) -> tuple[list[SliceTask], tuple[str, ...], tuple, np.ndarray]:
    if not isinstance(recipe, NufftRecipe):
        raise UsageError(f"{recipe.method} reconstructs Cartesian data; this file is "
                         f"{mrd.header.encoding[0].trajectory.value}: use --method nufft")
    enc = mrd.header.encoding[0]
    image_shape = (int(enc.reconSpace.matrixSize.y), int(enc.reconSpace.matrixSize.x))
    block = mrd.read_acquisitions()
    flags = block.headers["flags"]
    noise = [block.data[i] for i in np.flatnonzero(has_flag(flags, "IS_NOISE_MEASUREMENT"))]
    imaging = np.flatnonzero(~has_flag(flags, "IS_NOISE_MEASUREMENT"))
    slices = block.headers["idx"]["slice"][imaging]
    whitening = None
    if recipe.prewhiten and noise:
        whitening = _scaled_noise_covariance(np.concatenate(noise, axis=1))
    tasks, headers = [], []
    for s in np.unique(slices):
        rows = imaging[slices == s]
        samples = np.concatenate([block.data[i] for i in rows], axis=1)
        traj = np.concatenate([block.traj[i][:, :2] for i in rows], axis=0)
        _check_finite(samples, "k-space", ("coil", "sample"))
        if whitening is not None:
            samples = np.asarray(coil_tools.prewhiten(samples, whitening, coil_axis=0))
        tasks.append(SliceTask(index=(int(s), 0), recipe=recipe, image_shape=image_shape, samples=samples,
                               traj=traj))
        headers.append(block.headers[rows[0]])
    return tasks, ("slice", "z", "y", "x"), (len(tasks), 1), np.array(headers)


@dataclass
class _Prepared:
    """A file's tasks and what is needed to put their images back together."""

    tasks: list[SliceTask]
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    acquisition_headers: np.ndarray
    recipe: Recipe
    header: Header


def _prepare(path: str | Path, recipe: Recipe | None) -> _Prepared:
    with MRDFile(path) as mrd:
        header = mrd.header
        recipe = recipe or default_recipe(header)
        if recipe.device == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda, but no CUDA GPU is visible here (torch.cuda.is_available() is "
                             "False): use --device cpu")
        enc = header.encoding[0]
        trajectory = enc.trajectory.value if enc.trajectory is not None else "cartesian"
        make_tasks = _cartesian_tasks if trajectory in ("cartesian", "epi") else _noncartesian_tasks
        tasks, dims, shape, acq_headers = make_tasks(mrd, recipe)
    return _Prepared(tasks, dims, shape, acq_headers, recipe, header)


def _assemble(prepared: _Prepared, results: list[SliceResult]) -> ReconOutput:
    recon_ny = int(prepared.header.encoding[0].reconSpace.matrixSize.y)
    first = crop_center(np.abs(results[0].image), recon_ny, axis=0)
    images = np.zeros((*prepared.shape, *first.shape), np.float32)
    warnings = []
    for task, result in zip(prepared.tasks, results, strict=True):
        images[task.index] = crop_center(np.abs(result.image), recon_ny, axis=0)
        if not result.converged:
            warnings.append(f"{prepared.recipe.method} did not converge in {result.iterations} iterations for "
                            f"image {task.index}; the best iterate is used")
        if result.note:
            warnings.append(f"image {task.index}: {result.note}")
    return ReconOutput(images, prepared.dims, prepared.recipe, prepared.header, prepared.acquisition_headers,
                       warnings)


def reconstruct_files(paths: list[str | Path], recipe: Recipe | None = None, workers: int | None = None,
                      progress: Callable[[int, int, str | None], None] | None = None,
                      scheduler: str | None = None) -> list[ReconOutput]:
    """Reconstruct every image of several MRD raw files as one batch of tasks (one Dask cluster for all).

    Args:
        recipe: the method and its parameters; default per file
            :func:`~cloudmri_kernel.recon.recipe.default_recipe`.
        workers: None runs in this process; N runs N single-threaded Dask workers (or the configured cluster).
        progress: ``progress(done, total, dashboard_link)``.
        scheduler: address of a running Dask scheduler to use instead (the API service keeps one).
    """
    prepared = [_prepare(path, recipe) for path in paths]
    tasks = [task for item in prepared for task in item.tasks]
    results = run_tasks(reconstruct_slice, tasks, workers=workers, progress=progress, scheduler=scheduler)
    outputs, start = [], 0
    for item in prepared:
        outputs.append(_assemble(item, results[start:start + len(item.tasks)]))
        start += len(item.tasks)
    return outputs


def reconstruct_file(path: str | Path, recipe: Recipe | None = None, workers: int | None = None,
                     progress: Callable[[int, int, str | None], None] | None = None,
                     scheduler: str | None = None) -> ReconOutput:
    """Reconstruct every image of one MRD raw file; see :func:`reconstruct_files`."""
    return reconstruct_files([path], recipe, workers, progress, scheduler)[0]
