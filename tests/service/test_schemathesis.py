"""Property-based fuzzing of every operation in the published OpenAPI spec (schemathesis): whatever the input,
the service answers without a server error. Runs as an admin and as a researcher so that requests get past
authentication and into the handlers, with a dataset and a series in the catalog."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from cloudmri_kernel.service.app import create_app
from tests.service.conftest import make_tokens

app = create_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def running(tmp_path_factory, phantom_mrd):
    """The app's lifespan (catalog, store, job runner) on a fresh SQLite data dir, with seeded data."""
    state = tmp_path_factory.mktemp("fuzz")
    patch = pytest.MonkeyPatch()
    patch.setenv("CLOUDMRI_DATA_DIR", str(state))
    patch.setenv("CLOUDMRI_UPLOAD_CHUNK_MB", "1")
    patch.delenv("CLOUDMRI_CATALOG_URL", raising=False)
    patch.delenv("JUPYTERHUB_API_URL", raising=False)
    tokens = make_tokens()
    with TestClient(app) as http:
        from tests.service.conftest import Api

        Api(http, tokens, state).upload(phantom_mrd)
        yield tokens
    patch.undo()


@pytest.mark.slow
@pytest.mark.parametrize("user", ["ada", "alice"])
@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case, user, running):
    case.call_and_validate(headers={"Authorization": f"token {running[user]}"},
                           checks=[schemathesis.checks.not_a_server_error])
