"""The Cloud-MRI API service: FastAPI application factory, error handling and the audit of every request.

It is the trust boundary of the workbench: it alone holds the catalog, the encrypted store and its keys, and the
job queue; callers present a JupyterHub token (or a local token stand-alone) and get exactly what their scopes
and grants allow. Every request under ``/api/v1`` leaves an audit event, refusals included.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from cloudmri_kernel import __version__
from cloudmri_kernel.config import Settings
from cloudmri_kernel.crypto import IntegrityError
from cloudmri_kernel.errors import CloudMRIError, UsageError
from cloudmri_kernel.ledger import LedgerError, VerificationFailed
from cloudmri_kernel.service import browser_login, metrics, service_prefix
from cloudmri_kernel.service.deps import NotFound
from cloudmri_kernel.service.identity import AuthenticationError
from cloudmri_kernel.service.jobs import JobRunner
from cloudmri_kernel.service.ledger import ledger_error_status
from cloudmri_kernel.service.policy import Forbidden
from cloudmri_kernel.service.routes import admin, datasets, grants, jobs, ledger, reading, series, studies, uploads
from cloudmri_kernel.service.routes.uploads import RequestTooLarge
from cloudmri_kernel.service.staging import OffsetMismatch
from cloudmri_kernel.service.state import ServiceState
from cloudmri_kernel.store import ObjectNotFound

API = "/api/v1"
log = logging.getLogger("cloudmri.service")
CATEGORIES = {"upload": "file", "chunk": "file", "download": "file", "raw": "file", "grant": "iam",
              "job": "process", "audit": "configuration", "site": "configuration"}


def _category(action: str, status: int) -> str:
    if status == 401:
        return "authentication"
    return next((category for word, category in CATEGORIES.items() if word in action), "database")


def create_app(config: Settings | None = None, recon_workers: int | None = None) -> FastAPI:
    """The ASGI application. ``recon_workers``: Dask worker processes per reconstruction job (None: the
    configured Dask scheduler, else in the service's job thread)."""
    base = service_prefix()
    api = base.rstrip("/") + API

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service = ServiceState.open(config)
        app.state.service = service
        app.state.metrics = metrics.ServiceMetrics(service)
        app.state.oauth = browser_login.HubOAuthClient.from_environment()
        app.state.jobs = JobRunner(service, workers=recon_workers)
        app.state.jobs.resume_pending()
        if service.ledger is not None:
            service.ledger.start()
        try:
            yield
        finally:
            app.state.jobs.shutdown()
            service.close()

    app = FastAPI(title="Cloud-MRI API", version=__version__, lifespan=lifespan,
                  # no /docs: FastAPI's Swagger page loads its scripts from a CDN, which hospitals may not reach
                  openapi_url=f"{base}openapi.json", docs_url=None, redoc_url=None,
                  description="The Cloud-MRI Workbench's data service: encrypted raw-data store, catalog, "
                  "reconstruction jobs, images, reading workflow, grants and audit. Authenticate with "
                  "'Authorization: token YOUR_JUPYTERHUB_TOKEN'.")
    for router in (uploads.router, datasets.router, jobs.router, series.router, reading.router, studies.router,
                   grants.router, ledger.router, admin.router, metrics.router):
        app.include_router(router, prefix=api)
    app.include_router(browser_login.router, prefix=base.rstrip("/"))

    @app.get(f"{base}health", tags=["admin"])
    def health(request: Request) -> dict:
        """The service answers; ``ledger`` tells whether anchoring works (``alert``: the node is down or records
        wait too long) or ``configured: false`` when the service runs without a ledger."""
        ledger = request.app.state.service.ledger
        if ledger is None:
            return {"status": "ok", "version": __version__, "ledger": {"configured": False}}
        status = ledger.status()
        return {"status": "degraded" if status.alert else "ok", "version": __version__, "ledger": status.to_dict()}

    def problem(status: int, detail, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(AuthenticationError)
    async def unauthenticated(request: Request, exc: AuthenticationError):
        request.state.audit_reason = str(exc)
        return problem(401, str(exc), {"WWW-Authenticate": "token"})

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden):
        request.state.audit_reason = exc.reason
        if exc.dataset_id:
            request.state.dataset_id = exc.dataset_id
        return problem(403, exc.reason)

    @app.exception_handler(NotFound)
    @app.exception_handler(ObjectNotFound)
    async def not_found(request: Request, exc: Exception):
        return problem(404, str(exc))

    @app.exception_handler(OffsetMismatch)
    async def offset_mismatch(request: Request, exc: OffsetMismatch):
        return JSONResponse({"detail": str(exc), "offset": exc.offset}, status_code=409)

    @app.exception_handler(RequestTooLarge)
    async def too_large(request: Request, exc: RequestTooLarge):
        return problem(413, str(exc))

    @app.exception_handler(IntegrityError)
    async def damaged(request: Request, exc: IntegrityError):
        log.error("integrity failure on %s: %s", request.url.path, exc)
        request.state.audit_reason = f"integrity failure: {exc}"
        return problem(500, f"a stored object failed its integrity check and was not served ({exc}); the "
                       "operators have been told (audit log)")

    @app.exception_handler(VerificationFailed)
    async def tampered(request: Request, exc: VerificationFailed):
        log.error("ledger verification failed on %s: %s", request.url.path, exc)
        request.state.audit_reason = f"verification failed: {exc}"
        return problem(409, str(exc))

    @app.exception_handler(LedgerError)
    async def ledger_failed(request: Request, exc: LedgerError):
        request.state.audit_reason = f"ledger: {exc}"
        return problem(ledger_error_status(exc), str(exc))

    @app.exception_handler(UsageError)
    async def usage_error(request: Request, exc: UsageError):
        return problem(400, str(exc))

    @app.exception_handler(CloudMRIError)
    async def invalid_data(request: Request, exc: CloudMRIError):
        return problem(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return problem(422, [{key: error[key] for key in ("loc", "msg", "type") if key in error}
                             for error in exc.errors()])

    @app.middleware("http")
    async def audit_every_request(request: Request, call_next):
        started = time.perf_counter()
        limit = request.app.state.service.max_chunk_bytes + (1 << 16)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            response = problem(413, f"the request body has {declared} bytes; the limit is {limit}")
        else:
            try:
                response = await call_next(request)
            except Exception:
                log.exception("internal error on %s %s", request.method, request.url.path)
                response = problem(500, "internal error: the service logged it")
        request.app.state.metrics.observe(request, response.status_code, time.perf_counter() - started)
        if request.url.path.startswith(api):
            await run_in_threadpool(_audit, request, response.status_code)
        return response

    return app


def _audit(request: Request, status: int) -> None:
    route = request.scope.get("route")
    action = getattr(route, "name", None) or "unknown-route"
    reason = getattr(request.state, "audit_reason", "")
    try:
        request.app.state.service.audit.record(
            action, _category(action, status), "success" if status < 400 else "failure",
            getattr(request.state, "user", None), site=getattr(request.state, "site", None),
            source_ip=request.client.host if request.client else None,
            http_method=request.method, path=request.url.path[:1024], status_code=status,
            dataset_id=getattr(request.state, "dataset_id", None),
            object_id=getattr(request.state, "object_id", None), reason=reason)
    except Exception:
        log.exception("could not write the audit event for %s %s", request.method, request.url.path)


def run(host: str = "127.0.0.1", port: int = 8765, config: Settings | None = None,
        recon_workers: int | None = None) -> None:
    """Serve the API with uvicorn (``cloudmri service --local``)."""
    import uvicorn

    os.umask(0o077)
    uvicorn.run(create_app(config, recon_workers), host=host, port=port, log_level="info",
                proxy_headers=False, timeout_graceful_shutdown=5)
