"""The notebook conveniences of cloudmri_kernel against the real app (in-process transport)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import cloudmri_kernel
from cloudmri_kernel import notebook
from cloudmri_kernel.errors import UsageError


@pytest.fixture
def fresh_default(monkeypatch):
    """No default client before the test; the one the test made is closed after it."""
    monkeypatch.setattr(notebook, "_client", None)
    yield
    if notebook._client is not None:
        notebook._client.close()


@pytest.fixture
def as_alice(api, fresh_default):
    return notebook.connect("http://testserver", api.tokens["alice"], transport=api.http._transport, backoff=0.001)


def test_the_functions_reach_the_service_as_the_user(as_alice, phantom_mrd):
    assert notebook.whoami()["user"] == "alice"
    dataset = notebook.upload(phantom_mrd)
    assert [d["id"] for d in notebook.datasets()] == [dataset["id"]]
    assert notebook.datasets(site="siteB") == []
    assert notebook.dataset(dataset["id"])["sha256"] == dataset["sha256"]
    seen = []
    series = notebook.reconstruct(dataset["id"], {"method": "sense"}, progress=seen.append)
    assert seen[-1]["status"] == "done" and seen[-1]["series_id"] == series["id"]
    assert series["dataset_id"] == dataset["id"] and series["shape"][-2:] == [64, 64]
    stack = notebook.images(series["id"])
    assert stack.shape == (1, 64, 64) and stack.dtype == np.float32
    assert np.array_equal(notebook.images(series["id"], 0), stack[0])


def test_reconstruct_without_waiting_returns_the_job(as_alice, phantom_mrd):
    dataset = notebook.upload(phantom_mrd)
    job = notebook.reconstruct(dataset["id"], {"method": "sense"}, wait=False)
    assert job["dataset_id"] == dataset["id"] and job["status"] in ("queued", "running", "done")
    assert notebook.default_client().wait(job["id"], timeout=120)["status"] == "done"


def test_the_default_client_comes_from_the_environment(fresh_default, monkeypatch):
    monkeypatch.setenv("CLOUDMRI_SERVICE_URL", "http://cloudmri.example.org/services/cloudmri/")
    monkeypatch.setenv("CLOUDMRI_SERVICE_TOKEN", "t0ken")
    first = notebook.default_client()
    assert first.url == "http://cloudmri.example.org/services/cloudmri"
    assert first._http.headers["Authorization"] == "token t0ken"
    assert notebook.default_client() is first
    second = notebook.connect("http://other.example.org", "other")
    assert notebook.default_client() is second and first._http.is_closed


def test_without_a_token_the_error_says_what_to_do(fresh_default, monkeypatch):
    for name in ("CLOUDMRI_SERVICE_TOKEN", "CLOUDMRI_SERVICE_TOKEN_FILE", "JUPYTERHUB_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UsageError, match="no token: set CLOUDMRI_SERVICE_TOKEN_FILE, run inside JupyterHub"):
        notebook.datasets()
    assert notebook._client is None


def test_importing_the_package_loads_no_http_or_numpy():
    code = ("import sys, cloudmri_kernel\n"
            "print([m for m in ('httpx', 'numpy', 'cloudmri_kernel.notebook') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout == "[]\n"


def test_the_package_forwards_the_notebook_functions():
    for name in notebook.__all__:
        assert getattr(cloudmri_kernel, name) is getattr(notebook, name)
        assert name in dir(cloudmri_kernel)
    with pytest.raises(AttributeError, match="has no attribute 'no_such_function'"):
        cloudmri_kernel.no_such_function  # noqa: B018 - the attribute access is the test
