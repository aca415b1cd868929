"""Simulated multi-coil MRI raw data that carries its own ground truth, so reconstructions can be scored.

The object is the modified Shepp-Logan phantom with a smooth phase; it is seen through birdcage-like coil
sensitivities, sampled on a Cartesian, golden-angle radial or spiral trajectory and disturbed by complex
Gaussian noise that is correlated across channels:

.. math::

    y_{c}(k) = \\frac{1}{\\sqrt{N_x N_y}} \\sum_{r} S_c(r)\\, m(r)\\, e^{-2\\pi i\\, k \\cdot r} + n_c(k),
    \\qquad n \\sim \\mathcal{CN}(0, \\Psi),

with r in pixels, k in cycles/pixel, :math:`N_y` the matrix and :math:`N_x` the encoded readout
(``oversampling * matrix`` for Cartesian data, ``matrix`` otherwise). The file holds, beside the raw data,
these NDArrays (shapes as given to ``MRDWriter.write_array``; the file adds the C++ library's leading
array-number axis):

``phantom`` (slices, y, x), complex64
    The ground truth m. ``ismrmrd_generate_cartesian_shepp_logan`` stores (y, x) under the same name.
``csm`` (slices, coils, y, x), complex64
    The coil sensitivities S. The C++ tool stores (coils, y, x) for its single slice; here a slice axis
    comes first.
``mask`` (slices, ky), uint8
    1 where a phase-encoding line was acquired (imaging or calibration); Cartesian data only.
``noise_covariance`` (coils, coils), complex64
    The channel covariance :math:`\\Psi` the noise was drawn with.

Conventions:
    * Image rows are y (pointing up, as in MATLAB's ``phantom``), columns x (the readout). Pixel
      (m//2, m//2) is the centre of the field of view; k-space sample (ky, kx) = (m//2, nx//2) is DC.
    * Cartesian k-space is ``fftshift(fft2(ifftshift(image), norm="ortho"))`` of each coil image zero-padded
      in x from ``matrix`` to ``nx = oversampling * matrix`` pixels (``(nx - matrix) // 2`` on the left), so
      an inverse FFT and cropping x to the central ``matrix`` pixels give the coil images back, and
      :math:`\\sum_c \\bar S_c I_c` gives the phantom back.
    * Non-Cartesian data are the same unitary DFT off the grid (finufft type 2 divided by ``matrix``);
      trajectories are in cycles/pixel in [-0.5, 0.5), stored as (kx, ky) in the acquisitions' ``traj``.
    * Noise: ``noise`` is the standard deviation of the complex noise, :math:`\\sqrt{E|n|^2}`, in units of
      the phantom's peak magnitude (which is 1). With the unitary DFT this is the per-pixel noise of a
      fully sampled Cartesian coil image. Every channel has that standard deviation; channels d apart
      correlate with coefficient ``NOISE_CORRELATION ** d``. ``noise > 0`` puts :data:`NOISE_SCANS` noise
      acquisitions (flag ``IS_NOISE_MEASUREMENT``) first in the file, drawn from the same :math:`\\Psi`.

References:
    Shepp LA, Logan BF. The Fourier reconstruction of a head section. IEEE Trans Nucl Sci 1974;21:21-43.
    Toft P. The Radon transform: theory and implementation. PhD thesis, DTU 1996 (modified intensities).
    Roemer PB et al. The NMR phased array. MRM 1990;16:192-225.
    Pruessmann KP et al. Advances in sensitivity encoding with arbitrary k-space trajectories.
    MRM 2001;46:638-651.
    Lustig M, Donoho D, Pauly JM. Sparse MRI. MRM 2007;58:1182-1195.
    Bridson R. Fast Poisson disk sampling in arbitrary dimensions. SIGGRAPH sketches 2007.
    Winkelmann S et al. An optimal radial profile order based on the golden ratio for time-resolved MRI.
    IEEE TMI 2007;26:68-76.
    Fessler JA, Sutton BP. Nonuniform fast Fourier transforms using min-max interpolation.
    IEEE TSP 2003;51:560-574.
    Barnett AH, Magland J, af Klinteberg L. A parallel nonuniform fast Fourier transform library based on an
    "exponential of semicircle" kernel. SIAM J Sci Comput 2019;41:C479-C504.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import finufft
import ismrmrd.xsd as xsd
import numpy as np

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.mrd.build import Geometry, cartesian_acquisitions, make_header, new_acquisition_headers
from cloudmri_kernel.mrd.formats import RawContent
from cloudmri_kernel.mrd.reader import AcquisitionBlock, flag_mask
from cloudmri_kernel.mrd.writer import MRDWriter

PATTERNS = ("uniform", "poisson", "random")
TRAJECTORIES = ("cartesian", "radial", "spiral")

FOV_MM = 256.0
#: Slices are contiguous, this thick, unless more than ``SLAB_MM`` would be needed.
SLICE_THICKNESS_MM = 5.0
#: The slab never exceeds this, so every slice cuts the object (the outer ellipsoid is 207 mm tall).
SLAB_MM = 200.0
#: Correlation coefficient of the noise of adjacent channels; channels d apart correlate with its d-th power.
NOISE_CORRELATION = 0.2
NOISE_SCANS = 2
#: Noise scans have at least this many samples, so a covariance estimate rests on 2 * 256 samples per channel.
NOISE_SAMPLES = 256
#: Coils per ring of the birdcage-like array; more coils form further rings along z.
COILS_PER_RING = 8
#: Coil ring radius in units of half the field of view (the object reaches 0.92).
COIL_RADIUS = 1.5
#: Radius of a Poisson-disc gap grows by this factor from the k-space centre to its edge.
POISSON_DENSITY_SLOPE = 3.0
#: Random lines are drawn with probability (1 - |ky| / kmax) ** this power (Lustig 2007's polynomial density).
RANDOM_DENSITY_POWER = 2.0
#: Turns of one spiral interleaf; ``matrix / (2 * SPIRAL_TURNS)`` interleaves sample k-space at Nyquist.
SPIRAL_TURNS = 8
#: Angle between successive radial spokes: 180 degrees over the golden ratio (Winkelmann 2007).
GOLDEN_ANGLE = np.pi * (np.sqrt(5.0) - 1.0) / 2.0
#: How the readouts of a non-Cartesian trajectory are arranged, for the protocol name.
_ORDERING = {"radial": "golden-angle", "spiral": "archimedean"}

# Toft's modified Shepp-Logan: intensity in tenths, semi-axes a and b, centre x0 and y0 (units of half the
# FOV), rotation in degrees, and the semi-axis c along z of the common 3D extension (Schabel's phantom3d), all
# centred at z=0 so that the centre slice is exactly the 2D phantom and other slices cut smaller ellipses.
# Intensities are summed in tenths, exactly, so the ventricles (1 - 0.8 - 0.2) are 0, not -6e-17 with a
# flipped phase.
_ELLIPSES = np.array([
    [10, 0.69, 0.92, 0.0, 0.0, 0.0, 0.81],
    [-8, 0.6624, 0.874, 0.0, -0.0184, 0.0, 0.78],
    [-2, 0.11, 0.31, 0.22, 0.0, -18.0, 0.22],
    [-2, 0.16, 0.41, -0.22, 0.0, 18.0, 0.28],
    [1, 0.21, 0.25, 0.0, 0.35, 0.0, 0.41],
    [1, 0.046, 0.046, 0.0, 0.1, 0.0, 0.05],
    [1, 0.046, 0.046, 0.0, -0.1, 0.0, 0.05],
    [1, 0.046, 0.023, -0.08, -0.605, 0.0, 0.05],
    [1, 0.023, 0.023, 0.0, -0.606, 0.0, 0.02],
    [1, 0.023, 0.046, 0.06, -0.605, 0.0, 0.02],
])


@dataclass
class PhantomSpec:
    """What to simulate. Defaults give a 256 x 256, 8-coil, fully sampled single slice with 1 % noise.

    Attributes:
        matrix: image matrix (square), the recon matrix; even, 16 to 1024.
        coils: receive channels, 1 to 64.
        accel: undersampling factor. Cartesian: the pattern samples ``matrix / accel`` phase-encoding lines
            (the calibration lines come on top, so the net acceleration is lower, as on scanners). Radial:
            ``round(matrix * pi / 2 / accel)`` spokes. Spiral: ``round(matrix / 16)`` interleaves sample at
            Nyquist; accel divides their number (rounded, at least one).
        calib: fully sampled central lines (ACS) for ``accel > 1``, 0 for none; Cartesian only (radial and
            spiral sample the centre densely anyway).
        pattern: Cartesian line selection, the same for every slice. ``uniform``: every accel-th line with
            the centre line sampled; ``random``: exactly ``round(matrix / accel)`` lines, the centre plus
            lines drawn without replacement with variable density (Lustig 2007); ``poisson``: a 1D
            variable-density Poisson-disc set (gaps between r and 2r with r growing away from the centre,
            Bridson 2007) of about ``matrix / accel`` lines, starting at the centre line.
        trajectory: ``cartesian``, ``radial`` (golden-angle spokes through the centre, ``matrix`` samples
            each) or ``spiral`` (constant-density Archimedean interleaves starting at the centre).
        noise: complex noise standard deviation relative to the phantom's peak magnitude (see the module).
        slices: contiguous axial slices; each cuts the 3D phantom at its own height.
        oversampling: Cartesian readout oversampling (encoded x = oversampling * matrix), 1 to 4.
        seed: seeds the random pattern, the Poisson-disc pattern and the noise; the object and coils are fixed.
    """

    matrix: int = 256
    coils: int = 8
    accel: int = 1
    calib: int = 24
    pattern: str = "uniform"
    trajectory: str = "cartesian"
    noise: float = 0.01
    slices: int = 1
    oversampling: int = 2
    seed: int = 0


def _validate(spec: PhantomSpec) -> None:
    for name in ("matrix", "coils", "accel", "calib", "slices", "oversampling", "seed"):
        value = getattr(spec, name)
        if not isinstance(value, Integral) or isinstance(value, bool):
            raise UsageError(f"phantom {name} must be an integer, got {value!r}")
    m = spec.matrix
    checks = [
        (16 <= m <= 1024 and m % 2 == 0, f"phantom matrix must be an even number from 16 to 1024, got {m}"),
        (1 <= spec.coils <= 64, f"phantom coils must be 1 to 64, got {spec.coils}"),
        (1 <= spec.accel <= m, f"phantom accel must be 1 to the matrix ({m}), got {spec.accel}"),
        (0 <= spec.calib <= m, f"phantom calib must be 0 to the matrix ({m}) lines, got {spec.calib}"),
        (spec.pattern in PATTERNS,
         f"unknown phantom pattern '{spec.pattern}': choose from {', '.join(PATTERNS)}"),
        (spec.trajectory in TRAJECTORIES,
         f"unknown phantom trajectory '{spec.trajectory}': choose from {', '.join(TRAJECTORIES)}"),
        (spec.trajectory == "cartesian" or spec.pattern == "uniform",
         f"phantom pattern '{spec.pattern}' applies to cartesian trajectories only; use 'uniform' for "
         f"{spec.trajectory}"),
        (isinstance(spec.noise, Real) and np.isfinite(spec.noise) and spec.noise >= 0,
         f"phantom noise must be a finite number >= 0, got {spec.noise!r}"),
        (spec.slices >= 1, f"phantom slices must be at least 1, got {spec.slices}"),
        (1 <= spec.oversampling <= 4, f"phantom oversampling must be 1 to 4, got {spec.oversampling}"),
        (spec.seed >= 0, f"phantom seed must be >= 0, got {spec.seed}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


def _grid(matrix: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in units of half the FOV: x along columns, y up along rows, 0 at pixel m//2."""
    u = (np.arange(matrix) - matrix // 2) / (matrix / 2)
    return u[np.newaxis, :], -u[:, np.newaxis]


def _shepp_logan(matrix: int, z: float) -> np.ndarray:
    """Real modified Shepp-Logan cross-section at height ``z`` (units of half the FOV)."""
    x, y = _grid(matrix)
    tenths = np.zeros((matrix, matrix))
    for value, a, b, x0, y0, degrees, c in _ELLIPSES:
        if abs(z) >= c:
            continue
        shrink = np.sqrt(1.0 - (z / c) ** 2)
        cos, sin = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
        xr = (x - x0) * cos + (y - y0) * sin
        yr = (y - y0) * cos - (x - x0) * sin
        tenths[(xr / (a * shrink)) ** 2 + (yr / (b * shrink)) ** 2 <= 1.0] += value
    return tenths / 10


def _smooth_phase(matrix: int, z: float) -> np.ndarray:
    """A second-order polynomial phase (radians), like the B0 and transmit phase of a real scan.

    Its range over the object stays within (-pi, pi), so magnitude-only and phase-aware recons both apply.
    """
    x, y = _grid(matrix)
    return 0.3 + 0.8 * x - 0.5 * y + 0.6 * x * y + 0.4 * (x**2 - y**2) + 0.5 * z


def coil_maps(matrix: int, coils: int, z: float) -> np.ndarray:
    """Birdcage-like sensitivities (coils, y, x) with :math:`\\sum_c |S_c|^2 = 1` at every pixel.

    Coil c is a point receiver on a ring of radius :data:`COIL_RADIUS` around the object, its magnitude
    falling as 1/distance and its phase turning with the azimuth around it (the formula of sigpy's
    ``birdcage_maps``). Normalizing by the root-sum-of-squares makes the Roemer (1990) combination
    :math:`\\sum_c \\bar S_c I_c` return the object exactly, as SENSE (Pruessmann 2001) assumes.
    """
    x, y = _grid(matrix)
    per_ring = min(coils, COILS_PER_RING)
    rings = -(-coils // per_ring)
    c = np.arange(coils)[:, np.newaxis, np.newaxis]
    ring = c // per_ring
    azimuth = 2 * np.pi * (c % per_ring) / per_ring
    dx = x - COIL_RADIUS * np.cos(azimuth)
    dy = y - COIL_RADIUS * np.sin(azimuth)
    dz = z - (ring - (rings - 1) / 2)
    distance = np.sqrt(dx**2 + dy**2 + dz**2)
    phase = np.arctan2(dx, -dy) - (c + ring) * 2 * np.pi / per_ring
    maps = np.exp(1j * phase) / distance
    return maps / np.sqrt(np.sum(np.abs(maps) ** 2, axis=0))


def _noise_covariance(coils: int, sigma: float) -> np.ndarray:
    """Channel covariance sigma^2 * rho^|i-j| (positive definite for |rho| < 1)."""
    k = np.arange(coils)
    return sigma**2 * NOISE_CORRELATION ** np.abs(k[:, np.newaxis] - k[np.newaxis, :])


def _correlated_noise(rng: np.random.Generator, shape: tuple[int, int, int], covariance: np.ndarray) -> np.ndarray:
    """Complex Gaussian noise (n, coils, samples) whose channels have the given covariance."""
    sigma = np.sqrt(covariance[0, 0])
    if sigma == 0:
        return np.zeros(shape, np.complex64)
    factor = (sigma * np.linalg.cholesky(covariance / sigma**2)).astype(np.complex64)
    white = rng.standard_normal((2, *shape), dtype=np.float32) / np.float32(np.sqrt(2.0))
    return factor @ (white[0] + 1j * white[1])


def _centre_lines(matrix: int, count: int) -> np.ndarray:
    """Boolean (matrix,) of ``count`` lines centred on line matrix//2."""
    lines = np.zeros(matrix, bool)
    first = matrix // 2 - count // 2
    lines[first:first + count] = True
    return lines


def _random_lines(matrix: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """The centre line plus ``count - 1`` lines drawn without replacement, densest at the centre."""
    centre = matrix // 2
    distance = np.abs(np.arange(matrix) - centre) / (matrix / 2)
    weight = (1.0 - distance) ** RANDOM_DENSITY_POWER
    weight[centre] = 0.0
    lines = np.zeros(matrix, bool)
    lines[centre] = True
    lines[rng.choice(matrix, size=count - 1, replace=False, p=weight / weight.sum())] = True
    return lines


def poisson_disc_lines(matrix: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """About ``count`` lines with variable-density Poisson-disc spacing.

    In one dimension a maximal Poisson-disc set (Bridson 2007) with radius r has every gap in [r, 2r); here
    it is walked outwards from the centre line with gaps r * U[1, 2), r = max(1, s * (1 + slope * |ky| /
    kmax)). The scale s is found by bisection; with the random gap factors fixed the count falls as s grows.
    """
    centre = matrix // 2
    factors = 1.0 + rng.random((2, matrix))

    def lines_for(scale: float) -> np.ndarray:
        lines = np.zeros(matrix, bool)
        lines[centre] = True
        for direction, steps in zip((1, -1), factors, strict=True):
            position = float(centre)
            for step in steps:
                radius = max(1.0, scale * (1.0 + POISSON_DENSITY_SLOPE * abs(position - centre) / (matrix / 2)))
                position += direction * step * radius
                line = int(np.floor(position + 0.5))
                if not 0 <= line < matrix:
                    break
                lines[line] = True
        return lines

    low, high = 0.0, float(matrix)
    best = lines_for(high)
    for _ in range(40):
        middle = (low + high) / 2
        lines = lines_for(middle)
        if abs(int(lines.sum()) - count) < abs(int(best.sum()) - count):
            best = lines
        if lines.sum() > count:
            low = middle
        else:
            high = middle
    return best


def _line_pattern(spec: PhantomSpec, rng: np.random.Generator) -> np.ndarray:
    """Boolean (matrix,): phase-encoding lines the pattern samples for imaging."""
    m = spec.matrix
    if spec.accel == 1:
        return np.ones(m, bool)
    if spec.pattern == "uniform":
        return (np.arange(m) - m // 2) % spec.accel == 0
    count = max(1, round(m / spec.accel))
    if spec.pattern == "random":
        return _random_lines(m, count, rng)
    return poisson_disc_lines(m, count, rng)


def _radial_trajectory(matrix: int, accel: int) -> np.ndarray:
    """(spokes, matrix, 2) golden-angle spokes through the centre, (kx, ky) in cycles/pixel."""
    spokes = max(1, round(matrix * np.pi / 2 / accel))
    radius = (np.arange(matrix) - matrix // 2) / matrix
    angle = GOLDEN_ANGLE * np.arange(spokes)[:, np.newaxis]
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)


def _spiral_trajectory(matrix: int, accel: int) -> np.ndarray:
    """(interleaves, samples, 2) constant-density Archimedean interleaves, (kx, ky) in cycles/pixel.

    Each interleaf makes :data:`SPIRAL_TURNS` turns out to radius 0.5; ``matrix / (2 * turns)`` of them,
    rotated evenly, space the turns 1/matrix apart (Nyquist). Samples are spaced evenly along the arc
    (angle growing as the square root of time), at most 1/matrix apart.
    """
    full = max(1, round(matrix / (2 * SPIRAL_TURNS)))
    interleaves = max(1, round(full / accel))
    turns = matrix / (2 * full)
    theta_max = 2 * np.pi * turns
    samples = int(np.ceil(theta_max * matrix / 4))  # arc length of r = theta / (2 theta_max) is ~theta_max / 4
    theta = theta_max * np.sqrt(np.arange(samples) / samples)
    radius = 0.5 * theta / theta_max
    angle = theta + 2 * np.pi * np.arange(interleaves)[:, np.newaxis] / interleaves
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)


def _slice_positions_mm(slices: int) -> tuple[np.ndarray, float]:
    thickness = min(SLICE_THICKNESS_MM, SLAB_MM / slices)
    return (np.arange(slices) - (slices - 1) / 2) * thickness, thickness


def _cartesian_kspace(coil_images: np.ndarray, oversampling: int) -> np.ndarray:
    """(slices, coils, 1, ky, kx) centred unitary FFT of the coil images zero-padded along x."""
    slices, coils, m, _ = coil_images.shape
    nx = oversampling * m
    left = (nx - m) // 2
    padded = np.zeros((slices, coils, 1, m, nx), np.complex64)
    padded[..., 0, :, left:left + m] = coil_images
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(padded, axes=axes), norm="ortho"), axes=axes)


def _non_cartesian_kspace(coil_images: np.ndarray, trajectory: np.ndarray) -> np.ndarray:
    """(slices, coils, 1, readouts, samples): the unitary DFT of the coil images at the trajectory points."""
    slices, coils, m, _ = coil_images.shape
    readouts, samples, _ = trajectory.shape
    kx = 2 * np.pi * trajectory[..., 0].ravel()
    ky = 2 * np.pi * trajectory[..., 1].ravel()
    out = np.empty((slices, coils, 1, readouts, samples), np.complex64)
    for s in range(slices):
        # finufft's type 2 pairs its first coordinate with the first array axis (y) and uses exp(-i k.r)
        # on centred modes: that is the centred DFT, unnormalized.
        values = finufft.nufft2d2(ky, kx, np.ascontiguousarray(coil_images[s], np.complex128), eps=1e-9)
        out[s, :, 0] = (values / m).reshape(coils, readouts, samples)
    return out


def simulate_phantom(spec: PhantomSpec) -> RawContent:
    """Simulate raw data of a phantom, with the ground truth as NDArrays.

    Args:
        spec: what to simulate; see :class:`PhantomSpec`.

    Returns:
        Content with ``source_format="phantom"``: a schema-valid header, one block of noise acquisitions
        (when ``spec.noise > 0``) followed by one block of imaging acquisitions ordered by slice then
        line/spoke/interleaf (``kspace_encode_step_1``), and the arrays ``phantom``, ``csm``,
        ``noise_covariance`` and, for Cartesian data, ``mask`` (layouts in the module docstring).

    Raises:
        UsageError: a field of ``spec`` is out of range.
    """
    _validate(spec)
    m, coils, slices = spec.matrix, spec.coils, spec.slices
    rng = np.random.default_rng(spec.seed)
    positions_mm, thickness = _slice_positions_mm(slices)
    heights = positions_mm / (FOV_MM / 2)
    phantom = np.stack([_shepp_logan(m, z) * np.exp(1j * _smooth_phase(m, z)) for z in heights])
    csm = np.stack([coil_maps(m, coils, z) for z in heights])
    coil_images = csm * phantom[:, np.newaxis]
    arrays: dict[str, np.ndarray] = {"phantom": phantom.astype(np.complex64), "csm": csm.astype(np.complex64)}

    cartesian = spec.trajectory == "cartesian"
    calibrated = cartesian and spec.accel > 1 and spec.calib > 0
    if cartesian:
        sampled = _line_pattern(spec, rng)
        calibration = _centre_lines(m, spec.calib if calibrated else 0)
        arrays["mask"] = np.tile((sampled | calibration).astype(np.uint8), (slices, 1))
        kspace = _cartesian_kspace(coil_images, spec.oversampling)
        headers, data = cartesian_acquisitions(
            kspace, np.broadcast_to(sampled, (slices, 1, m)), np.broadcast_to(calibration, (slices, 1, m)),
            positions_mm)
        traj = [np.zeros((kspace.shape[-1], 0), np.float32)] * len(headers)
        encoded_x = spec.oversampling * m
    else:
        path = (_radial_trajectory if spec.trajectory == "radial" else _spiral_trajectory)(m, spec.accel)
        kspace = _non_cartesian_kspace(coil_images, path)
        headers, data = cartesian_acquisitions(kspace, np.ones((slices, 1, len(path)), bool), None, positions_mm)
        headers["trajectory_dimensions"] = 2
        if spec.trajectory == "spiral":
            headers["center_sample"] = 0
        path32 = path.astype(np.float32)
        traj = [path32[i] for i in headers["idx"]["kspace_encode_step_1"]]
        encoded_x = m

    peak = float(np.abs(phantom).max())
    covariance = _noise_covariance(coils, spec.noise * peak)
    arrays["noise_covariance"] = covariance.astype(np.complex64)
    blocks = []
    first_imaging = NOISE_SCANS if spec.noise > 0 else 0
    if spec.noise > 0:
        samples = max(NOISE_SAMPLES, data.shape[-1])
        noise_headers = new_acquisition_headers(NOISE_SCANS, coils, samples)
        noise_headers["flags"] = flag_mask("IS_NOISE_MEASUREMENT")
        noise = _correlated_noise(rng, (NOISE_SCANS, coils, samples), covariance)
        no_traj = [np.zeros((samples, 0), np.float32)] * NOISE_SCANS
        blocks.append(AcquisitionBlock(0, noise_headers, list(noise), no_traj))
        headers["scan_counter"] += first_imaging
        data = data + _correlated_noise(rng, data.shape, covariance)
    blocks.append(AcquisitionBlock(first_imaging, headers, list(data), traj))

    geometry = Geometry(
        encoded_matrix=(encoded_x, m, 1),
        recon_matrix=(m, m, 1),
        encoded_fov_mm=(FOV_MM * encoded_x / m, FOV_MM, thickness),
        recon_fov_mm=(FOV_MM, FOV_MM, thickness),
        coils=coils,
        slices=slices,
        trajectory=spec.trajectory,
        acceleration=(spec.accel, 1),
        calibration_mode="embedded" if calibrated else None,
        field_strength_t=3.0,
        vendor="CloudMRI",
        model="phantom",
        protocol=f"phantom {spec.trajectory} {_ORDERING.get(spec.trajectory, spec.pattern)} R{spec.accel}",
        user_parameters={"phantom_seed": spec.seed, "phantom_noise": float(spec.noise)},
    )
    header = make_header(geometry)
    if not cartesian:
        # Spokes/interleaves, not phase-encoding lines, are counted by kspace_encode_step_1.
        header.encoding[0].encodingLimits.kspace_encoding_step_1 = xsd.limitType(
            minimum=0, maximum=len(path) - 1, center=0)
    return RawContent(header=header, blocks=blocks, arrays=arrays, source_format="phantom")


def write_phantom(path: str | Path, spec: PhantomSpec) -> Path:
    """Simulate a phantom and write it as an MRD file (atomically: the file appears complete or not at all).

    Example:
        >>> write_phantom("phantom.h5", PhantomSpec(matrix=128, accel=4, calib=24))  # doctest: +SKIP
        PosixPath('phantom.h5')
    """
    content = simulate_phantom(spec)
    with MRDWriter(path, content.header) as out:
        for block in content.blocks:
            out.append_acquisitions(block.headers, block.data, block.traj)
        for name, values in content.arrays.items():
            out.write_array(name, values)
    return out.path
