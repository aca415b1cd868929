"""The API service's own Prometheus metrics: requests and latencies, the job queue, open uploads, the store's size.

Each app keeps its metrics in a registry of its own (not prometheus_client's global one), so that several apps in
one process, as in the tests, count separately. The audit middleware of :mod:`cloudmri_kernel.service.app`
observes every request; the catalog and store gauges are computed when Prometheus scrapes, the store's (a walk
of its listing, one sidecar read per object) at most once per ``store_cache_seconds``.

The scrape is ``GET /api/v1/metrics`` with a token that carries the scope ``metrics``
(``custom:cloudmri:metrics``): under the API prefix it passes the same identity and policy checks as every other
request, and a refused or anonymous scrape leaves an audit event like any other.

References:
    Prometheus documentation, "Metric and label naming" and "Instrumentation: things to watch out for"
    (bounded label values).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.routing import NoMatchFound

from cloudmri_kernel import __version__
from cloudmri_kernel.catalog.models import Job, Upload
from cloudmri_kernel.service.deps import Caller
from cloudmri_kernel.service.policy import require_scope
from cloudmri_kernel.service.schemas import Problem

if TYPE_CHECKING:
    from cloudmri_kernel.service.state import ServiceState
    from cloudmri_kernel.store import ObjectStore

JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
# Label values must stay few: anything a client can invent (a method name, a path) is folded into one value.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"

router = APIRouter(tags=["admin"])


def route_template(request: Request) -> str:
    """The path template of the route that answered (``/api/v1/datasets/{dataset_id}``), or ``unmatched``."""
    route = request.scope.get("route")
    if route is None:
        return UNMATCHED
    # FastAPI hands over the route as its router declared it, without the prefix the router was included under
    # (``/datasets/{dataset_id}``); the app's reverse lookup, each parameter standing for itself, adds the prefix.
    placeholders = {name: f"{{{name}}}" for name in getattr(route, "param_convertors", {})}
    try:
        return request.app.url_path_for(route.name, **placeholders)
    except NoMatchFound:
        return route.path


def measure_store(store: ObjectStore) -> dict[str, tuple[int, int]]:
    """Objects and plaintext bytes per site: one walk of the store's listing and one sidecar read per object."""
    sizes: dict[str, tuple[int, int]] = {}
    for site, sha256 in store.iter_objects():
        objects, size = sizes.get(site, (0, 0))
        sizes[site] = (objects + 1, size + store.info(site, sha256).size)
    return sizes


class StoreSizes:
    """:func:`measure_store`, reused for ``cache_seconds`` so that frequent scrapes of a large store stay cheap.

    Args:
        store: The service's object store.
        cache_seconds: How long one measurement is served before the next scrape measures again.
        clock: Seconds on a monotonic clock (tests pass a fake one).
    """

    def __init__(self, store: ObjectStore, cache_seconds: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._measured: tuple[float, dict[str, tuple[int, int]]] | None = None

    def current(self) -> dict[str, tuple[int, int]]:
        """Objects and bytes per site, measured now if the last measurement is ``cache_seconds`` old."""
        with self._lock:  # concurrent scrapes wait for one walk instead of each starting their own
            now = self.clock()
            if self._measured is None or now - self._measured[0] >= self.cache_seconds:
                self._measured = (now, measure_store(self.store))
            return self._measured[1]


class _CatalogAndStore(Collector):
    """The gauges read at scrape time: jobs by status and open uploads (catalog), objects and bytes (store)."""

    def __init__(self, service: ServiceState, store_sizes: StoreSizes):
        self.service = service
        self.store_sizes = store_sizes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.service.catalog.session() as session:
            jobs = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            uploads_open = session.scalar(select(func.count()).select_from(Upload).where(Upload.status == "open"))
        by_status = GaugeMetricFamily("cloudmri_jobs", "Reconstruction jobs in the catalog, by status.",
                                      labels=["status"])
        for status in JOB_STATUSES:
            by_status.add_metric([status], jobs.get(status, 0))
        yield by_status
        yield GaugeMetricFamily("cloudmri_uploads_open", "Resumable uploads that are open (bytes still to come).",
                                value=uploads_open)
        sizes = self.store_sizes.current()
        objects = GaugeMetricFamily("cloudmri_store_objects", "Objects in the encrypted store, by site (measured "
                                    "at most once per cache period).", labels=["site"])
        stored = GaugeMetricFamily("cloudmri_store_bytes", "Plaintext bytes of the objects in the encrypted "
                                   "store, by site (measured at most once per cache period).", labels=["site"])
        for site, (count, size) in sorted(sizes.items()):
            objects.add_metric([site], count)
            stored.add_metric([site], size)
        yield objects
        yield stored
        yield from _ledger_gauges(self.service)


def _ledger_gauges(service: ServiceState) -> Iterator[GaugeMetricFamily]:
    """The ledger's health: configured, node up, records not yet anchored, the alert (node down or a record
    waiting longer than ``CLOUDMRI_LEDGER_ALERT_AFTER_S``)."""
    yield GaugeMetricFamily("cloudmri_ledger_configured", "1 when the service anchors on a ledger, else 0.",
                            value=int(service.ledger is not None))
    if service.ledger is None:
        return
    status = service.ledger.status()
    yield GaugeMetricFamily("cloudmri_ledger_up", "1 when the ledger node answers JSON-RPC, else 0.",
                            value=int(status.up))
    yield GaugeMetricFamily("cloudmri_ledger_backlog", "Records queued for anchoring and not yet confirmed on "
                            "chain.", value=status.backlog)
    yield GaugeMetricFamily("cloudmri_ledger_oldest_queued_seconds", "How long the oldest record not yet "
                            "anchored has waited (0 without one).", value=status.oldest_queued_s)
    yield GaugeMetricFamily("cloudmri_ledger_alert", "1 when anchoring needs an operator: the node is down, "
                            "anchoring fails, or a record waits too long.", value=int(status.alert))


class ServiceMetrics:
    """The metrics of one app, in a registry of their own.

    Args:
        service: The service's catalog and store, read at scrape time.
        store_cache_seconds: How long a measurement of the store's size is reused (see :class:`StoreSizes`).
        clock: Seconds on a monotonic clock for that cache (tests pass a fake one).
    """

    def __init__(self, service: ServiceState, store_cache_seconds: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.registry = CollectorRegistry()
        self.requests = Counter("cloudmri_http_requests", "HTTP requests answered, by method, route template and "
                                "status code.", ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("cloudmri_http_request_duration_seconds", "Time from a request's arrival to the "
                                 "start of its response (a streamed body is not included), by method and route "
                                 "template.", ["method", "route"], registry=self.registry)
        Info("cloudmri", "The Cloud-MRI API service's version.", registry=self.registry).info(
            {"version": __version__})
        self.store_sizes = StoreSizes(service.store, store_cache_seconds, clock)
        self.registry.register(_CatalogAndStore(service, self.store_sizes))
        # The standard process_*, python_info and python_gc_* series, as a default registry would have them.
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(standard)

    def observe(self, request: Request, status: int, seconds: float) -> None:
        """Count one answered request under its route template and record how long it took."""
        method = request.method if request.method in HTTP_METHODS else "other"
        route = route_template(request)
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def exposition(self) -> bytes:
        """All metrics in the Prometheus text format."""
        return generate_latest(self.registry)


@router.get("/metrics", response_class=Response, responses={
    200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "The metrics in the Prometheus text format."},
    403: {"model": Problem}})
def metrics(request: Request, caller: Caller) -> Response:
    """The service's Prometheus metrics; needs the scope ``metrics`` (``custom:cloudmri:metrics``)."""
    require_scope(caller, "metrics")
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
