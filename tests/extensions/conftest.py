"""Fixtures for the Jupyter server extension and the Cloud-MRI kernel: a real service, a real Jupyter server."""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass

import pytest

from tests.conftest import REPO
from tests.service.conftest import api, phantom_mrd  # noqa: F401 - fixtures shared with the service tests

EXTENSIONS = REPO / "extensions"
if importlib.util.find_spec("cloudmri_jupyter") is None:  # until pyproject.toml packages extensions/
    sys.path.insert(0, str(EXTENSIONS))

from cloudmri_jupyter.testing import JupyterServerProcess  # noqa: E402

from cloudmri_kernel.service.testing import ServiceProcess, create_token, service_env  # noqa: E402

SERVER_CONFIG = EXTENSIONS / "jupyter-config"  # its jupyter_server_config.d enables the extension
BASE_URL = "/user/alice/"  # as under JupyterHub


def with_extensions_path(env: dict[str, str]) -> dict[str, str]:
    """``env`` with ``extensions/`` on PYTHONPATH, so child processes import cloudmri_jupyter from the checkout."""
    paths = [str(EXTENSIONS), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}


@dataclass
class Workbench:
    """The service, alice's researcher token for it, and alice's Jupyter server configured to reach it."""

    service: ServiceProcess
    token: str
    env: dict[str, str]
    server: JupyterServerProcess | None = None


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The API service in local token mode, and the environment of alice's processes (her token in it)."""
    root = tmp_path_factory.mktemp("workbench")
    env = service_env(root / "service", upload_chunk_mb=1)
    with ServiceProcess(env) as process:
        token = create_token(env, "alice", "siteA", ["researcher"])
        yield Workbench(process, token, with_extensions_path(process.client_env(token, root / "client")))


@pytest.fixture(scope="module")
def workbench(service, tmp_path_factory) -> Workbench:
    """The service and alice's Jupyter server with the extension, enabled by the package's config file."""
    state = tmp_path_factory.mktemp("jupyter")
    with JupyterServerProcess(service.env, state, base_url=BASE_URL, config_path=[SERVER_CONFIG]) as server:
        yield Workbench(service.service, service.token, service.env, server)
