"""Python client of the Cloud-MRI API: what kernels, widgets, Voilà apps and the CLI use to reach data.

Inside a JupyterHub user server it needs no arguments: the token is the user's own ``JUPYTERHUB_API_TOKEN`` and
the service URL comes from ``CLOUDMRI_SERVICE_URL``. Uploads go in chunks, resume from the last chunk the service
acknowledged, and are retried with exponential backoff when the connection drops or the service restarts.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from cloudmri_kernel.config import settings
from cloudmri_kernel.digest import file_sha256
from cloudmri_kernel.errors import CloudMRIError, UsageError

API = "/api/v1"
RETRY_STATUS = {502, 503, 504}
Progress = Callable[[int, int], None]


class ServiceError(CloudMRIError):
    """The service refused a request; ``status`` is the HTTP status and ``detail`` its explanation."""

    def __init__(self, status: int, detail: Any, method: str, path: str):
        self.status, self.detail = status, detail
        message = detail.get("message", detail) if isinstance(detail, dict) else detail
        super().__init__(f"{method} {path} -> {status}: {message}")
        self.exit_code = 2 if status in (401, 403) else 1


def default_token_file() -> Path:
    """Where ``cloudmri service token create --save`` puts a token and the client looks last."""
    return settings().data_dir / "client" / "token"


def save_token(token: str, path: Path | None = None) -> Path:
    """Write a token to a file of mode 0600 (atomically, replacing an older one)."""
    path = path or default_token_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.replace(temp, path)
    return path


def read_token_file(path: Path) -> str:
    """A token from a file that only its owner may read (mode 0600); refused with the reason otherwise."""
    if not path.exists():
        raise UsageError("the token file does not exist", path)
    if path.stat().st_mode & 0o077:
        raise UsageError("the token file is readable by others: chmod 600 it", path)
    return path.read_text().strip()


def default_token() -> str | None:
    """The caller's token: CLOUDMRI_SERVICE_TOKEN, …_TOKEN_FILE, JUPYTERHUB_API_TOKEN, then the saved one."""
    config = settings()
    if config.service_token:
        return config.service_token
    if config.service_token_file is not None:
        return read_token_file(config.service_token_file.expanduser())
    if os.environ.get("JUPYTERHUB_API_TOKEN"):
        return os.environ["JUPYTERHUB_API_TOKEN"]
    return read_token_file(default_token_file()) if default_token_file().exists() else None


class Client:
    """A connection to the Cloud-MRI API.

    Args:
        url: the service's base URL (default ``CLOUDMRI_SERVICE_URL``).
        token: the caller's token (default ``CLOUDMRI_SERVICE_TOKEN``, ``…_TOKEN_FILE`` or ``JUPYTERHUB_API_TOKEN``).
        retries: attempts per request when the connection fails or the service answers 502/503/504.
    """

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 60.0, retries: int = 6,
                 backoff: float = 0.25, transport: httpx.BaseTransport | None = None):
        self.url = (url or settings().service_url).rstrip("/")
        token = token or default_token()
        if not token:
            raise UsageError("no token: set CLOUDMRI_SERVICE_TOKEN_FILE, run inside JupyterHub, or save one with "
                             "'cloudmri service token create … --save'")
        self.retries, self.backoff = retries, backoff
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"token {token}"},
                                  timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, method: str, path: str, *, expect: tuple[int, ...] = (200,), **kwargs) -> httpx.Response:
        url = API + path
        for attempt in range(self.retries):
            try:
                reply = self._http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                if attempt == self.retries - 1:
                    raise UsageError(f"cannot reach the Cloud-MRI service at {self.url} ({exc})") from None
            else:
                if reply.status_code not in RETRY_STATUS or attempt == self.retries - 1:
                    break
            time.sleep(self.backoff * 2**attempt)
        if reply.status_code not in expect:
            try:
                detail = reply.json().get("detail")
            except ValueError:
                detail = reply.text[:500]
            raise ServiceError(reply.status_code, detail, method, url)
        return reply

    def _json(self, method: str, path: str, **kwargs) -> Any:
        return self._request(method, path, **kwargs).json()

    @staticmethod
    def _params(values: dict) -> dict:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in values.items() if v is not None}

    def whoami(self) -> dict:
        return self._json("GET", "/whoami")

    # datasets

    def upload(self, path: str | Path, progress: Progress | None = None, deidentified_with: str | None = None,
               sha256: str | None = None) -> dict:
        """Upload an MRD file; returns the dataset. Resumes an interrupted upload of the same file.

        Raises:
            ServiceError: 422 when the service finds the file is not valid MRD (``detail['findings']``).
        """
        path = Path(path)
        if not path.is_file():
            raise UsageError("no such file", path)
        size = path.stat().st_size
        digest = sha256 or file_sha256(path)
        record = self._resume_record(digest, size)
        upload_id = record.read_text().strip() if record.exists() else None
        if upload_id is not None:
            try:
                earlier = self._json("GET", f"/uploads/{upload_id}")
            except ServiceError:
                earlier = {"status": "unknown"}
            if earlier["status"] == "complete":  # the service committed it, but its answer was lost
                record.unlink(missing_ok=True)
                return self.dataset(earlier["dataset_id"])
            if earlier["status"] != "open":
                upload_id = None
        if upload_id is None:
            upload_id = self._json("POST", "/uploads", expect=(201,), json={
                "filename": path.name[:255], "size": size, "sha256": digest,
                "deidentified_with": deidentified_with})["id"]
            record.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            record.write_text(upload_id)
        try:
            dataset = self.resume_upload(upload_id, path, progress)
        except ServiceError:
            if self._upload_status(upload_id) == "failed":  # rejected for good: a retry starts afresh
                record.unlink(missing_ok=True)
            raise
        record.unlink(missing_ok=True)
        return dataset

    def _resume_record(self, digest: str, size: int) -> Path:
        """Where this client remembers an unfinished upload of the same bytes to the same service."""
        service = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        return settings().data_dir / "client" / "uploads" / f"{service}-{digest}-{size}"

    def _upload_status(self, upload_id: str) -> str:
        try:
            return self._json("GET", f"/uploads/{upload_id}")["status"]
        except (ServiceError, UsageError):
            return "unknown"

    def resume_upload(self, upload_id: str, path: str | Path, progress: Progress | None = None) -> dict:
        """Send the rest of an upload from the offset the service acknowledged, then complete it."""
        state = self._json("GET", f"/uploads/{upload_id}")
        offset, size, chunk = state["offset"], state["size"], state["chunk_size"]
        with open(path, "rb") as handle:
            while offset < size:
                handle.seek(offset)
                data = handle.read(chunk)
                reply = self._request("PUT", f"/uploads/{upload_id}/chunks", params={"offset": offset},
                                      content=data, headers={"Content-Type": "application/octet-stream"},
                                      expect=(200, 409))
                offset = reply.json()["offset"]
                if progress:
                    progress(offset, size)
        return self._json("POST", f"/uploads/{upload_id}/complete", expect=(201,))

    def datasets(self, **filters) -> list[dict]:
        """Search: site, subject, acquired_from, acquired_to, sequence, field_strength_t, text, limit, offset.

        Each row's ``access`` says why the caller sees it (``site``, ``grant`` or ``chain grant``). When the
        service's ledger node does not answer, datasets granted only on chain are left out, with a warning.
        """
        reply = self._request("GET", "/datasets", params=self._params(filters))
        if reply.headers.get("X-CloudMRI-Chain-Grants") == "unavailable":
            warnings.warn("the service's ledger node does not answer: datasets granted only on chain are not "
                          "listed", stacklevel=2)
        return reply.json()

    def dataset(self, dataset_id: str) -> dict:
        return self._json("GET", f"/datasets/{dataset_id}")

    def _download(self, path: str, dest: Path, progress: Progress | None) -> Path:
        dest = Path(dest)
        temp = dest.with_name(f".{dest.name}.part")
        digest = hashlib.sha256()
        try:
            with self._http.stream("GET", API + path) as reply:
                if reply.status_code != 200:
                    reply.read()
                    raise ServiceError(reply.status_code, reply.json().get("detail"), "GET", API + path)
                expected, total, done = reply.headers.get("x-content-sha256"), int(
                    reply.headers.get("content-length", 0)), 0
                with open(temp, "wb") as handle:
                    for block in reply.iter_bytes(1 << 20):
                        handle.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
            if expected and digest.hexdigest() != expected:
                raise CloudMRIError(f"the download's SHA-256 {digest.hexdigest()} is not the stored {expected}")
            os.replace(temp, dest)
        except httpx.HTTPError as exc:
            raise CloudMRIError(f"the download of {path} broke off ({exc}); nothing was written") from None
        finally:
            temp.unlink(missing_ok=True)
        return dest

    def download_raw(self, dataset_id: str, dest: str | Path, progress: Progress | None = None) -> Path:
        """The raw MRD file, checked against its SHA-256; written atomically."""
        return self._download(f"/datasets/{dataset_id}/raw", Path(dest), progress)

    def series_of(self, dataset_id: str) -> list[dict]:
        return self._json("GET", f"/datasets/{dataset_id}/series")

    # reconstruction

    def submit(self, dataset_id: str, recipe: dict | None = None) -> dict:
        return self._json("POST", "/jobs", expect=(202,), json={"dataset_id": dataset_id, "recipe": recipe})

    def job(self, job_id: str) -> dict:
        return self._json("GET", f"/jobs/{job_id}")

    def jobs(self, **filters) -> list[dict]:
        return self._json("GET", "/jobs", params=self._params(filters))

    def cancel(self, job_id: str) -> dict:
        return self._json("POST", f"/jobs/{job_id}/cancel")

    def watch(self, job_id: str, interval: float = 0.5, timeout: float | None = None) -> Iterator[dict]:
        """Yield the job's state whenever it changes, until it is done, failed or cancelled."""
        start, last = time.monotonic(), None
        while True:
            job = self.job(job_id)
            if (job["status"], job["progress"]) != last:
                last = (job["status"], job["progress"])
                yield job
            if job["status"] in ("done", "failed", "cancelled"):
                return
            if timeout is not None and time.monotonic() - start > timeout:
                raise CloudMRIError(f"job {job_id} is still {job['status']} after {timeout:.0f} s")
            time.sleep(interval)

    def wait(self, job_id: str, timeout: float | None = None) -> dict:
        """The job's final state; raises if it failed."""
        *_, job = self.watch(job_id, timeout=timeout)
        if job["status"] == "failed":
            raise CloudMRIError(f"job {job_id} failed: {job['error']}")
        return job

    # images

    def series(self, series_id: str) -> dict:
        return self._json("GET", f"/series/{series_id}")

    def download_series(self, series_id: str, dest: str | Path, progress: Progress | None = None) -> Path:
        return self._download(f"/series/{series_id}/file", Path(dest), progress)

    def image_png(self, series_id: str, index: int, window: tuple[float, float] | None = None) -> bytes:
        params = {} if window is None else {"low": window[0], "high": window[1]}
        return self._request("GET", f"/series/{series_id}/images/{index}.png", params=params).content

    def images(self, series_id: str, index: int | None = None) -> np.ndarray:
        """Magnitude images, float32 (n, y, x), or one (y, x)."""
        params = {} if index is None else {"index": index}
        reply = self._request("GET", f"/series/{series_id}/array", params=params)
        return np.load(io.BytesIO(reply.content), allow_pickle=False)

    # reading

    def save_labels(self, series_id: str, name: str, rois: list[dict], vocabulary: list[str] = (),
                    version: int | None = None) -> dict:
        """Save the caller's label set ``name``. ``version``: the stored version this replaces (0 for a new set);
        if it moved on meanwhile the service answers 409 (:class:`ServiceError` with the stored set in
        ``detail["stored"]``). None replaces whatever is stored."""
        return self._json("PUT", f"/series/{series_id}/labels/{name}",
                          json={"rois": rois, "vocabulary": list(vocabulary), "version": version})

    def labels(self, series_id: str, reader: str | None = None) -> list[dict]:
        return self._json("GET", f"/series/{series_id}/labels", params=self._params({"reader": reader}))

    def score(self, series_id: str, score: int, criteria: dict | None = None, comment: str = "") -> dict:
        return self._json("POST", f"/series/{series_id}/scores", expect=(201,),
                          json={"score": score, "criteria": criteria or {}, "comment": comment})

    def scores(self, series_id: str) -> list[dict]:
        return self._json("GET", f"/series/{series_id}/scores")

    def reports(self, dataset_id: str) -> list[dict]:
        """The reports on a dataset that the caller may see."""
        return self._json("GET", f"/datasets/{dataset_id}/reports")

    def create_report(self, dataset_id: str, findings: str = "", impression: str = "",
                      template: str = "generic") -> dict:
        return self._json("POST", f"/datasets/{dataset_id}/reports", expect=(201,),
                          json={"findings": findings, "impression": impression, "template": template})

    def update_report(self, report_id: str, findings: str, impression: str, template: str = "generic",
                      version: int | None = None) -> dict:
        """Edit a draft. ``version``: the version this edit replaces; a report saved or signed since is refused
        (409, the stored report in ``detail["stored"]``). None replaces the draft whatever its version."""
        return self._json("PUT", f"/reports/{report_id}", json={"findings": findings, "impression": impression,
                                                                 "template": template, "version": version})

    def sign_report(self, report_id: str, version: int | None = None) -> dict:
        """Sign off (locks the report, records its SHA-256); with ``version``, only the version that was read."""
        return self._json("POST", f"/reports/{report_id}/sign", json={"version": version})

    def assign(self, dataset_id: str, reader: str, priority: int = 0) -> dict:
        return self._json("POST", "/assignments", expect=(201,),
                          json={"dataset_id": dataset_id, "reader": reader, "priority": priority})

    def worklist(self, status: str | None = None) -> list[dict]:
        return self._json("GET", "/worklist", params=self._params({"status": status}))

    def update_assignment(self, assignment_id: str, status: str, reason: str = "") -> dict:
        return self._json("PATCH", f"/assignments/{assignment_id}", json={"status": status, "reason": reason})

    def reassign(self, assignment_id: str, reader: str, reason: str = "") -> dict:
        """Give a study to another reader (an admin of the dataset's site); it goes back to ``assigned``."""
        return self._json("POST", f"/assignments/{assignment_id}/reassign", json={"reader": reader, "reason": reason})

    # blinded reader studies

    def create_study(self, name: str, series_ids: list[str], readers: list[str],
                     criteria: list[str] | None = None) -> dict:
        """Set up a blinded reader study (needs ``recon`` or ``admin``); every reader scores every series."""
        body = {"name": name, "series_ids": list(series_ids), "readers": list(readers)}
        if criteria is not None:
            body["criteria"] = list(criteria)
        return self._json("POST", "/studies", expect=(201,), json=body)

    def studies(self) -> list[dict]:
        """The studies the caller created or reads, with the caller's progress."""
        return self._json("GET", "/studies")

    def study_cases(self, study_id: str) -> list[dict]:
        """The caller's blinded cases of a study, in their order: codes, image counts, scores and versions."""
        return self._json("GET", f"/studies/{study_id}/cases")

    def study_case_png(self, study_id: str, code: str, index: int) -> bytes:
        return self._request("GET", f"/studies/{study_id}/cases/{code}/images/{index}.png").content

    def study_case_images(self, study_id: str, code: str) -> np.ndarray:
        """A case's magnitude images, float32 (n, y, x), for the viewer."""
        reply = self._request("GET", f"/studies/{study_id}/cases/{code}/array")
        return np.load(io.BytesIO(reply.content), allow_pickle=False)

    def score_case(self, study_id: str, code: str, scores: dict[str, int], version: int) -> dict:
        """Save scores of one case; ``version`` is the case's version they replace (0 the first time).

        Raises:
            ServiceError: 409 when the case was saved elsewhere meanwhile (``detail['version']``, ``['scores']``).
        """
        return self._json("PUT", f"/studies/{study_id}/cases/{code}/scores",
                          json={"scores": scores, "version": version})

    def close_study(self, study_id: str) -> dict:
        return self._json("POST", f"/studies/{study_id}/close")

    def study_results(self, study_id: str, interval: str = "bootstrap", weights: str = "quadratic") -> dict:
        """Per-method means with 95 % confidence intervals and inter-reader kappa (creator or site admin)."""
        return self._json("GET", f"/studies/{study_id}/results", params={"interval": interval, "weights": weights})

    # grants and audit

    def grant(self, dataset_id: str, scope: str, expires_at: datetime, user: str | None = None,
              site: str | None = None, reason: str = "") -> dict:
        return self._json("POST", "/grants", expect=(201,), json={
            "dataset_id": dataset_id, "scope": scope, "expires_at": expires_at.isoformat(), "user": user,
            "site": site, "reason": reason})

    def grants(self, dataset_id: str | None = None, active: bool = True) -> list[dict]:
        return self._json("GET", "/grants", params=self._params({"dataset_id": dataset_id, "active": active}))

    def revoke(self, grant_id: str) -> dict:
        return self._json("DELETE", f"/grants/{grant_id}")

    def audit(self, **filters) -> list[dict]:
        """Audit events (admins): user, action, outcome, dataset_id, since, before_id, limit."""
        return self._json("GET", "/audit", params=self._params(filters))

    # ledger

    def provenance(self, dataset_id: str) -> dict:
        """Re-check a dataset against the ledger: the service re-hashes its stored object and checks the inclusion
        proof against the root on chain (state, sha256, block_number, tx_hash, anchored_at, root, proof …).

        Raises:
            ServiceError: 409 when the stored object no longer matches the anchored hash (``detail`` names both),
                503 when the ledger node does not answer, 400 when the service runs without a ledger.
        """
        return self._json("GET", f"/datasets/{dataset_id}/provenance")

    def ledger_history(self, dataset_id: str) -> list[dict]:
        """Every ledger record of a dataset and of what was derived from it (series, labels, reports), oldest
        first: kind, object_hash, state (queued/pending/sent/confirmed), batch, root, proof, block, transaction."""
        return self._json("GET", f"/datasets/{dataset_id}/ledger-history")

    def ledger_grant(self, dataset_id: str, scope: str, expires_at: datetime, site: str | None = None,
                     account: str | None = None) -> list[dict]:
        """Grant a site (each of its registered accounts) or one account a scope on a dataset, on chain."""
        return self._json("POST", "/ledger/grants", expect=(201,), json={
            "dataset_id": dataset_id, "scope": scope, "expires_at": expires_at.isoformat(), "site": site,
            "account": account})

    def ledger_revoke(self, dataset_id: str, scope: str, site: str | None = None,
                      account: str | None = None) -> list[dict]:
        """Revoke a site's (or one account's) grant of a scope on a dataset, on chain."""
        return self._json("DELETE", "/ledger/grants", params=self._params(
            {"dataset_id": dataset_id, "scope": scope, "site": site, "account": account}))

    def ledger_grants(self, dataset_id: str) -> list[dict]:
        """Every grant on chain for a dataset, with its state (``active``)."""
        return self._json("GET", "/ledger/grants", params={"dataset_id": dataset_id})
