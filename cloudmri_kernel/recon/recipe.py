"""Recipes: the declarative description of a reconstruction that every caller passes and every result stores.

A recipe is a small mapping (YAML, JSON or a dict) with a ``method`` and that method's parameters, e.g.::

    method: cs-wavelet
    lamda: 0.005
    max_iter: 100
    maps: espirit
    device: cpu

Unknown keys are errors. The recipe stored with an image (as JSON in the image attributes) reproduces it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.mrd.header import Header


class _RecipeBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: Literal["cpu", "cuda"] = Field("cpu", description="Where the torch parts run.")
    prewhiten: bool = Field(
        False, description="Decorrelate coils with the noise scans when the file has them. SNR-optimal for "
        "correlated coil noise, but it reweights coil sensitivities, so image intensity no longer matches an "
        "unwhitened ground truth; off by default, as in BART and SigPy.")


class IfftRecipe(_RecipeBase):
    """Zero-filled inverse FFT with coil combination."""

    method: Literal["ifft"] = "ifft"
    combine: Literal["rss", "adaptive"] = Field("rss", description="Root-sum-of-squares or adaptive (Walsh/Inati).")
    partial_fourier: Literal["none", "homodyne", "pocs"] = Field(
        "none", description="Partial Fourier reconstruction when the header's k-space centre is off-centre.")


class GrappaRecipe(_RecipeBase):
    """GRAPPA with embedded or separate calibration lines."""

    method: Literal["grappa"] = "grappa"
    kernel: tuple[int, int] = Field((4, 5), description="Kernel size (ky lines, kx points).")
    lamda: float = Field(0.01, ge=0, description="Tikhonov regularization of the weight fit, relative.")
    combine: Literal["rss", "adaptive"] = "rss"
    partial_fourier: Literal["none", "homodyne", "pocs"] = "none"


_MAPS = Field("espirit", description="Coil sensitivity estimation: ESPIRiT or a fast low-resolution estimate.")


class SenseRecipe(_RecipeBase):
    """Iterative SENSE (conjugate gradient)."""

    method: Literal["sense"] = "sense"
    lamda: float = Field(0.0, ge=0, description="Tikhonov (L2) regularization weight.")
    max_iter: int = Field(30, ge=1, le=10000)
    tol: float = Field(1e-6, gt=0)
    maps: Literal["espirit", "lowres"] = _MAPS


class CSWaveletRecipe(_RecipeBase):
    """Compressed sensing with an L1 penalty on wavelet coefficients (FISTA)."""

    method: Literal["cs-wavelet"] = "cs-wavelet"
    lamda: float = Field(0.005, gt=0, description="L1-wavelet weight; objective ½‖Ax−y‖² + λ‖Ψx‖₁.")
    max_iter: int = Field(100, ge=1, le=10000)
    maps: Literal["espirit", "lowres"] = _MAPS
    wavelet: Literal["db2", "db4", "haar"] = Field(
        "db2", description="Orthogonal wavelet: db2 is BART's default, db4 SigPy's (see docs/benchmarks.md).")
    random_shift: bool = Field(
        True, description="Cycle spinning (a random circular shift before each thresholding), as BART's pics.")
    coarsest: int = Field(16, ge=2, le=1024, description="Smallest side of the coarsest wavelet scale, which "
                          "sets the number of levels (16: 3 at 128², 4 at 256²; BART's pics takes one more).")


class CSTVRecipe(_RecipeBase):
    """Compressed sensing with a total-variation penalty."""

    method: Literal["cs-tv"] = "cs-tv"
    lamda: float = Field(0.005, gt=0, description="TV weight; objective ½‖Ax−y‖² + λ TV(x).")
    max_iter: int = Field(100, ge=1, le=10000)
    maps: Literal["espirit", "lowres"] = _MAPS


class NufftRecipe(_RecipeBase):
    """Non-Cartesian (radial, spiral): density-compensated gridding or iterative SENSE."""

    method: Literal["nufft"] = "nufft"
    iterative: bool = Field(True, description="Iterative SENSE (true) or one gridding step (false).")
    lamda: float = Field(0.0, ge=0)
    max_iter: int = Field(20, ge=1, le=10000)


class DLRecipe(_RecipeBase):
    """Unrolled deep-learning reconstruction (MoDL) with a trained model, known by its hash."""

    method: Literal["dl"] = "dl"
    model: str = Field("modl-synthetic", min_length=1, description="Model: a shipped name, a name in the models "
                       "directory or a .pt file; its SHA-256 is checked against its card before use.")
    maps: Literal["espirit", "lowres"] = Field("lowres", description="Coil sensitivities for the data-consistency "
                                               "steps; the shipped model was trained with low-resolution maps.")


Recipe = Annotated[IfftRecipe | GrappaRecipe | SenseRecipe | CSWaveletRecipe | CSTVRecipe | NufftRecipe | DLRecipe,
                   Field(discriminator="method")]
_ADAPTER: TypeAdapter = TypeAdapter(Recipe)
METHODS = ("ifft", "grappa", "sense", "cs-wavelet", "cs-tv", "nufft", "dl")


def parse_recipe(content: dict) -> Recipe:
    """A validated recipe from a mapping; errors name the key and the problem."""
    try:
        return _ADAPTER.validate_python(content)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'recipe'}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"invalid recipe ({problems})") from None


def load_recipe(path: str | Path, overrides: dict | None = None) -> Recipe:
    """Read a YAML or JSON recipe file; ``overrides`` (e.g. from CLI options) win over the file."""
    path = Path(path)
    if not path.is_file():
        raise UsageError("no such recipe file", path)
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"the recipe is not valid YAML/JSON ({exc})", path) from None
    if not isinstance(content, dict):
        raise UsageError("a recipe is a mapping of key: value", path)
    return parse_recipe({**content, **(overrides or {})})


def recipe_schema() -> dict:
    """JSON schema of all recipes (forms in the widgets are generated from it)."""
    return _ADAPTER.json_schema()


def recipe_json(recipe: Recipe) -> str:
    return json.dumps(recipe.model_dump(mode="json"), sort_keys=True)


def default_recipe(header: Header) -> Recipe:
    """The method a header asks for: NUFFT for non-Cartesian data, GRAPPA for parallel imaging with calibration
    lines, SENSE for parallel imaging without them, else the inverse FFT; partial Fourier when the k-space
    centre is off-centre."""
    enc = header.encoding[0]
    trajectory = enc.trajectory.value if enc.trajectory is not None else "cartesian"
    if trajectory not in ("cartesian", "epi"):
        return NufftRecipe()
    pi = enc.parallelImaging
    accel = 1
    if pi is not None and pi.accelerationFactor is not None:
        accel = pi.accelerationFactor.kspace_encoding_step_1 * pi.accelerationFactor.kspace_encoding_step_2
    limits = enc.encodingLimits
    step = limits.kspace_encoding_step_1 if limits is not None else None
    partial = "none"
    if step is not None and step.center is not None and step.maximum is not None:
        lines = step.maximum - (step.minimum or 0) + 1
        if lines < 0.9 * enc.encodedSpace.matrixSize.y:
            partial = "pocs"
    if accel > 1:
        calibrated = pi.calibrationMode is not None and pi.calibrationMode.value in ("embedded", "separate",
                                                                                   "interleaved")
        return GrappaRecipe(partial_fourier=partial) if calibrated else SenseRecipe(maps="lowres")
    return IfftRecipe(partial_fourier=partial)
