"""Shared fixtures: real files from the C++ reference tools and from ../shared/data."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
GRAPPA_FILE = SHARED_DATA / "siemens_ssfp_grappa_r3.h5"
TWIX_FILE = SHARED_DATA / "siemens_gre.dat"

needs_shared_data = pytest.mark.skipif(
    not GRAPPA_FILE.exists(), reason="needs the real scanner files in ../shared/data (present in CI)")
needs_cpp_tools = pytest.mark.skipif(
    shutil.which("ismrmrd_generate_cartesian_shepp_logan") is None,
    reason="needs Debian's ismrmrd-tools (./workbench setup installs it; present in CI)")


@pytest.fixture(autouse=True)
def isolated_state(tmp_path, monkeypatch):
    """Keys and state go to a fresh directory per test, never to the user's home."""
    monkeypatch.setenv("CLOUDMRI_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("CLOUDMRI_SITE_KEY_FILE", raising=False)
    monkeypatch.delenv("CLOUDMRI_CONFIG", raising=False)
    monkeypatch.delenv("CLOUDMRI_SITE", raising=False)


@pytest.fixture(scope="session")
def cpp_phantom(tmp_path_factory) -> Path:
    """A Shepp-Logan dataset written by the C++ reference generator (R=2, 16 calibration lines, noise scan)."""
    if shutil.which("ismrmrd_generate_cartesian_shepp_logan") is None:
        pytest.skip("needs Debian's ismrmrd-tools (./workbench setup installs it; present in CI)")
    path = tmp_path_factory.mktemp("cpp") / "shepp_logan.h5"
    subprocess.run(["ismrmrd_generate_cartesian_shepp_logan", "-m", "64", "-c", "4", "-a", "2", "-w", "16",
                    "-C", "-o", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def cpp_phantom_full(tmp_path_factory) -> Path:
    """A fully sampled C++ reference dataset, reconstructed in place by ismrmrd_recon_cartesian_2d."""
    if shutil.which("ismrmrd_generate_cartesian_shepp_logan") is None:
        pytest.skip("needs Debian's ismrmrd-tools (./workbench setup installs it; present in CI)")
    path = tmp_path_factory.mktemp("cpp") / "full.h5"
    subprocess.run(["ismrmrd_generate_cartesian_shepp_logan", "-m", "64", "-c", "4", "-n", "0.0", "-o", str(path)],
                   check=True, capture_output=True)
    return path


def cpp_recon_summary(path: Path) -> dict[str, str]:
    """Run the C++ reference reconstruction on a file and parse what it prints about it."""
    result = subprocess.run(["ismrmrd_recon_cartesian_2d", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    fields = {}
    for line in result.stdout.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
    return fields


@pytest.fixture(scope="session")
def postgres_server():
    """A throw-away PostgreSQL server for this test process (each xdist worker starts its own)."""
    from cloudmri_kernel.catalog.testing import PostgresServer

    if not PostgresServer.available():
        pytest.skip("PostgreSQL is not installed (Debian package postgresql): the PostgreSQL leg runs where it is, "
                    "as in CI")
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request, tmp_path):
    """URL of a fresh, empty catalog database: a SQLite file in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.sqlite'}"
        return
    import secrets

    server = request.getfixturevalue("postgres_server")
    name = f"test_{secrets.token_hex(8)}"
    url = server.create_database(name)
    yield url
    server.drop_database(name)


@pytest.fixture
def catalog(catalog_url):
    """The migrated catalog on ``catalog_url`` (both databases), disposed after the test."""
    from cloudmri_kernel.catalog import Catalog

    opened = Catalog.open(catalog_url)
    yield opened
    opened.dispose()
