"""Blinded reader studies through the real app (its lifespan, catalog, store and job runner), on SQLite and on
PostgreSQL: setup, blinding, images through the case, score validation, optimistic re-scoring, results, audit."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi import Request
from PIL import Image
from sqlalchemy import select

from cloudmri_kernel.catalog import Catalog
from cloudmri_kernel.catalog.models import ReaderStudy, ReaderStudyCase, Series
from cloudmri_kernel.client import Client, ServiceError
from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from cloudmri_kernel.quality.reader_study import (
    CRITERIA,
    Rating,
    krippendorff_alpha,
    method_summary,
    weighted_kappa,
)
from cloudmri_kernel.service.app import create_app
from cloudmri_kernel.service.metrics import route_template
from cloudmri_kernel.service.routes import studies

METHODS = ("ifft", "grappa")


def _wait(api, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/jobs/{job_id}", "alice").json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory) -> list:
    """Two small datasets (different noise, so different files), R=2 with calibration lines for GRAPPA."""
    folder = tmp_path_factory.mktemp("study-phantoms")
    return [write_phantom(folder / f"case{seed}.h5", PhantomSpec(matrix=32, coils=4, accel=2, calib=12, seed=seed))
            for seed in (1, 2)]


@pytest.fixture
def series_ids(api, phantoms) -> dict[str, tuple[str, str]]:
    """Four series by alice (siteA): each dataset reconstructed with each method; series ID -> (method, dataset)."""
    made = {}
    for path in phantoms:
        reply = api.upload(path)
        assert reply.status_code == 201, reply.text
        dataset_id = reply.json()["id"]
        for method in METHODS:
            job = api.post("/jobs", "alice", json={"dataset_id": dataset_id, "recipe": {"method": method}})
            assert job.status_code == 202, job.text
            job = _wait(api, job.json()["id"])
            assert job["status"] == "done", job
            made[job["series_id"]] = (method, dataset_id)
    return made


@pytest.fixture
def study(api, series_ids) -> dict:
    reply = api.post("/studies", "alice", json={"name": "GRAPPA vs zero-filled", "series_ids": sorted(series_ids),
                                                "readers": ["rita", "ada"]})
    assert reply.status_code == 201, reply.text
    return reply.json()


def _case_rows(catalog_url: str, study_id: str) -> list[tuple[str, str, str, int, dict, int]]:
    catalog = Catalog.open(catalog_url, migrate=False)
    try:
        with catalog.session() as db:
            rows = db.execute(select(ReaderStudyCase.reader, ReaderStudyCase.case_code, ReaderStudyCase.series_id,
                                     ReaderStudyCase.position, ReaderStudyCase.scores, ReaderStudyCase.version)
                              .where(ReaderStudyCase.study_id == study_id)
                              .order_by(ReaderStudyCase.reader, ReaderStudyCase.position)).all()
            return [tuple(row) for row in rows]
    finally:
        catalog.dispose()


def test_a_study_gives_every_reader_every_series_blinded(api, study, series_ids, catalog_url):
    assert study["readers"] == ["ada", "rita"] and study["series_count"] == 4
    assert study["criteria"] == list(CRITERIA) and study["status"] == "open" and study["created_by"] == "alice"
    assert "seed" not in study
    rows = _case_rows(catalog_url, study["id"])
    assert len(rows) == 8
    for reader in ("ada", "rita"):
        assert sorted(r[2] for r in rows if r[0] == reader) == sorted(series_ids)
        assert [r[3] for r in rows if r[0] == reader] == [0, 1, 2, 3]
    assert not {r[1] for r in rows if r[0] == "ada"} & {r[1] for r in rows if r[0] == "rita"}

    reply = api.get(f"/studies/{study['id']}/cases", "rita")
    assert reply.status_code == 200, reply.text
    cases = reply.json()
    assert [c["code"] for c in cases] == [r[1] for r in rows if r[0] == "rita"]
    assert all(c["version"] == 0 and c["scores"] == {} and c["images"] == 1 for c in cases)
    text = reply.text
    for series_id, (method, dataset_id) in series_ids.items():
        assert series_id not in text and dataset_id not in text and method not in text
    assert api.get("/studies", "rita").json() == [
        {"id": study["id"], "name": "GRAPPA vs zero-filled", "status": "open", "criteria": list(CRITERIA),
         "role": "reader", "my_cases": 4, "my_scored": 0}]
    assert api.get("/studies", "alice").json()[0]["role"] == "creator"
    assert api.get(f"/studies/{study['id']}/cases", "alice").status_code == 403  # not a reader
    assert api.get(f"/studies/{study['id']}/cases", "bob").status_code == 403


def test_creating_a_study_needs_recon_or_admin_and_sight_of_every_series(api, series_ids):
    body = {"name": "s", "series_ids": sorted(series_ids), "readers": ["rita"]}
    refused = api.post("/studies", "rita", json=body)
    assert refused.status_code == 403 and "custom:cloudmri:recon" in refused.json()["detail"]
    assert api.post("/studies", "bob", json=body).status_code == 403  # siteB researcher, siteA series
    assert api.post("/studies", "ada", json=body).status_code == 201  # siteA admin
    assert api.post("/studies", "alice", json={**body, "series_ids": ["0" * 32]}).status_code == 404
    assert api.post("/studies", "alice", json={**body, "criteria": ["snr", "snr"]}).status_code == 400
    assert api.post("/studies", "alice", json={**body, "readers": []}).status_code == 422


def test_a_case_image_is_the_series_image_served_through_the_case(api, study, catalog_url):
    code, series_id = next((r[1], r[2]) for r in _case_rows(catalog_url, study["id"]) if r[0] == "rita")
    via_case = api.get(f"/studies/{study['id']}/cases/{code}/images/0.png", "rita")
    assert via_case.status_code == 200 and via_case.headers["content-type"] == "image/png"
    direct = api.get(f"/series/{series_id}/images/0.png", "alice")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(via_case.content))),
                          np.asarray(Image.open(io.BytesIO(direct.content))))
    array = api.get(f"/studies/{study['id']}/cases/{code}/array", "rita")
    assert array.headers["x-array-shape"] == "1,32,32"
    assert api.get(f"/studies/{study['id']}/cases/{code}/images/5.png", "rita").status_code == 400
    # another reader's code and a made-up code name nothing for this caller
    assert api.get(f"/studies/{study['id']}/cases/{code}/images/0.png", "ada").status_code == 404
    assert api.get(f"/studies/{study['id']}/cases/C-000000000000/images/0.png", "rita").status_code == 404
    assert api.get(f"/studies/{study['id']}/cases/{series_id}/images/0.png", "rita").status_code == 422


def test_scores_must_be_integers_1_to_5_for_every_criterion(api, study, catalog_url):
    code = next(r[1] for r in _case_rows(catalog_url, study["id"]) if r[0] == "rita")
    url = f"/studies/{study['id']}/cases/{code}/scores"
    good = {"overall": 4, "artifacts": 3, "snr": 5, "confidence": 4}
    missing = api.put(url, "rita", json={"scores": {"overall": 4}, "version": 0})
    assert missing.status_code == 400 and "missing ['artifacts', 'confidence', 'snr']" in missing.json()["detail"]
    assert api.put(url, "rita", json={"scores": {**good, "sharpness": 3}, "version": 0}).status_code == 400
    for bad in (0, 6, "3", 3.5, 4.0, None):
        assert api.put(url, "rita", json={"scores": {**good, "snr": bad}, "version": 0}).status_code == 422, bad
    assert api.put(url, "ada", json={"scores": good, "version": 0}).status_code == 404  # rita's case
    assert all(r[5] == 0 for r in _case_rows(catalog_url, study["id"]))
    saved = api.put(url, "rita", json={"scores": good, "version": 0})
    assert saved.status_code == 200, saved.text
    assert saved.json()["scores"] == good and saved.json()["version"] == 1
    assert [r[4:] for r in _case_rows(catalog_url, study["id"]) if r[1] == code] == [(good, 1)]


def test_rescoring_from_a_stale_version_is_refused_and_nothing_is_overwritten(api, study, catalog_url):
    code = next(r[1] for r in _case_rows(catalog_url, study["id"]) if r[0] == "rita")
    url = f"/studies/{study['id']}/cases/{code}/scores"
    first = {"overall": 4, "artifacts": 4, "snr": 4, "confidence": 4}
    second = {"overall": 2, "artifacts": 2, "snr": 2, "confidence": 2}
    assert api.put(url, "rita", json={"scores": first, "version": 0}).json()["version"] == 1
    stale = api.put(url, "rita", json={"scores": second, "version": 0})  # a second tab that loaded version 0
    assert stale.status_code == 409
    assert stale.json()["detail"]["version"] == 1 and stale.json()["detail"]["scores"] == first
    assert "saved elsewhere" in stale.json()["detail"]["message"]
    assert [r[4:] for r in _case_rows(catalog_url, study["id"]) if r[1] == code] == [(first, 1)]
    assert api.put(url, "rita", json={"scores": second, "version": 1}).json()["version"] == 2
    assert [r[4:] for r in _case_rows(catalog_url, study["id"]) if r[1] == code] == [(second, 2)]


def test_two_saves_from_the_same_version_at_once_one_wins(api, study, catalog_url):
    code = next(r[1] for r in _case_rows(catalog_url, study["id"]) if r[0] == "rita")
    url = f"/studies/{study['id']}/cases/{code}/scores"
    attempts = [dict.fromkeys(CRITERIA, score) for score in (1, 2, 3, 4, 5, 1, 2, 3)]
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda scores: api.put(url, "rita", json={"scores": scores, "version": 0}),
                                attempts))
    assert sorted(r.status_code for r in replies) == [200] + [409] * 7
    winner = next(attempts[i] for i, r in enumerate(replies) if r.status_code == 200)
    assert [r[4:] for r in _case_rows(catalog_url, study["id"]) if r[1] == code] == [(winner, 1)]


def test_the_client_runs_a_study_end_to_end(api, series_ids):
    def client(user: str) -> Client:
        return Client("http://testserver", api.tokens[user], transport=api.http._transport, backoff=0.001)

    with client("alice") as creator, client("rita") as reader:
        study = creator.create_study("client study", sorted(series_ids), ["rita"], criteria=["overall", "snr"])
        assert study["criteria"] == ["overall", "snr"] and reader.studies()[0]["my_cases"] == 4
        cases = reader.study_cases(study["id"])
        first = cases[0]
        assert reader.study_case_images(study["id"], first["code"]).shape == (1, 32, 32)
        assert reader.study_case_png(study["id"], first["code"], 0)[:8] == b"\x89PNG\r\n\x1a\n"
        for case in cases:
            reader.score_case(study["id"], case["code"], {"overall": 3, "snr": 4}, version=case["version"])
        with pytest.raises(ServiceError) as stale:
            reader.score_case(study["id"], first["code"], {"overall": 5, "snr": 5}, version=0)
        assert stale.value.status == 409 and stale.value.detail["version"] == 1
        results = creator.study_results(study["id"], interval="t")
        assert {(r["method"], r["criterion"], r["mean"]) for r in results["summary"]} == {
            (m, c, v) for m in METHODS for c, v in (("overall", 3.0), ("snr", 4.0))}
        assert creator.close_study(study["id"])["status"] == "closed"
        with pytest.raises(ServiceError) as refused:
            reader.study_results(study["id"])
        assert refused.value.status == 403


def _score_everything(api, study, catalog_url, series_ids) -> list[Rating]:
    """rita gives GRAPPA 4 and zero-filled 2 (one case 3); ada agrees but for one case; returns what was sent."""
    ratings = []
    for reader, code, series_id, _, _, _ in _case_rows(catalog_url, study["id"]):
        method, dataset_id = series_ids[series_id]
        base = 4 if method == "grappa" else 2
        if reader == "ada" and method == "ifft" and dataset_id == min(d for _, d in series_ids.values()):
            base = 3
        scores = {"overall": base, "artifacts": base, "snr": min(base + 1, 5), "confidence": base}
        reply = api.put(f"/studies/{study['id']}/cases/{code}/scores", reader, json={"scores": scores, "version": 0})
        assert reply.status_code == 200, reply.text
        ratings.append(Rating(reader, method, dataset_id, scores))
    return ratings


def test_results_unblind_for_the_creator_with_intervals_and_kappa(api, study, series_ids, catalog_url):
    partial = api.get(f"/studies/{study['id']}/results", "alice", params={"interval": "t"}).json()
    assert partial["summary"] == [] and partial["progress"] == [
        {"reader": "ada", "scored": 0, "total": 4}, {"reader": "rita", "scored": 0, "total": 4}]
    ratings = _score_everything(api, study, catalog_url, series_ids)
    reply = api.get(f"/studies/{study['id']}/results", "alice", params={"interval": "t"})
    assert reply.status_code == 200, reply.text
    results = reply.json()
    expected = {(s.method, s.criterion): s for s in method_summary(ratings, interval="t")}
    assert len(results["summary"]) == 8
    for row in results["summary"]:
        want = expected[(row["method"], row["criterion"])]
        assert (row["n_cases"], row["n_ratings"]) == (2, 4)
        assert row["mean"] == pytest.approx(want.mean) and row["low"] == pytest.approx(want.low)
    grappa = next(r for r in results["summary"] if (r["method"], r["criterion"]) == ("grappa", "overall"))
    assert (grappa["mean"], grappa["low"], grappa["high"]) == (4.0, 4.0, 4.0)
    ifft = next(r for r in results["summary"] if (r["method"], r["criterion"]) == ("ifft", "overall"))
    assert ifft["mean"] == pytest.approx(2.25)
    overall = next(p for p in results["agreement"] if p["criterion"] == "overall")
    by_key = {(r.reader, r.method, r.case): r.scores["overall"] for r in ratings}
    keys = sorted({(m, c) for _, m, c in by_key})
    assert (overall["reader_a"], overall["reader_b"], overall["n"]) == ("ada", "rita", 4)
    assert overall["kappa"] == pytest.approx(weighted_kappa([by_key[("ada", *k)] for k in keys],
                                                            [by_key[("rita", *k)] for k in keys]))
    assert results["mean_kappa"]["overall"] == pytest.approx(overall["kappa"])
    assert results["alpha"]["overall"] == pytest.approx(krippendorff_alpha(
        [[by_key[(reader, *k)] for reader in ("ada", "rita")] for k in keys]))
    assert set(results["alpha"]) == set(results["mean_kappa"])
    assert results["progress"] == [{"reader": "ada", "scored": 4, "total": 4},
                                   {"reader": "rita", "scored": 4, "total": 4}]
    bootstrap = api.get(f"/studies/{study['id']}/results", "alice").json()
    assert bootstrap["interval"] == "bootstrap" and bootstrap == api.get(f"/studies/{study['id']}/results",
                                                                         "alice").json()
    assert api.get(f"/studies/{study['id']}/results", "ada").status_code == 200  # admin of the study's site
    for outsider in ("rita", "bea", "bob"):
        assert api.get(f"/studies/{study['id']}/results", outsider).status_code == 403
        assert api.get(f"/studies/{study['id']}", outsider).status_code == 403


def test_a_closed_study_refuses_new_scores(api, study, catalog_url):
    code = next(r[1] for r in _case_rows(catalog_url, study["id"]) if r[0] == "rita")
    assert api.post(f"/studies/{study['id']}/close", "rita").status_code == 403
    closed = api.post(f"/studies/{study['id']}/close", "alice")
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    assert api.post(f"/studies/{study['id']}/close", "alice").status_code == 409
    scores = dict.fromkeys(CRITERIA, 3)
    refused = api.put(f"/studies/{study['id']}/cases/{code}/scores", "rita", json={"scores": scores, "version": 0})
    assert refused.status_code == 409 and "closed" in refused.json()["detail"]
    catalog = Catalog.open(catalog_url, migrate=False)
    with catalog.session() as db:
        assert db.get(ReaderStudy, study["id"]).status == "closed"
        assert db.scalar(select(Series.id).limit(1)) is not None
    catalog.dispose()


def test_every_study_route_is_audited(api, study, catalog_url):
    code = next(r[1] for r in _case_rows(catalog_url, study["id"]) if r[0] == "rita")
    api.get(f"/studies/{study['id']}/cases", "rita")
    api.get(f"/studies/{study['id']}/cases/{code}/images/0.png", "rita")
    api.put(f"/studies/{study['id']}/cases/{code}/scores", "rita", json={"scores": dict.fromkeys(CRITERIA, 3),
                                                                          "version": 0})
    api.get(f"/studies/{study['id']}/results", "rita")
    events = {(e["action"], e["user"], e["outcome"]): e for e in api.audit_rows()}
    assert events[("create_study", "alice", "success")]["object_id"] == study["id"]
    assert ("my_cases", "rita", "success") in events
    image = events[("case_image_png", "rita", "success")]
    assert image["dataset_id"] is not None and image["object_id"] == study["id"]
    assert ("score_case", "rita", "success") in events
    assert events[("study_results", "rita", "failure")]["status_code"] == 403


def test_study_routes_are_published_and_labelled_with_their_templates():
    app = create_app()
    published = set(app.openapi()["paths"])
    for route in studies.router.routes:
        template = route_template(Request({"type": "http", "app": app, "route": route}))
        assert template == "/api/v1" + route.path and template in published
    assert "/api/v1/studies/{study_id}/cases/{code}/scores" in published
