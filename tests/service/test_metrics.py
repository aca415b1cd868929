"""The service's Prometheus metrics (``GET /api/v1/metrics``), on SQLite and on PostgreSQL: who may scrape, what
the counters, histograms and gauges say after real requests, jobs and uploads, and the store-size cache."""

from __future__ import annotations

import time

import pytest
from fastapi import Request
from fastapi.routing import APIRoute
from prometheus_client.parser import text_string_to_metric_families

from cloudmri_kernel import __version__
from cloudmri_kernel.service import metrics
from cloudmri_kernel.service.app import create_app
from cloudmri_kernel.service.metrics import JOB_STATUSES, ServiceMetrics, route_template
from cloudmri_kernel.service.routes import admin, datasets, grants, jobs, ledger, reading, series, studies, uploads

Samples = dict[tuple[str, frozenset], float]


@pytest.fixture
def scraper(api) -> dict[str, str]:
    """Headers of a Prometheus server: a token that carries only the scope ``metrics``."""
    from cloudmri_kernel.service.state import local_tokens

    return {"Authorization": f"token {local_tokens().create('prometheus', 'siteA', ['metrics'])}"}


def parse(exposition: str) -> Samples:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(exposition) for sample in family.samples}


def scrape(api, headers: dict[str, str]) -> Samples:
    reply = api.http.get("/api/v1/metrics", headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    return parse(reply.text)


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_scrape_needs_a_token_with_the_metrics_scope(api, scraper):
    anonymous = api.http.get("/api/v1/metrics")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "token"
    researcher = api.get("/metrics", "alice")
    assert researcher.status_code == 403 and "custom:cloudmri:metrics" in researcher.json()["detail"]
    assert value(scrape(api, scraper), "cloudmri_info", version=__version__) == 1.0
    assert api.get("/metrics", "ada").status_code == 200  # admins hold every scope
    refused = {(row["status_code"], row["user"]) for row in api.audit_rows() if row["path"] == "/api/v1/metrics"}
    assert {(401, None), (403, "alice")} <= refused


def test_requests_are_counted_and_timed_per_route(api, scraper):
    for _ in range(3):
        assert api.get("/datasets", "alice").status_code == 200
    samples = scrape(api, scraper)
    assert value(samples, "cloudmri_http_requests_total", method="GET", route="/api/v1/datasets",
                 status="200") == 3
    assert value(samples, "cloudmri_http_request_duration_seconds_count", method="GET",
                 route="/api/v1/datasets") == 3
    assert value(samples, "cloudmri_http_request_duration_seconds_sum", method="GET",
                 route="/api/v1/datasets") > 0


def test_not_found_is_counted_under_the_route_template_not_the_raw_path(api, scraper):
    unknown = "0" * 32
    assert api.get(f"/datasets/{unknown}", "alice").status_code == 404
    assert api.get("/no-such-endpoint", "alice").status_code == 404
    assert api.http.request("BREW", "/api/v1/datasets").status_code == 405
    samples = scrape(api, scraper)
    assert value(samples, "cloudmri_http_requests_total", method="GET", route="/api/v1/datasets/{dataset_id}",
                 status="404") == 1
    assert value(samples, "cloudmri_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert value(samples, "cloudmri_http_requests_total", method="other", route="/api/v1/datasets",
                 status="405") == 1
    routes = {dict(labels).get("route") for _, labels in samples}
    assert not any(unknown in route or "no-such-endpoint" in route for route in routes if route)


def test_every_api_route_is_labelled_with_its_full_template():
    app = create_app()
    published = set(app.openapi()["paths"])
    for router in (uploads.router, datasets.router, jobs.router, series.router, reading.router, grants.router,
                   admin.router, metrics.router, ledger.router, studies.router):
        for route in router.routes:
            template = route_template(Request({"type": "http", "app": app, "route": route}))
            assert template == "/api/v1" + route.path and template in published
    stranger = APIRoute("/elsewhere/{item_id}", lambda item_id: item_id, name="elsewhere")
    assert route_template(Request({"type": "http", "app": app, "route": stranger})) == "/elsewhere/{item_id}"
    assert route_template(Request({"type": "http", "app": app})) == "unmatched"


def test_job_gauge_counts_jobs_by_status(api, scraper, phantom_mrd):
    assert {status: value(scrape(api, scraper), "cloudmri_jobs", status=status) for status in JOB_STATUSES} \
        == dict.fromkeys(JOB_STATUSES, 0)
    dataset = api.upload(phantom_mrd).json()
    job = api.post("/jobs", "alice", json={"dataset_id": dataset["id"]}).json()
    deadline = time.monotonic() + 120
    while api.get(f"/jobs/{job['id']}", "alice").json()["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, "the reconstruction job did not finish"
        time.sleep(0.2)
    samples = scrape(api, scraper)
    assert {status: value(samples, "cloudmri_jobs", status=status) for status in JOB_STATUSES} \
        == {**dict.fromkeys(JOB_STATUSES, 0), "done": 1}


def test_open_uploads_and_store_size_after_an_upload(api, scraper, phantom_mrd):
    raw = phantom_mrd.read_bytes()
    opened = api.post("/uploads", "bob", json={"filename": "late.h5", "size": 10, "sha256": "a" * 64})
    assert opened.status_code == 201
    dataset = api.upload(phantom_mrd)
    assert dataset.status_code == 201
    store = api.http.app.state.service.store
    listing = list(store.iter_objects())
    assert listing == [("siteA", dataset.json()["sha256"])]
    samples = scrape(api, scraper)
    assert value(samples, "cloudmri_uploads_open") == 1
    assert value(samples, "cloudmri_store_objects", site="siteA") == len(listing)
    assert value(samples, "cloudmri_store_bytes", site="siteA") == len(raw) == store.info(*listing[0]).size
    assert value(samples, "cloudmri_store_objects", site="siteB") is None


def test_store_size_is_measured_again_only_after_the_cache_period(api, phantom_mrd):
    now = [0.0]
    cached = ServiceMetrics(api.http.app.state.service, store_cache_seconds=60, clock=lambda: now[0])
    assert value(parse(cached.exposition().decode()), "cloudmri_store_objects", site="siteA") is None
    assert api.upload(phantom_mrd).status_code == 201
    now[0] = 59.5
    assert value(parse(cached.exposition().decode()), "cloudmri_store_objects", site="siteA") is None
    now[0] = 60.0
    samples = parse(cached.exposition().decode())
    assert value(samples, "cloudmri_store_objects", site="siteA") == 1
    assert value(samples, "cloudmri_store_bytes", site="siteA") == phantom_mrd.stat().st_size
