"""The API service in-process (its real app, lifespan, catalog and store), on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import h5py
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from cloudmri_kernel.catalog import Catalog
from cloudmri_kernel.catalog.models import AuditEvent, Dataset, Upload
from cloudmri_kernel.store import ObjectStore


def _later(days: float = 1) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def _stored_objects() -> list:
    return list(ObjectStore.from_settings().iter_objects())


def _wait(api, job_id: str, user: str = "alice", timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/jobs/{job_id}", user).json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")


@pytest.fixture
def dataset(api, phantom_mrd) -> dict:
    reply = api.upload(phantom_mrd)
    assert reply.status_code == 201, reply.text
    return reply.json()


@pytest.fixture
def series(api, dataset) -> dict:
    job = api.post("/jobs", "alice", json={"dataset_id": dataset["id"]}).json()
    job = _wait(api, job["id"])
    assert job["status"] == "done", job
    return api.get(f"/series/{job['series_id']}", "alice").json()


def test_health_needs_no_token_and_everything_else_does(api):
    assert api.http.get("/health").json()["status"] == "ok"
    assert api.http.get("/api/v1/datasets").status_code == 401
    reply = api.http.get("/api/v1/datasets", headers={"Authorization": "token not-a-token"})
    assert reply.status_code == 401 and reply.headers["www-authenticate"] == "token"
    assert api.http.get("/api/v1/datasets", headers={"Authorization": "Basic abc"}).status_code == 401


def test_expired_token_is_401_and_audited(api):
    reply = api.get("/datasets", "expired")
    assert reply.status_code == 401 and "expired" in reply.json()["detail"]
    failures = [e for e in api.audit_rows() if e["status_code"] == 401]
    assert failures[0]["category"] == "authentication" and failures[0]["outcome"] == "failure"
    assert "expired" in failures[0]["reason"]


def test_whoami_reports_role_scopes(api):
    assert api.get("/whoami", "rita").json() == {"user": "rita", "site": "siteA",
                                                 "scopes": ["label", "read-images", "report"]}


def test_upload_stores_encrypted_object_and_catalogs_header_fields(api, phantom_mrd, catalog_url):
    raw = phantom_mrd.read_bytes()
    reply = api.upload(phantom_mrd)
    assert reply.status_code == 201, reply.text
    dataset = reply.json()
    assert dataset["sha256"] == hashlib.sha256(raw).hexdigest() and dataset["size"] == len(raw)
    assert dataset["site"] == "siteA" and dataset["uploaded_by"] == "alice"
    assert dataset["summary"]["encoded_matrix"][1] == 64 and dataset["summary"]["coils"] == 4
    assert _stored_objects() == [("siteA", dataset["sha256"])]
    stored = next((api.data_dir / "store").rglob(dataset["sha256"]))
    assert raw[:64] not in stored.read_bytes()  # encrypted at rest
    with Catalog.open(catalog_url).session() as session:
        row = session.get(Dataset, dataset["id"])
        assert (row.sha256, row.site, row.field_strength_t) == (dataset["sha256"], "siteA",
                                                                dataset["field_strength_t"])
    assert list((api.data_dir / "service" / "staging").iterdir()) == []


def test_same_file_twice_is_one_dataset(api, phantom_mrd):
    first, second = api.upload(phantom_mrd).json(), api.upload(phantom_mrd).json()
    assert first["id"] == second["id"] and len(_stored_objects()) == 1


def test_two_users_completing_the_same_file_at_once_get_one_dataset(api, phantom_mrd):
    from concurrent.futures import ThreadPoolExecutor

    data = phantom_mrd.read_bytes()
    declared = {"filename": "p.h5", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    uploads = []
    for user in ("alice", "ada"):
        upload = api.post("/uploads", user, json=declared).json()
        api.put(f"/uploads/{upload['id']}/chunks", user, params={"offset": 0}, content=data)
        uploads.append((user, upload["id"]))
    with ThreadPoolExecutor(2) as pool:
        replies = list(pool.map(lambda u: api.post(f"/uploads/{u[1]}/complete", u[0]), uploads))
    assert [r.status_code for r in replies] == [201, 201]
    assert replies[0].json()["id"] == replies[1].json()["id"]
    assert len(api.get("/datasets", "alice").json()) == 1


def test_stale_staged_files_are_removed_at_start(api, phantom_mrd, catalog_url):
    from fastapi.testclient import TestClient

    from cloudmri_kernel.service.app import create_app

    dataset = api.upload(phantom_mrd).json()
    staging = api.data_dir / "service" / "staging"
    open_upload = api.post("/uploads", "alice", json={"filename": "x", "size": 10, "sha256": "a" * 64}).json()
    api.put(f"/uploads/{open_upload['id']}/chunks", "alice", params={"offset": 0}, content=b"12345")
    leftover = staging / f"{'b' * 32}.part"  # as if the service stopped between commit and clean-up
    leftover.write_bytes(b"stale")
    abandoned = api.post("/uploads", "alice", json={"filename": "y", "size": 10, "sha256": "c" * 64}).json()
    api.put(f"/uploads/{abandoned['id']}/chunks", "alice", params={"offset": 0}, content=b"123")
    four_days_ago = datetime.now(UTC) - timedelta(days=4)
    os.utime(staging / f"{abandoned['id']}.part", (four_days_ago.timestamp(),) * 2)
    with Catalog.open(catalog_url).session() as session:
        session.get(Upload, abandoned["id"]).updated_at = four_days_ago
    with TestClient(create_app()):
        assert sorted(p.name for p in staging.iterdir()) == [f"{open_upload['id']}.part"]
        expired = api.get(f"/uploads/{abandoned['id']}", "alice").json()
    assert expired["status"] == "failed"
    assert api.get(f"/uploads/{open_upload['id']}", "alice").json()["offset"] == 5
    assert dataset["id"]


def test_hash_mismatch_is_rejected_and_nothing_is_stored(api, phantom_mrd):
    reply = api.upload(phantom_mrd, declared_sha256="0" * 64)
    assert reply.status_code == 422 and "was declared" in reply.json()["detail"]
    assert _stored_objects() == [] and api.get("/datasets", "alice").json() == []
    assert list((api.data_dir / "service" / "staging").iterdir()) == []
    event = next(e for e in api.audit_rows() if e["action"] == "complete_upload")
    assert (event["outcome"], event["reason"]) == ("failure", "hash mismatch")


@pytest.mark.parametrize("content", [b"not an HDF5 file at all", "hdf5-without-mrd"])
def test_malformed_mrd_is_422_with_findings_and_nothing_is_stored(api, tmp_path, content):
    if content == "hdf5-without-mrd":
        with h5py.File(tmp_path / "x.h5", "w") as handle:
            handle["something"] = np.arange(10)
        content = (tmp_path / "x.h5").read_bytes()
    reply = api.upload(content)
    assert reply.status_code == 422
    detail = reply.json()["detail"]
    assert detail["findings"] and detail["findings"][0]["severity"] == "error"
    assert _stored_objects() == [] and api.get("/datasets", "alice").json() == []


def test_upload_resumes_from_acknowledged_offset(api, phantom_mrd):
    data = phantom_mrd.read_bytes()
    upload = api.post("/uploads", "alice", json={"filename": "p.h5", "size": len(data),
                                                 "sha256": hashlib.sha256(data).hexdigest()}).json()
    chunk = 100_000
    assert api.put(f"/uploads/{upload['id']}/chunks", "alice", params={"offset": 0},
                   content=data[:chunk]).json()["offset"] == chunk
    # the client lost its connection: it asks where to continue
    assert api.get(f"/uploads/{upload['id']}", "alice").json()["offset"] == chunk
    wrong = api.put(f"/uploads/{upload['id']}/chunks", "alice", params={"offset": 0}, content=data[:chunk])
    assert wrong.status_code == 409 and wrong.json()["offset"] == chunk
    early = api.post(f"/uploads/{upload['id']}/complete", "alice")
    assert early.status_code == 409 and early.json()["offset"] == chunk
    api.put(f"/uploads/{upload['id']}/chunks", "alice", params={"offset": chunk}, content=data[chunk:])
    done = api.post(f"/uploads/{upload['id']}/complete", "alice")
    assert done.status_code == 201 and done.json()["sha256"] == hashlib.sha256(data).hexdigest()


def test_uploads_belong_to_their_user(api, phantom_mrd):
    upload = api.post("/uploads", "alice", json={"filename": "p.h5", "size": 10, "sha256": "a" * 64}).json()
    assert api.put(f"/uploads/{upload['id']}/chunks", "bob", params={"offset": 0},
                   content=b"x").status_code == 403
    assert api.post("/uploads", "rita", json={"filename": "p.h5", "size": 10, "sha256": "a" * 64}
                    ).status_code == 403


def test_oversized_and_overlong_chunks_are_rejected(api):
    upload = api.post("/uploads", "alice", json={"filename": "p.h5", "size": 3 << 20, "sha256": "a" * 64}).json()
    too_big = api.put(f"/uploads/{upload['id']}/chunks", "alice", params={"offset": 0},
                      content=b"x" * ((1 << 20) + 1))
    assert too_big.status_code == 413
    small = api.post("/uploads", "alice", json={"filename": "p.h5", "size": 10, "sha256": "a" * 64}).json()
    overlong = api.put(f"/uploads/{small['id']}/chunks", "alice", params={"offset": 0}, content=b"x" * 11)
    assert overlong.status_code == 400 and "10 were declared" in overlong.json()["detail"]
    assert api.get(f"/uploads/{small['id']}", "alice").json()["offset"] == 0


def test_path_traversal_names_nothing(api, dataset):
    for path in ("/datasets/..%2F..%2Fetc%2Fpasswd", "/datasets/../../etc/passwd/raw",
                 "/uploads/..%2F..%2Fservice%2Ftokens.json", f"/datasets/{dataset['id']}%00/raw"):
        assert api.get(path, "alice").status_code in (404, 422), path
    bad_label = api.put("/series/" + "a" * 32 + "/labels/..%2F..%2Fx", "alice", json={})
    assert bad_label.status_code in (404, 422)


def test_search_filters(api, dataset, phantom_mrd):
    assert [d["id"] for d in api.get("/datasets", "alice", params={"site": "siteA"}).json()] == [dataset["id"]]
    assert api.get("/datasets", "alice", params={"site": "siteB"}).json() == []
    assert len(api.get("/datasets", "alice", params={"text": "scan"}).json()) == 1
    assert api.get("/datasets", "alice", params={"text": "%"}).json() == []
    strength = dataset["field_strength_t"]
    assert len(api.get("/datasets", "alice", params={"field_strength_t": strength}).json()) == 1
    assert api.get("/datasets", "alice", params={"field_strength_t": strength + 1}).json() == []
    if dataset["acquired_at"]:
        day = dataset["acquired_at"][:10]
        assert len(api.get("/datasets", "alice", params={"acquired_from": day + "T00:00:00Z"}).json()) == 1
        assert api.get("/datasets", "alice", params={"acquired_to": "1990-01-01T00:00:00Z"}).json() == []


def test_raw_download_matches_and_is_audited(api, dataset, phantom_mrd):
    reply = api.get(f"/datasets/{dataset['id']}/raw", "alice")
    assert reply.status_code == 200 and reply.content == phantom_mrd.read_bytes()
    assert reply.headers["x-content-sha256"] == dataset["sha256"]
    event = next(e for e in api.audit_rows() if e["action"] == "download_raw")
    assert (event["user"], event["dataset_id"], event["outcome"], event["reason"]) == (
        "alice", dataset["id"], "success", "via site")


def test_other_site_needs_a_grant_and_refusals_are_audited(api, dataset):
    for path in (f"/datasets/{dataset['id']}", f"/datasets/{dataset['id']}/raw"):
        reply = api.get(path, "bob")
        assert reply.status_code == 403 and "siteA" in reply.json()["detail"]
    assert api.get("/datasets", "bob").json() == []
    refused = [e for e in api.audit_rows() if e["user"] == "bob" and e["status_code"] == 403]
    assert len(refused) == 2 and all(e["dataset_id"] == dataset["id"] and e["reason"] for e in refused)


def test_radiologist_sees_images_not_raw_unless_granted(api, dataset, series):
    assert api.get(f"/datasets/{dataset['id']}/raw", "rita").status_code == 403
    assert api.get(f"/series/{series['id']}/images/0.png", "rita").status_code == 200
    grant = api.post("/grants", "ada", json={"dataset_id": dataset["id"], "user": "rita", "scope": "read-raw",
                                             "expires_at": _later(), "reason": "teaching file"})
    assert grant.status_code == 201, grant.text
    assert api.get(f"/datasets/{dataset['id']}/raw", "rita").status_code == 200


def test_grant_lifecycle_across_sites(api, dataset):
    path = f"/datasets/{dataset['id']}/raw"
    api.post("/sites", "bea", json={"name": "siteB"})
    grant = api.post("/grants", "ada", json={"dataset_id": dataset["id"], "site": "siteB", "scope": "read-raw",
                                             "expires_at": _later()}).json()
    assert api.get(path, "bob").status_code == 200
    assert [d["id"] for d in api.get("/datasets", "bob").json()] == [dataset["id"]]
    assert api.get("/grants", "bob").json()[0]["id"] == grant["id"]
    revoked = api.delete(f"/grants/{grant['id']}", "ada").json()
    assert revoked["revoked_by"] == "ada"
    assert api.get(path, "bob").status_code == 403  # revocation takes effect at once
    assert api.get("/grants", "ada", params={"active": False}).json()[0]["revoked_at"] is not None
    actions = {e["action"] for e in api.audit_rows()}
    assert {"create_grant", "revoke_grant"} <= actions


def test_grants_images_only_and_expiry(api, dataset, series):
    grant = api.post("/grants", "ada", json={"dataset_id": dataset["id"], "user": "bob", "scope": "read-images",
                                             "expires_at": _later(1 / 86400 / 2)})
    assert grant.status_code == 201
    assert api.get(f"/series/{series['id']}/images/0.png", "bob").status_code == 200
    assert api.get(f"/datasets/{dataset['id']}/raw", "bob").status_code == 403
    time.sleep(0.6)
    assert api.get(f"/series/{series['id']}/images/0.png", "bob").status_code == 403


def test_only_the_owning_site_admin_grants(api, dataset):
    body = {"dataset_id": dataset["id"], "user": "bob", "scope": "read-raw", "expires_at": _later()}
    assert api.post("/grants", "bea", json=body).status_code == 403  # admin, but of another site
    assert api.post("/grants", "alice", json=body).status_code == 403  # same site, not an admin
    assert api.post("/grants", "ada", json={**body, "expires_at": _later(-1)}).status_code == 400
    assert api.post("/grants", "ada", json={**body, "site": "siteA"}).status_code == 400
    assert api.post("/grants", "ada", json={**body, "scope": "everything"}).status_code == 422


def test_reconstruction_job_gives_a_series_with_its_recipe(api, dataset, series, phantom_mrd):
    from cloudmri_kernel.recon.engine import reconstruct_file

    assert series["dataset_id"] == dataset["id"] and series["source_sha256"] == dataset["sha256"]
    assert series["method"] == "grappa" and series["recipe"]["method"] == "grappa"
    volume = np.load(io.BytesIO(api.get(f"/series/{series['id']}/array", "alice").content))
    local = reconstruct_file(phantom_mrd).images.reshape(volume.shape)
    np.testing.assert_allclose(volume, local, rtol=1e-5, atol=1e-6 * local.max())
    png = Image.open(io.BytesIO(api.get(f"/series/{series['id']}/images/0.png", "alice").content))
    assert png.size == (64, 64) and png.mode == "L"
    assert api.get(f"/series/{series['id']}/images/5.png", "alice").status_code == 400
    assert api.get(f"/series/{series['id']}/images/0.png", "alice", params={"low": 5}).status_code == 400
    mrd_file = api.get(f"/series/{series['id']}/file", "alice")
    assert hashlib.sha256(mrd_file.content).hexdigest() == series["sha256"]


def test_job_with_explicit_recipe_and_bad_recipe(api, dataset):
    bad = api.post("/jobs", "alice", json={"dataset_id": dataset["id"], "recipe": {"method": "magic"}})
    assert bad.status_code in (400, 422)
    assert api.post("/jobs", "rita", json={"dataset_id": dataset["id"]}).status_code == 403
    job = api.post("/jobs", "alice", json={"dataset_id": dataset["id"], "recipe": {"method": "ifft"}})
    assert job.status_code == 202
    finished = _wait(api, job.json()["id"])
    assert finished["status"] == "done"
    assert api.get(f"/series/{finished['series_id']}", "alice").json()["method"] == "ifft"
    assert api.get(f"/jobs/{finished['id']}", "bob").status_code == 403


def test_labels_are_kept_per_reader(api, series):
    roi = {"type": "polygon", "slice": 0, "label": "lesion", "points": [[1, 1], [5, 1], [5, 5]]}
    assert api.put(f"/series/{series['id']}/labels/main", "rita",
                   json={"vocabulary": ["lesion"], "rois": [roi]}).status_code == 200
    assert api.put(f"/series/{series['id']}/labels/main", "alice", json={"rois": []}).status_code == 200
    again = api.put(f"/series/{series['id']}/labels/main", "rita", json={"vocabulary": ["lesion"],
                                                                          "rois": [roi, roi]}).json()
    labels = api.get(f"/series/{series['id']}/labels", "ada").json()
    assert [(label["reader"], len(label["rois"])) for label in labels] == [("alice", 0), ("rita", 2)]
    assert again["id"] == labels[1]["id"]
    assert api.put(f"/series/{series['id']}/labels/main", "bob", json={}).status_code == 403


def test_quality_scores(api, series):
    assert api.post(f"/series/{series['id']}/scores", "rita", json={"score": 4, "criteria": {"noise": 3}}
                    ).status_code == 201
    assert api.post(f"/series/{series['id']}/scores", "rita", json={"score": 6}).status_code == 422
    assert api.post(f"/series/{series['id']}/scores", "rita", json={"score": 3, "criteria": {"noise": 0}}
                    ).status_code == 400
    assert [s["score"] for s in api.get(f"/series/{series['id']}/scores", "alice").json()] == [4]


def test_report_sign_off_locks_and_hashes(api, dataset):
    from cloudmri_kernel.service.routes.reading import report_sha256

    report = api.post(f"/datasets/{dataset['id']}/reports", "rita", json={"findings": "Phantom."}).json()
    assert api.post(f"/reports/{report['id']}/sign", "rita").status_code == 400  # no impression yet
    api.put(f"/reports/{report['id']}", "rita", json={"findings": "Phantom.", "impression": "Normal."})
    assert api.put(f"/reports/{report['id']}", "alice", json={"impression": "x"}).status_code == 403
    signed = api.post(f"/reports/{report['id']}/sign", "rita").json()
    assert signed["status"] == "signed" and len(signed["sha256"]) == 64
    assert api.put(f"/reports/{report['id']}", "rita", json={"impression": "changed"}).status_code == 400

    class Row:
        pass

    row = Row()
    row.__dict__.update(dataset_id=dataset["id"], author="rita", template="generic", findings="Phantom.",
                        impression="Normal.", signed_at=datetime.fromisoformat(signed["signed_at"]))
    assert report_sha256(row) == signed["sha256"]


def test_report_saves_and_sign_off_name_the_version_they_start_from(api, dataset):
    report = api.post(f"/datasets/{dataset['id']}/reports", "rita", json={"findings": "Draft one."}).json()
    assert report["version"] == 1
    url = f"/reports/{report['id']}"
    first = api.put(url, "rita", json={"findings": "Tab A.", "impression": "A.", "version": 1})
    assert first.status_code == 200 and first.json()["version"] == 2
    stale = api.put(url, "rita", json={"findings": "Tab B.", "impression": "B.", "version": 1})
    assert stale.status_code == 409
    detail = stale.json()["detail"]
    assert detail["version"] == 2 and detail["stored"]["findings"] == "Tab A." and "meanwhile" in detail["message"]
    assert api.post(f"{url}/sign", "rita", json={"version": 1}).status_code == 409  # not what the signer read
    signed = api.post(f"{url}/sign", "rita", json={"version": 2}).json()
    assert (signed["status"], signed["version"], signed["findings"]) == ("signed", 3, "Tab A.")
    locked = api.put(url, "rita", json={"impression": "late", "version": 3})
    assert locked.status_code == 400 and "signed and locked" in locked.json()["detail"]
    stored = api.get(f"/datasets/{dataset['id']}/reports", "rita").json()
    assert [(r["findings"], r["impression"], r["version"]) for r in stored] == [("Tab A.", "A.", 3)]


def test_concurrent_report_saves_exactly_one_wins(api, dataset):
    report = api.post(f"/datasets/{dataset['id']}/reports", "rita", json={}).json()
    attempts = [f"impression {n}" for n in range(8)]
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda text: api.put(f"/reports/{report['id']}", "rita",
                                                     json={"impression": text, "version": 1}), attempts))
    assert sorted(r.status_code for r in replies) == [200] + [409] * 7
    winner = attempts[[r.status_code for r in replies].index(200)]
    stored = api.get(f"/datasets/{dataset['id']}/reports", "rita").json()
    assert [(r["impression"], r["version"]) for r in stored] == [(winner, 2)]


def test_label_saves_name_the_version_they_start_from(api, series):
    url = f"/series/{series['id']}/labels/main"
    roi = {"kind": "rectangle", "slice": 0, "label": "lesion", "points": [[1, 1], [4, 4]]}
    created = api.put(url, "rita", json={"vocabulary": ["lesion"], "rois": [roi], "version": 0})
    assert created.status_code == 200 and created.json()["version"] == 1
    again = api.put(url, "rita", json={"vocabulary": ["lesion"], "rois": [], "version": 0})
    assert again.status_code == 409 and again.json()["detail"]["stored"]["rois"] == [roi]
    assert api.put(url, "rita", json={"rois": [roi, roi], "version": 1}).json()["version"] == 2
    stale = api.put(url, "rita", json={"rois": [], "version": 1})
    assert stale.status_code == 409 and len(stale.json()["detail"]["stored"]["rois"]) == 2
    assert api.put(f"/series/{series['id']}/labels/other", "rita", json={"rois": [], "version": 4}).status_code == 409
    assert api.put(url, "rita", json={"rois": []}).json()["version"] == 3  # no version: replaces what is stored
    assert [(s["name"], len(s["rois"]), s["version"]) for s in api.get(f"/series/{series['id']}/labels", "rita",
                                                                        params={"reader": "rita"}).json()] == [
        ("main", 0, 3)]


def test_reassigning_a_study(api, dataset):
    assignment = api.post("/assignments", "ada", json={"dataset_id": dataset["id"], "reader": "rita"}).json()
    api.patch(f"/assignments/{assignment['id']}", "rita", json={"status": "in_progress"})
    url = f"/assignments/{assignment['id']}/reassign"
    assert api.post(url, "alice", json={"reader": "rex"}).status_code == 403  # not an admin
    assert api.post(url, "bea", json={"reader": "rex"}).status_code == 403  # an admin of another site
    assert api.post(url, "ada", json={"reader": "rita"}).status_code == 400  # already hers
    moved = api.post(url, "ada", json={"reader": "rex", "reason": "rita is on leave"}).json()
    assert (moved["reader"], moved["status"], moved["reason"], moved["assigned_by"]) == (
        "rex", "assigned", "rita is on leave", "ada")
    assert api.get("/worklist", "rita").json() == []
    refused = api.patch(f"/assignments/{assignment['id']}", "rita", json={"status": "done"})
    assert refused.status_code == 403 and "rex" in refused.json()["detail"]
    assert any(e["action"] == "reassign" and e["object_id"] == assignment["id"]
               for e in api.get("/audit", "ada").json())


def test_worklist(api, dataset):
    assert api.post("/assignments", "alice", json={"dataset_id": dataset["id"], "reader": "rita"}
                    ).status_code == 403
    low = api.post("/assignments", "ada", json={"dataset_id": dataset["id"], "reader": "rita"}).json()
    high = api.post("/assignments", "ada", json={"dataset_id": dataset["id"], "reader": "rita", "priority": 5}
                    ).json()
    assert [a["id"] for a in api.get("/worklist", "rita").json()] == [high["id"], low["id"]]
    assert api.patch(f"/assignments/{low['id']}", "rita", json={"status": "sent_back"}).status_code == 400
    back = api.patch(f"/assignments/{low['id']}", "rita", json={"status": "sent_back", "reason": "motion"})
    assert back.json()["status"] == "sent_back"
    assert [a["id"] for a in api.get("/worklist", "rita", params={"status": "assigned"}).json()] == [high["id"]]
    assert api.patch(f"/assignments/{high['id']}", "alice", json={"status": "done"}).status_code == 403


def test_audit_is_admin_only_and_written_as_ecs_json_lines(api, dataset, catalog_url):
    assert api.get("/audit", "alice").status_code == 403
    rows = api.audit_rows()
    assert rows[0]["id"] > rows[-1]["id"]
    lines = [json.loads(line) for line in (api.data_dir / "audit" / "audit.jsonl").read_text().splitlines()]
    assert (api.data_dir / "audit" / "audit.jsonl").stat().st_mode & 0o777 == 0o600
    upload = next(line for line in lines if line["event"]["action"] == "complete_upload")
    assert upload["ecs"]["version"] and upload["user"]["name"] == "alice"
    assert upload["event"]["outcome"] == "success" and upload["http"]["response"]["status_code"] == 201
    assert upload["cloudmri"]["dataset_id"] == dataset["id"] and upload["@timestamp"].endswith("Z")
    with Catalog.open(catalog_url).session() as session:
        count = len(list(session.scalars(select(AuditEvent))))
    assert count == len(lines)


def test_each_site_admin_reads_its_own_sites_audit(api, dataset):
    api.get("/datasets", "bob")
    api.get(f"/datasets/{dataset['id']}", "bob")  # refused: siteA's data
    site_b = api.get("/audit", "bea", params={"limit": 1000}).json()
    assert {e["user"] for e in site_b} == {"bob"}  # (this very query is audited after it answers)
    assert all(e["site"] == "siteB" for e in site_b)
    site_a = api.audit_rows()
    assert "alice" in {e["user"] for e in site_a}
    attempts = [e for e in site_a if e["user"] == "bob"]
    assert [(e["action"], e["status_code"]) for e in attempts] == [("get_dataset", 403), ("grant-decision", None)]
    decision = attempts[1]  # the access decision is audited first, then the request it refused
    assert decision["outcome"] == "failure" and decision["dataset_id"] == dataset["id"]
    assert decision["details"] == {"need": "see", "decision": "deny", "source": "catalog", "dataset_site": "siteA"}
    line = json.loads((api.data_dir / "audit" / "audit.jsonl").read_text().splitlines()[-1])
    assert line["organization"]["name"] in ("siteA", "siteB")


def test_flipped_bit_is_detected_on_read(api, dataset):
    stored = next((api.data_dir / "store").rglob(dataset["sha256"]))
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    reply = api.get(f"/datasets/{dataset['id']}/raw", "alice")
    assert reply.status_code == 500 and "integrity" in reply.json()["detail"]
    event = next(e for e in api.audit_rows() if e["action"] == "download_raw")
    assert event["outcome"] == "failure" and event["reason"].startswith("integrity failure")
    report = ObjectStore.from_settings().verify()
    assert [d[1] for d in report.damaged] == [dataset["sha256"]]
    job = api.post("/jobs", "alice", json={"dataset_id": dataset["id"]}).json()
    failed = _wait(api, job["id"])
    assert failed["status"] == "failed" and "chunk" in failed["error"]


def test_openapi_spec_is_published(api):
    spec = api.http.get("/openapi.json").json()
    assert spec["info"]["title"] == "Cloud-MRI API"
    assert {"/api/v1/uploads", "/api/v1/datasets/{dataset_id}/raw", "/api/v1/grants", "/api/v1/audit"} <= set(
        spec["paths"])
    assert "APIKeyHeader" in spec["components"]["securitySchemes"]
