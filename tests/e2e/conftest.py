"""End-to-end tests share the small phantom file with the service tests and the running workbench with the hub tests;
the Voilà app tests share a service process."""

from pathlib import Path

import pytest

from cloudmri_kernel.catalog import Catalog
from cloudmri_kernel.service.testing import ServiceProcess, service_env
from tests.browser import browser  # noqa: F401 - fixture: Debian's Chromium
from tests.hub.conftest import workbench  # noqa: F401 - fixture: the browser tests' running workbench
from tests.service.conftest import phantom_mrd  # noqa: F401 - fixture


@pytest.fixture(scope="module")
def app_service(tmp_path_factory):
    """A real API service process (local tokens, SQLite) for one module's Voilà apps, and its environment."""
    env = service_env(tmp_path_factory.mktemp("app-service"))
    with ServiceProcess(env) as running:
        yield running, env


def service_catalog(env: dict) -> Catalog:
    """The catalog of an :func:`app_service` (dispose it after use)."""
    return Catalog.open(f"sqlite:///{Path(env['CLOUDMRI_DATA_DIR']) / 'catalog.sqlite'}", migrate=False)
