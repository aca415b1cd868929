"""What the federated tests share: a tiny network, three tiny sites that differ, and a fresh catalog."""

from __future__ import annotations

import pytest

from cloudmri_kernel.catalog import Catalog
from cloudmri_kernel.federated.sites import SiteConfig
from cloudmri_kernel.recon.unrolled import MoDLConfig

ARCH = MoDLConfig(unrolls=1, cg_iterations=3, features=8, depth=3)


def tiny_sites(count: int = 3) -> list[SiteConfig]:
    """Up to three 32 x 32 synthetic sites with different coils, noise, contrast and undersampling."""
    kinds = [dict(coils=4, noise=0.01, contrast="t1"), dict(coils=8, noise=0.03, contrast="t2"),
             dict(coils=6, noise=0.02, accel=3, pattern="uniform")]
    return [SiteConfig(f"site{i}", matrix=32, calib=8, train_count=6, test_count=3, seed=i, **kinds[i])
            for i in range(count)]


@pytest.fixture
def catalog(tmp_path):
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield catalog
    catalog.engine.dispose()
