"""Fixtures for the napari plugin: the plugin importable from the checkout, a small phantom, and a real service
process with a reconstructed series downloaded as the service names it."""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from importlib import metadata
from pathlib import Path

import pytest

from cloudmri_kernel.client import Client
from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from cloudmri_kernel.service.identity import ROLE_SCOPES, LocalTokens
from cloudmri_kernel.service.testing import ServiceProcess, create_token, service_env
from tests.conftest import REPO

EXTENSIONS = REPO / "extensions"
MANIFEST = EXTENSIONS / "napari_cloudmri" / "napari.yaml"
if importlib.util.find_spec("napari_cloudmri") is None:  # until pyproject.toml packages napari_cloudmri
    sys.path.insert(0, str(EXTENSIONS))

#: Three 32 x 32 slices, 4 coils, R = 2 with 8 calibration lines: the default recipe is GRAPPA.
PHANTOM = PhantomSpec(matrix=32, coils=4, accel=2, calib=8, oversampling=1, slices=3, seed=7)


def plugin_entry_point() -> metadata.EntryPoint | None:
    """The installed project's napari.manifest entry point; None until pyproject.toml declares it and the project
    is reinstalled, when napari finds the plugin only if it is registered by hand."""
    return next((ep for ep in metadata.entry_points(group="napari.manifest")
                 if ep.value == "napari_cloudmri:napari.yaml"), None)


def with_extensions_path(env: dict[str, str]) -> dict[str, str]:
    """``env`` with ``extensions/`` on PYTHONPATH, so child processes import napari_cloudmri from the checkout."""
    paths = [str(EXTENSIONS), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}


@pytest.fixture(scope="session")
def raw_file(tmp_path_factory) -> Path:
    return write_phantom(tmp_path_factory.mktemp("napari") / "phantom.h5", PHANTOM)


@dataclass
class LabelService:
    """The service, tokens of alice (researcher at siteA; ``expired`` is hers, expired), and a series of
    alice's phantom downloaded to ``series_file`` (named ``<series id>.h5``, as the service names it)."""

    service: ServiceProcess
    tokens: dict[str, str]
    series_id: str
    series_file: Path

    def client(self, user: str = "alice") -> Client:
        return Client(self.service.url, self.tokens[user])


@pytest.fixture(scope="module")
def label_service(tmp_path_factory, raw_file) -> LabelService:
    root = tmp_path_factory.mktemp("napari-workbench")
    env = service_env(root / "service", upload_chunk_mb=1)
    env["OMP_NUM_THREADS"] = "1"  # one torch thread per job: the machine's few cores are shared
    with ServiceProcess(env) as service:
        tokens = {"alice": create_token(env, "alice", "siteA", ["researcher"])}
        local = LocalTokens(service.data_dir / "service" / "tokens.json")
        tokens["expired"] = local.create("alice", "siteA", ROLE_SCOPES["researcher"], timedelta(seconds=-1))
        with Client(service.url, tokens["alice"]) as client:
            dataset = client.upload(raw_file)
            job = client.wait(client.submit(dataset["id"])["id"], timeout=300)
            assert job["status"] == "done", job
            series_file = client.download_series(job["series_id"], root / f"{job['series_id']}.h5")
        yield LabelService(service, tokens, job["series_id"], series_file)


@pytest.fixture
def as_alice(label_service, monkeypatch) -> LabelService:
    """This process talks to the service as alice (what Client() reads: URL and token from the environment)."""
    monkeypatch.setenv("CLOUDMRI_SERVICE_URL", label_service.service.url)
    monkeypatch.setenv("CLOUDMRI_SERVICE_TOKEN", label_service.tokens["alice"])
    return label_service
