"""The Python client against the real app (in-process transport): uploads with progress, resume and retries,
verified downloads, jobs, images, reading, grants and audit."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest

from cloudmri_kernel.client import Client, ServiceError, save_token
from cloudmri_kernel.errors import CloudMRIError, UsageError


class Flaky(httpx.BaseTransport):
    """Passes requests on, but fails chosen ones the way a network or a restarting service does."""

    def __init__(self, inner: httpx.BaseTransport, drop_chunk_after: int | None = None, unavailable: int = 0):
        self.inner, self.drop_chunk_after, self.unavailable = inner, drop_chunk_after, unavailable
        self.chunk_offsets: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.unavailable:
            self.unavailable -= 1
            return httpx.Response(503, json={"detail": "restarting"})
        if request.method == "PUT":
            if self.drop_chunk_after is not None and len(self.chunk_offsets) >= self.drop_chunk_after:
                raise httpx.ConnectError("connection reset by peer")
            self.chunk_offsets.append(int(request.url.params["offset"]))
        return self.inner.handle_request(request)


@pytest.fixture
def client_for(api):
    made = []

    def make(user: str = "alice", transport: httpx.BaseTransport | None = None, **kwargs) -> Client:
        client = Client("http://testserver", api.tokens[user], transport=transport or api.http._transport,
                        backoff=0.001, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def test_upload_with_progress_then_search_and_download(client_for, phantom_mrd, tmp_path):
    client = client_for()
    seen = []
    dataset = client.upload(phantom_mrd, progress=lambda done, total: seen.append((done, total)))
    size = phantom_mrd.stat().st_size
    assert seen[-1] == (size, size) and len(seen) == -(-size // (1 << 20))
    assert [d["id"] for d in client.datasets(site="siteA")] == [dataset["id"]]
    path = client.download_raw(dataset["id"], tmp_path / "raw.h5")
    assert path.read_bytes() == phantom_mrd.read_bytes()


def test_interrupted_upload_resumes_where_the_service_acknowledged(api, client_for, tmp_path):
    data = np.random.default_rng(0).bytes(3 << 20)  # 3 chunks of 1 MiB; invalid MRD, so completion says 422
    path = tmp_path / "big.h5"
    path.write_bytes(data)
    first = Flaky(api.http._transport, drop_chunk_after=1)
    with pytest.raises(UsageError, match="cannot reach"):
        client_for(transport=first, retries=2).upload(path)
    assert first.chunk_offsets == [0]
    second = Flaky(api.http._transport)
    with pytest.raises(ServiceError) as failure:
        client_for(transport=second).upload(path)
    assert second.chunk_offsets == [1 << 20, 2 << 20]  # only the missing chunks were sent
    assert failure.value.status == 422 and failure.value.detail["findings"]


class LoseCompletion(httpx.BaseTransport):
    """The service commits the upload, but its answer never arrives."""

    def __init__(self, inner: httpx.BaseTransport):
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path.endswith("/complete"):
            raise httpx.ReadError("connection closed before the answer")
        return response


def test_lost_answer_to_completion_returns_the_committed_dataset(api, client_for, phantom_mrd):
    with pytest.raises(UsageError, match="cannot reach"):
        client_for(transport=LoseCompletion(api.http._transport), retries=1).upload(phantom_mrd)
    second = Flaky(api.http._transport)
    dataset = client_for(transport=second).upload(phantom_mrd)
    assert second.chunk_offsets == []  # nothing is sent again
    assert dataset["sha256"] == hashlib.sha256(phantom_mrd.read_bytes()).hexdigest()


def test_retries_when_the_service_is_briefly_unavailable(api, client_for):
    assert client_for(transport=Flaky(api.http._transport, unavailable=3)).whoami()["user"] == "alice"
    with pytest.raises(ServiceError) as failure:
        client_for(transport=Flaky(api.http._transport, unavailable=10), retries=3).whoami()
    assert failure.value.status == 503


def test_refusals_carry_status_and_exit_code(client_for, phantom_mrd):
    dataset = client_for().upload(phantom_mrd)
    with pytest.raises(ServiceError) as failure:
        client_for("bob").dataset(dataset["id"])
    assert failure.value.status == 403 and failure.value.exit_code == 2 and "siteA" in str(failure.value)


def test_reconstruct_view_label_report_grant_audit(client_for, phantom_mrd, tmp_path):
    alice, ada, rita, bob = (client_for(u) for u in ("alice", "ada", "rita", "bob"))
    dataset = alice.upload(phantom_mrd)
    job = alice.wait(alice.submit(dataset["id"], {"method": "sense"})["id"], timeout=120)
    assert job["status"] == "done"
    images = alice.images(job["series_id"])
    assert images.shape == (1, 64, 64) and images.dtype == np.float32
    assert np.array_equal(alice.images(job["series_id"], index=0), images[0])
    assert alice.image_png(job["series_id"], 0, window=(0, float(images.max())))[:8] == b"\x89PNG\r\n\x1a\n"
    series_file = alice.download_series(job["series_id"], tmp_path / "images.h5")
    assert hashlib.sha256(series_file.read_bytes()).hexdigest() == alice.series(job["series_id"])["sha256"]
    assert rita.save_labels(job["series_id"], "main", [{"type": "rectangle", "slice": 0}], ["lesion"])["reader"] \
        == "rita"
    assert rita.score(job["series_id"], 5)["score"] == 5
    report = rita.create_report(dataset["id"], "Phantom.", "Normal.")
    assert rita.sign_report(report["id"])["status"] == "signed"
    assignment = ada.assign(dataset["id"], "rita", priority=3)
    assert rita.worklist()[0]["id"] == assignment["id"]
    grant = ada.grant(dataset["id"], "read-images", datetime.now(UTC) + timedelta(days=1), user="bob")
    assert bob.images(job["series_id"]).shape == (1, 64, 64)
    ada.revoke(grant["id"])
    with pytest.raises(ServiceError):
        bob.images(job["series_id"])
    actions = [e["action"] for e in ada.audit(user="bob")]
    assert actions.count("image_array") == 2
    assert ada.audit(user="bob", outcome="failure")[0]["status_code"] == 403


def test_failed_download_leaves_nothing(client_for, phantom_mrd, tmp_path):
    client, target = client_for(), tmp_path / "downloads"
    target.mkdir()
    with pytest.raises(ServiceError):
        client.download_raw("f" * 32, target / "raw.h5")
    assert list(target.iterdir()) == []


def test_token_from_environment_and_saved_file(monkeypatch, tmp_path):
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    with pytest.raises(UsageError, match="no token"):
        Client("http://127.0.0.1:1")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "from-the-hub")
    assert Client("http://127.0.0.1:1")._http.headers["authorization"] == "token from-the-hub"
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN")
    path = save_token("saved-token")
    assert path.stat().st_mode & 0o777 == 0o600
    assert Client("http://127.0.0.1:1")._http.headers["authorization"] == "token saved-token"
    loose = tmp_path / "loose"
    loose.write_text("x")
    loose.chmod(0o644)
    monkeypatch.setenv("CLOUDMRI_SERVICE_TOKEN_FILE", str(loose))
    with pytest.raises(UsageError, match="chmod 600"):
        Client("http://127.0.0.1:1")


def test_unreachable_service_is_a_clear_error():
    client = Client("http://127.0.0.1:9", "token", retries=2, backoff=0.001)
    with pytest.raises(CloudMRIError, match="cannot reach the Cloud-MRI service at http://127.0.0.1:9"):
        client.whoami()


@pytest.mark.parametrize(("chain", "warned"), [("unavailable", True), ("ok", False), (None, False)])
def test_a_listing_without_the_chain_warns(chain, warned, recwarn):
    """The service's header says whether datasets granted on chain could be listed (see tests/ledger)."""
    rows = [{"id": "a" * 32, "access": "site"}]

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/datasets" and request.url.params["site"] == "siteA"
        return httpx.Response(200, json=rows, headers={"X-CloudMRI-Chain-Grants": chain} if chain else {})

    with Client("http://service", "t0ken", transport=httpx.MockTransport(answer)) as client:
        assert client.datasets(site="siteA") == rows
    messages = [str(w.message) for w in recwarn]
    assert messages == (["the service's ledger node does not answer: datasets granted only on chain are not listed"]
                        if warned else [])
