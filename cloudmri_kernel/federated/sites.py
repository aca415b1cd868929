"""A hospital site's training data: what one Flower ClientApp trains and evaluates on, and nothing else.

A site is described by a :class:`SiteConfig` that travels as Flower *node config* (flat scalars), so the same
description starts an in-process simulation node and a real ``cloudmri fl site`` process. Its data come from
one of two sources:

``synthetic``
    Physics-informed synthetic samples (:mod:`cloudmri_kernel.recon.synthetic`) with the site's coils, noise,
    acceleration, sampling pattern and contrast: how the benchmark gives three sites deliberately different
    data.
``store``
    The site's own raw files in its encrypted store (``data_dir`` is the site's platform data directory):
    every fully sampled Cartesian MRD object of the site is decrypted, and each slice becomes a sample by
    retrospective undersampling with the site's pattern. The target is the fully sampled coil combination.

The data are split into training and held-out parts by a seeded shuffle; the split is the site's, fixed by its
seed, so every round evaluates on the same held-out images. A site may also set aside a validation split
(``val_count`` images, none by default): what the site *chooses* with (the fine-tuning epoch it keeps, see
:mod:`.site`), never what it reports, so that the held-out scores stay unbiased by every choice made.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.recon.synthetic import Sample, SyntheticSpec, centred_ifft2, sampling_mask, synthetic_dataset

SOURCES = ("synthetic", "store")


@dataclass(frozen=True)
class SiteConfig:
    """One site: its name, where its data come from and how they are acquired (see the module)."""

    name: str
    source: str = "synthetic"
    matrix: int = 64
    coils: int = 8
    accel: int = 4
    calib: int = 12
    noise: float = 0.01
    pattern: str = "poisson"
    contrast: str = "t1"
    train_count: int = 32
    test_count: int = 8
    val_count: int = 0
    seed: int = 0
    data_dir: str = ""

    def __post_init__(self):
        if not self.name:
            raise UsageError("a site needs a name")
        if self.source not in SOURCES:
            raise UsageError(f"site {self.name}: source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.source == "store" and not self.data_dir:
            raise UsageError(f"site {self.name}: a store source needs data_dir (the site's platform data dir)")
        if self.train_count < 1 or self.test_count < 1:
            raise UsageError(f"site {self.name}: train_count and test_count must be at least 1")
        if self.val_count < 0:
            raise UsageError(f"site {self.name}: val_count must be 0 (no validation split) or more")
        _ = self.spec  # validates the acquisition parameters

    @property
    def spec(self) -> SyntheticSpec:
        return SyntheticSpec(matrix=self.matrix, coils=self.coils, accel=self.accel, calib=self.calib,
                             noise=self.noise, pattern=self.pattern, contrast=self.contrast)

    def to_node_config(self) -> dict:
        """Flower node config (flat scalars)."""
        return asdict(self)

    @classmethod
    def from_node_config(cls, config: dict) -> SiteConfig:
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(config) - set(known)
        if unknown:
            raise UsageError(f"unknown site settings: {', '.join(sorted(unknown))}")
        return cls(**dict(config))


def _store_samples(config: SiteConfig, rng: np.random.Generator) -> list[Sample]:
    """Samples from every fully sampled Cartesian raw file of the site's own store (see the module)."""
    from cloudmri_kernel.crypto import KeyRing
    from cloudmri_kernel.mrd.kspace import read_cartesian
    from cloudmri_kernel.mrd.reader import MRDFile
    from cloudmri_kernel.recon.operators import remove_readout_oversampling
    from cloudmri_kernel.store.objects import ObjectStore

    data_dir = Path(config.data_dir)
    store = ObjectStore(data_dir / "store", KeyRing(data_dir / "keys" / "kek"))
    samples = []
    with tempfile.TemporaryDirectory() as scratch:
        for site, sha256 in store.iter_objects(config.name):
            path = store.get_file(site, sha256, Path(scratch) / f"{sha256}.h5")
            try:
                with MRDFile(path) as mrd:
                    kspace = read_cartesian(mrd)
                    header = mrd.header
            except Exception:  # noqa: BLE001 (a file that is not Cartesian raw data is not training data)
                continue
            finally:
                path.unlink(missing_ok=True)
            data = kspace.kspace.reshape(-1, *kspace.kspace.shape[-4:])  # (images, coil, kz, ky, kx)
            if data.shape[2] != 1 or not kspace.mask.all():
                continue  # 3D or undersampled: no fully sampled reference to learn from
            recon_x = header.encoding[0].reconSpace.matrixSize.x
            for image_kspace in data[:, :, 0]:
                full = np.asarray(remove_readout_oversampling(image_kspace, recon_x), np.complex64)
                samples.append(_retrospective(full, config.spec, rng))
    if not samples:
        raise UsageError(f"site {config.name} has no fully sampled Cartesian raw data in its store")
    return samples


def _retrospective(full: np.ndarray, spec: SyntheticSpec, rng: np.random.Generator) -> Sample:
    """A sample from fully sampled k-space (coils, y, x): the site's mask applied, maps from its centre."""
    from cloudmri_kernel.recon.coils import lowres_maps

    ny, nx = full.shape[1:]
    reference_maps = np.asarray(lowres_maps(full[:, ny // 2 - spec.calib // 2:][:, :spec.calib], (ny, nx)))
    target = np.sum(reference_maps.conj() * centred_ifft2(full), axis=0).astype(np.complex64)
    mask = sampling_mask(rng, SyntheticSpec(**{**asdict(spec), "matrix": ny}))
    kspace = (full * mask[None, :, None]).astype(np.complex64)
    first = ny // 2 - spec.calib // 2
    maps = np.asarray(lowres_maps(kspace[:, first:first + spec.calib], (ny, nx)), np.complex64)
    return Sample(kspace, mask, maps, target)


def load_site_data(config: SiteConfig) -> tuple[list[Sample], list[Sample]]:
    """(training, held-out) samples of one site, loaded once per process."""
    train, _validation, held_out = load_site_splits(config)
    return train, held_out


@functools.lru_cache(maxsize=16)
def load_site_splits(config: SiteConfig) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """(training, validation, held-out) samples of one site, loaded once per process (validation may be empty).

    Synthetic validation images are drawn from their own seed, so setting ``val_count`` leaves the training and
    held-out images as they were; from a store they come out of what would otherwise be training data.
    """
    if config.source == "synthetic":
        return (synthetic_dataset(config.spec, config.train_count, config.seed),
                synthetic_dataset(config.spec, config.val_count, config.seed + 2_000_006),
                synthetic_dataset(config.spec, config.test_count, config.seed + 1_000_003))
    rng = np.random.default_rng(config.seed)
    samples = _store_samples(config, rng)
    order = rng.permutation(len(samples))
    held_out = max(1, min(config.test_count, len(samples) // 4))
    validation = min(config.val_count, max(0, len(samples) - held_out - 1))
    return ([samples[i] for i in order[held_out + validation:]],
            [samples[i] for i in order[held_out:held_out + validation]],
            [samples[i] for i in order[:held_out]])
