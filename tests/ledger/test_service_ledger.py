"""The API service with a ledger on a real anvil node: anchoring of uploads, the node down and back, provenance of
a tampered stored object, and cross-site access by on-chain grants, revoked at once."""

from __future__ import annotations

import base64
import json
import shutil
import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from cloudmri_kernel import cli_ledger  # noqa: F401 - registers the ledger commands on app
from cloudmri_kernel.catalog import Catalog
from cloudmri_kernel.catalog.models import Label, Report
from cloudmri_kernel.cli import app as cli
from cloudmri_kernel.crypto import WrappedKey
from cloudmri_kernel.ledger.client import Ledger
from cloudmri_kernel.ledger.testing import ledger_for
from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from cloudmri_kernel.service.routes.reading import label_sha256, report_sha256
from tests.service.conftest import Api, make_tokens

runner = CliRunner()


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Two small, valid and different MRD files."""
    folder = tmp_path_factory.mktemp("scans")
    return [write_phantom(folder / f"scan{i}.h5", PhantomSpec(matrix=32, coils=2, accel=accel, calib=8))
            for i, accel in enumerate((1, 2))]


def _configure(monkeypatch, node, tmp_path) -> None:
    monkeypatch.setenv("CLOUDMRI_LEDGER_RPC_URL", node.url)
    monkeypatch.setenv("CLOUDMRI_LEDGER_BATCH_DELAY_S", "0")
    monkeypatch.setenv("CLOUDMRI_LEDGER_FLUSH_POLL_S", "0.1")
    monkeypatch.setenv("CLOUDMRI_LEDGER_ALERT_AFTER_S", "3600")
    monkeypatch.setenv("CLOUDMRI_UPLOAD_CHUNK_MB", "1")
    monkeypatch.delenv("JUPYTERHUB_API_URL", raising=False)


@pytest.fixture
def service_account(admin, node, monkeypatch, tmp_path) -> str:
    """The service's own key (made in DATA_DIR/ledger on first use), attached and registered for siteA."""
    _configure(monkeypatch, node, tmp_path)
    with Ledger.from_settings() as ledger:
        ledger.attach(admin.deployment["provenance"], admin.deployment["grants"])
        admin.register_site(ledger.address, "siteA")
        assert (ledger.directory / "keys" / "site.key").stat().st_mode & 0o777 == 0o600
        return ledger.address


@pytest.fixture
def api(service_account) -> Api:
    from cloudmri_kernel.config import settings
    from cloudmri_kernel.service.app import create_app

    tokens = make_tokens()
    with TestClient(create_app(), raise_server_exceptions=False) as http:
        yield Api(http, tokens, settings().data_dir)


def _until(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


def _anchored(api: Api, dataset_id: str) -> dict:
    def check():
        reply = api.get(f"/datasets/{dataset_id}/provenance", "alice")
        assert reply.status_code == 200, reply.text
        return reply.json() if reply.json()["state"] == "anchored" else None
    return _until(check, f"dataset {dataset_id} anchored")


def _metrics(api: Api) -> dict[str, float]:
    text = api.get("/metrics", "ada").text
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line.startswith("cloudmri_ledger_")}


def _audit(api: Api, action: str) -> list[dict]:
    return [e for e in api.audit_rows() if e["action"] == action]


def test_uploads_are_anchored_and_survive_a_node_outage(api, node, scans):
    first = api.upload(scans[0])
    assert first.status_code == 201, first.text
    first = first.json()
    proof = _anchored(api, first["id"])
    assert proof["sha256"] == first["sha256"] and proof["anchored_by_site"] == "siteA"
    assert proof["block_number"] >= 1 and proof["tx_hash"].startswith("0x") and proof["leaf_index"] == 0
    health = api.http.get("/health").json()
    assert health["status"] == "ok"
    assert health["ledger"] | {"oldest_queued_s": 0} == {"configured": True, "up": True, "backlog": 0,
                                                         "oldest_queued_s": 0, "alert": False, "last_error": ""}

    node.stop()  # a clean stop: anvil writes its state file
    second = api.upload(scans[1])
    assert second.status_code == 201, second.text  # the API keeps serving
    second = second.json()
    assert api.get(f"/datasets/{second['id']}/provenance", "alice").json()["state"] == "queued"
    outage = _until(lambda: _audit(api, "ledger-outage"), "the outage audited")
    assert outage[0]["outcome"] == "failure" and "1 records stay queued" in outage[0]["reason"]
    health = api.http.get("/health").json()
    assert health["status"] == "degraded"
    assert (health["ledger"]["up"], health["ledger"]["backlog"], health["ledger"]["alert"]) == (False, 1, True)
    assert "does not answer" in health["ledger"]["last_error"]
    gauges = _metrics(api)
    assert (gauges["cloudmri_ledger_configured"], gauges["cloudmri_ledger_up"], gauges["cloudmri_ledger_backlog"],
            gauges["cloudmri_ledger_alert"]) == (1, 0, 1, 1)

    node.start()  # the same state file and port: the chain resumes
    proof2 = _anchored(api, second["id"])
    assert proof2["block_number"] > proof["block_number"]
    assert _anchored(api, first["id"])["tx_hash"] == proof["tx_hash"]  # the old record is still on chain
    recovered = _until(lambda: _audit(api, "ledger-recovered"), "the recovery audited")
    assert recovered[0]["outcome"] == "success"
    assert _metrics(api)["cloudmri_ledger_alert"] == 0 and api.http.get("/health").json()["status"] == "ok"


def test_provenance_and_cli_verify_catch_a_tampered_store_object(api, scans):
    a = api.upload(scans[0]).json()
    b = api.upload(scans[1]).json()
    proof = _anchored(api, a["id"])
    assert len(proof["proof"]) == 0 or all(len(h) == 64 for h in proof["proof"])
    result = runner.invoke(cli, ["ledger", "verify", a["id"]])
    assert result.exit_code == 0, result.output
    assert f"verified sha256 {a['sha256']}" in result.output and f"siteA/{a['sha256']}" in result.output

    # files of object A replaced by B's, re-wrapped for A (someone holding the keys): decrypts, but to B's data
    root = api.data_dir / "store" / "objects" / "siteA"
    sidecar = json.loads((root / b["sha256"][:2] / f"{b['sha256']}.key").read_text())
    from cloudmri_kernel.store import ObjectStore

    keyring = ObjectStore.from_settings().keyring
    key = keyring.unwrap(WrappedKey(sidecar["kek_id"], base64.b64decode(sidecar["wrapped"])),
                         f"siteA/{b['sha256']}".encode())
    forged = keyring.wrap("siteA", key, f"siteA/{a['sha256']}".encode())
    sidecar.update(kek_id=forged.kek_id, wrapped=base64.b64encode(forged.wrapped).decode())
    data_a = root / a["sha256"][:2] / a["sha256"]
    original = data_a.read_bytes(), (root / a["sha256"][:2] / f"{a['sha256']}.key").read_text()
    (root / a["sha256"][:2] / f"{a['sha256']}.key").write_text(json.dumps(sidecar))
    shutil.copyfile(root / b["sha256"][:2] / b["sha256"], data_a)
    reply = api.get(f"/datasets/{a['id']}/provenance", "alice")
    assert reply.status_code == 409
    assert (f"TAMPERED: dataset {a['id']}: the stored object siteA/{a['sha256']} decrypts to sha256 {b['sha256']}, "
            f"but the ledger anchored sha256 {a['sha256']} in block {proof['block_number']}, transaction "
            f"{proof['tx_hash']}") == reply.json()["detail"]
    result = runner.invoke(cli, ["ledger", "verify", a["id"]])
    assert result.exit_code == 1
    assert b["sha256"] in result.output and a["sha256"] in result.output and "TAMPERED" in result.output

    # one flipped byte of the ciphertext: it no longer authenticates
    data_a.write_bytes(original[0])
    (root / a["sha256"][:2] / f"{a['sha256']}.key").write_text(original[1])
    assert api.get(f"/datasets/{a['id']}/provenance", "alice").status_code == 200
    damaged = bytearray(original[0])
    damaged[len(damaged) // 2] ^= 0x01
    data_a.write_bytes(bytes(damaged))
    reply = api.get(f"/datasets/{a['id']}/provenance", "alice")
    assert reply.status_code == 409
    detail = reply.json()["detail"]
    assert detail.startswith(f"TAMPERED: dataset {a['id']}: the ledger anchored sha256 {a['sha256']} in block")
    assert "fails authentication" in detail and "the stored ciphertext's sha256 is" in detail
    event = next(e for e in api.audit_rows() if e["action"] == "provenance")
    assert event["status_code"] == 409 and event["reason"].startswith("verification failed: TAMPERED")


def test_on_chain_grant_lets_another_site_read_and_revocation_is_immediate(api, admin, node, scans, tmp_path):
    site_b = ledger_for(tmp_path / "siteB-ledger", node.url)
    admin.register_site(site_b.address, "siteB")
    dataset = api.upload(scans[0]).json()
    _anchored(api, dataset["id"])
    series = f"/datasets/{dataset['id']}/series"
    assert api.get(series, "bob").status_code == 403
    grant = {"dataset_id": dataset["id"], "site": "siteB", "scope": "read-images",
             "expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()}
    assert api.post("/ledger/grants", "bea", json=grant).status_code == 403  # siteB's admin: not her dataset
    made = api.post("/ledger/grants", "ada", json=grant)
    assert made.status_code == 201, made.text
    assert [(g["account"], g["scope"], g["active"]) for g in made.json()] == [(site_b.address, "read-images", True)]
    assert admin.is_granted(dataset["sha256"], site_b.address, "read-images")

    assert api.get(series, "bob").status_code == 200
    assert api.get(f"/datasets/{dataset['id']}", "bob").status_code == 200
    assert api.get(f"/datasets/{dataset['id']}/raw", "bob").status_code == 403  # images only, not raw k-space
    listed = api.get("/ledger/grants", "ada", params={"dataset_id": dataset["id"]}).json()
    assert [(g["account"], g["active"]) for g in listed] == [(site_b.address, True)]

    revoked = api.delete("/ledger/grants", "ada", params={"dataset_id": dataset["id"], "site": "siteB",
                                                           "scope": "read-images"})
    assert revoked.status_code == 200, revoked.text
    assert api.get(series, "bob").status_code == 403  # at once, despite the cache
    again = api.delete("/ledger/grants", "ada", params={"dataset_id": dataset["id"], "site": "siteB",
                                                         "scope": "read-images"})
    assert again.status_code == 400 and "no active read-images grant" in again.json()["detail"]

    decisions = [(e["user"], e["outcome"], e["details"]["source"], e["details"]["need"])
                 for e in reversed(_audit(api, "grant-decision")) if e["dataset_id"] == dataset["id"]]
    assert decisions == [("bob", "failure", "chain", "read-images"), ("bob", "success", "chain", "read-images"),
                         ("bob", "success", "chain", "see"), ("bob", "failure", "chain", "read-raw"),
                         ("bob", "failure", "chain", "read-images")]
    allowed = next(e for e in _audit(api, "grant-decision") if e["outcome"] == "success")
    assert f"on-chain grant of read-images to {site_b.address} of site siteB" in allowed["reason"]
    site_b.close()


def test_node_down_refuses_what_only_the_chain_could_allow(api, admin, node, scans, tmp_path):
    site_b = ledger_for(tmp_path / "siteB-ledger", node.url)
    admin.register_site(site_b.address, "siteB")
    dataset = api.upload(scans[0]).json()
    _anchored(api, dataset["id"])
    node.stop()
    reply = api.get(f"/datasets/{dataset['id']}/series", "bob")
    assert reply.status_code == 403 and "ledger node does not answer" in reply.json()["detail"]
    assert api.get(f"/datasets/{dataset['id']}/series", "alice").status_code == 200  # own site: no chain needed
    site_b.close()


def test_without_a_ledger_the_service_says_so(monkeypatch, tmp_path):
    from cloudmri_kernel.service.app import create_app

    monkeypatch.delenv("JUPYTERHUB_API_URL", raising=False)
    tokens = make_tokens()
    with TestClient(create_app(), raise_server_exceptions=False) as http:
        api = Api(http, tokens, tmp_path)
        assert http.get("/health").json()["ledger"] == {"configured": False}
        assert _metrics(api) == {"cloudmri_ledger_configured": 0.0}
        reply = api.get("/datasets/" + "0" * 32 + "/provenance", "alice")
        assert reply.status_code == 400 and "without a ledger" in reply.json()["detail"]


def test_each_saved_label_set_and_each_signed_report_is_anchored(api, scans):
    dataset = api.upload(scans[0]).json()
    job = api.post("/jobs", "alice", json={"dataset_id": dataset["id"], "recipe": {"method": "ifft"}}).json()
    job = _until(lambda: (j := api.get(f"/jobs/{job['id']}", "alice").json())["status"] in ("done", "failed") and j,
                 "the reconstruction")
    assert job["status"] == "done", job
    url = f"/series/{job['series_id']}/labels/reading"
    roi = {"kind": "rectangle", "slice": 0, "label": "lesion", "points": [[1, 1], [4, 4]]}
    first = api.put(url, "rita", json={"vocabulary": ["lesion"], "rois": [roi], "version": 0}).json()
    second = api.put(url, "rita", json={"vocabulary": ["lesion"], "rois": [roi, roi], "version": 1}).json()
    report = api.post(f"/datasets/{dataset['id']}/reports", "rita", json={"impression": "Normal."}).json()
    signed = api.post(f"/reports/{report['id']}/sign", "rita", json={"version": 1}).json()
    assert len({first["sha256"], second["sha256"], signed["sha256"]}) == 3  # each version has its own hash

    def history():
        records = api.get(f"/datasets/{dataset['id']}/ledger-history", "alice").json()
        kinds = [r["kind"] for r in records]
        confirmed = all(r["state"] == "confirmed" for r in records)
        return records if confirmed and kinds.count("label") == 2 and "report" in kinds else None

    records = _until(history, "label sets and the signed report anchored")
    assert {(r["kind"], r["object_hash"]) for r in records} >= {
        ("label", first["sha256"]), ("label", second["sha256"]), ("report", signed["sha256"])}
    assert all(r["block_number"] and r["proof"] is not None for r in records)
    catalog = Catalog.open(migrate=False)  # the hashes are recomputed from what the catalog holds
    try:
        with catalog.session() as db:
            (label,) = db.scalars(select(Label))
            assert label_sha256(label) == second["sha256"] == label.sha256
            assert report_sha256(db.get(Report, report["id"])) == signed["sha256"]
    finally:
        catalog.dispose()
