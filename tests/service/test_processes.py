"""The API service as users run it: a real service process, CLI and client processes, crashes and restarts.

Each test starts ``cloudmri service --local`` as a child process (:class:`ServiceProcess`): uvicorn, the
lifespan, the Dask cluster of the job runner and the catalog are the real ones, and clients reach the service
only over loopback HTTP. Processes die by SIGKILL, as in a crash or an out-of-memory kill.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from cloudmri_kernel.catalog import Catalog
from cloudmri_kernel.catalog.models import Dataset, Upload
from cloudmri_kernel.client import Client
from cloudmri_kernel.config import Settings
from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from cloudmri_kernel.processes import running_members
from cloudmri_kernel.service.staging import UploadStaging
from cloudmri_kernel.service.testing import ServiceProcess, create_token, service_env
from cloudmri_kernel.store import ObjectStore
from tests.conftest import GRAPPA_FILE, needs_shared_data

pytestmark = pytest.mark.slow

CLOUDMRI = Path(sys.executable).with_name("cloudmri")
MIB = 1 << 20


def cloudmri(env: dict[str, str], *args: str) -> str:
    """Run a ``cloudmri`` command as a user does; its standard output."""
    result = subprocess.run([str(CLOUDMRI), *args], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"cloudmri {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
    return result.stdout


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_scan(path: Path, seed: int) -> Path:
    """A valid MRD raw file of about 2.5 MB (three 1 MiB chunks); each seed gives different bytes."""
    return write_phantom(path, PhantomSpec(matrix=128, coils=10, accel=2, calib=16, oversampling=1, seed=seed))


@needs_shared_data
def test_upload_reconstruct_and_download_with_the_cli(catalog_url, tmp_path):
    """The issue's "done when": upload, list, reconstruct on Dask workers, download images, PNGs and the raw file."""
    from cloudmri_kernel.export.dicom import combined_magnitude
    from cloudmri_kernel.mrd.reader import MRDFile
    from cloudmri_kernel.recon.engine import reconstruct_file
    from cloudmri_kernel.recon.output import SERIES
    from cloudmri_kernel.service.images import png_bytes

    env = service_env(tmp_path / "service", catalog_url)
    with ServiceProcess(env, workers=2) as service:
        user = service.client_env(create_token(env, "alice", "siteA", ["researcher"]), tmp_path / "client")
        uploaded = " ".join(cloudmri(user, "upload", str(GRAPPA_FILE)).split())
        dataset_id = re.search(r"-> dataset ([0-9a-f]{32})", uploaded).group(1)
        listed = json.loads(cloudmri(user, "ls", "--json"))
        assert [(d["id"], d["sha256"], d["size"], d["filename"]) for d in listed] == [
            (dataset_id, sha256_of(GRAPPA_FILE), GRAPPA_FILE.stat().st_size, GRAPPA_FILE.name)]

        done = " ".join(cloudmri(user, "job", "submit", dataset_id, "--wait").split())
        series_id = re.search(r"done: series ([0-9a-f]{32})", done).group(1)
        # The job ran on the LocalCluster's worker processes, which live in the service's process group.
        assert len(running_members(service.pid)) >= 3
        assert [s["id"] for s in json.loads(cloudmri(user, "ls", "--series", dataset_id, "--json"))] == [series_id]

        cloudmri(user, "get", series_id, "--series", "-o", str(tmp_path / "images.h5"))
        cloudmri(user, "get", series_id, "--series", "--png", "-o", str(tmp_path / "png"))
        cloudmri(user, "get", dataset_id, "-o", str(tmp_path / "raw.h5"))
        group = service.pid
    assert running_members(group) == []

    assert (tmp_path / "raw.h5").read_bytes() == GRAPPA_FILE.read_bytes()
    with MRDFile(tmp_path / "images.h5") as mrd:
        headers, data, attributes = mrd.read_images(SERIES)
    served = combined_magnitude(data, len(headers))
    served = served.reshape(-1, *served.shape[-2:])
    local = reconstruct_file(GRAPPA_FILE)
    provenance = json.loads(attributes[0])
    assert provenance["recipe"] == local.recipe.model_dump(mode="json")
    assert provenance["source_sha256"] == sha256_of(GRAPPA_FILE)
    expected = local.images.reshape(-1, *local.images.shape[-2:])
    assert served.shape == expected.shape
    assert np.allclose(served, expected, rtol=1e-5, atol=0)

    pngs = sorted((tmp_path / "png").iterdir())
    assert [p.name for p in pngs] == [f"image_{i:03d}.png" for i in range(len(expected))]
    for path, image in zip(pngs, served.astype(np.float32), strict=True):
        rendered = np.asarray(Image.open(io.BytesIO(png_bytes(image, None))))
        assert np.array_equal(np.asarray(Image.open(path)), rendered)


CLIENT_KILLED_AFTER_FIRST_CHUNK = """
import os, signal, sys
from cloudmri_kernel.client import Client

def die(offset, size):
    os.kill(os.getpid(), signal.SIGKILL)

Client().upload(sys.argv[1], progress=die)
"""


def test_a_killed_client_resumes_at_the_acknowledged_offset(tmp_path):
    """A client process killed after its first acknowledged chunk; a new client sends only the rest."""
    scan = write_scan(tmp_path / "scan.h5", seed=1)
    size = scan.stat().st_size
    assert 2 * MIB < size < 3 * MIB
    env = service_env(tmp_path / "service", upload_chunk_mb=1)
    alice = create_token(env, "alice", "siteA", ["researcher"])
    with ServiceProcess(env) as service, Client(service.url, create_token(env, "ada", "siteA", ["admin"])) as admin:
        # The client keeps its record of unfinished uploads in its data directory: the same for both clients.
        child = subprocess.run([sys.executable, "-c", CLIENT_KILLED_AFTER_FIRST_CHUNK, str(scan)],
                               env=service.client_env(alice, os.environ["CLOUDMRI_DATA_DIR"]), timeout=300)
        assert child.returncode == -signal.SIGKILL

        chunks = admin.audit(action="put_chunk", limit=1000)
        assert [(c["status_code"], c["user"]) for c in chunks] == [(200, "alice")]
        upload_id = re.fullmatch(r"/api/v1/uploads/([0-9a-f]{32})/chunks", chunks[0]["path"]).group(1)
        state = httpx.get(f"{service.url}/api/v1/uploads/{upload_id}",
                          headers={"Authorization": f"token {alice}"}).json()
        assert (state["status"], state["offset"], state["size"]) == ("open", MIB, size)

        offsets = []
        with Client(service.url, alice) as client:
            dataset = client.upload(scan, progress=lambda offset, _size: offsets.append(offset))
            client.download_raw(dataset["id"], tmp_path / "back.h5")
        assert offsets == [2 * MIB, size]
        assert (dataset["sha256"], dataset["size"]) == (sha256_of(scan), size)
        assert (tmp_path / "back.h5").read_bytes() == scan.read_bytes()
        assert len(admin.audit(action="create_upload", limit=1000)) == 1
        assert sorted(c["status_code"] for c in admin.audit(action="put_chunk", limit=1000)) == [200, 200, 200]
        assert [c["status_code"] for c in admin.audit(action="complete_upload", limit=1000)] == [201]


class RequestLog(httpx.HTTPTransport):
    """A transport that lets another thread wait until a given request has gone out."""

    def __init__(self):
        super().__init__()
        self.sent: list[str] = []
        self.finished = False
        self._changed = threading.Condition()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        kind = {"POST": "complete" if request.url.path.endswith("/complete") else "declare",
                "PUT": "chunk"}.get(request.method, "query")
        with self._changed:
            self.sent.append(kind)
            self._changed.notify_all()
        return super().handle_request(request)

    def finish(self) -> None:
        with self._changed:
            self.finished = True
            self._changed.notify_all()

    def wait_for(self, kind: str, count: int, timeout: float) -> bool:
        """Wait until the ``count``-th request of ``kind`` was sent (True) or the client finished (False)."""
        with self._changed:
            self._changed.wait_for(lambda: self.sent.count(kind) >= count or self.finished, timeout)
            return self.sent.count(kind) >= count


class Uploader(threading.Thread):
    """One client upload in a thread that gives up at the first connection failure (no retries)."""

    def __init__(self, url: str, token: str, path: Path):
        super().__init__(daemon=True)
        self.requests = RequestLog()
        self.client = Client(url, token, retries=1, transport=self.requests)
        self.path = path
        self.dataset: dict | None = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self.dataset = self.client.upload(self.path)
        except Exception as exc:
            self.error = exc
        finally:
            self.client.close()
            self.requests.finish()

    def lost_the_service(self) -> bool:
        """Whether the upload ended because the service went away (any refusal, ServiceError, would be a bug)."""
        return isinstance(self.error, UsageError) and "cannot reach the Cloud-MRI service" in str(self.error)


def check_consistency(catalog: Catalog, store: ObjectStore, staging: UploadStaging, committed: dict[str, str],
                      files: dict[str, Path]):
    """The invariants of the service's data after a crash.

    Args:
        committed: dataset ID -> SHA-256 of each dataset a client saw committed (201).
        files: SHA-256 -> path of each file the clients uploaded.
    """
    report = store.verify()
    assert report.damaged == [], "partial or damaged objects are visible"
    objects = set(store.iter_objects())
    with catalog.session() as db:
        datasets = {d.id: d for d in db.scalars(select(Dataset))}
        uploads = list(db.scalars(select(Upload)))
    for dataset in datasets.values():
        assert (dataset.site, dataset.sha256) in objects, f"dataset {dataset.id} lost its object"
        assert store.info(dataset.site, dataset.sha256).size == dataset.size
    assert {i: datasets[i].sha256 for i in committed if i in datasets} == committed, "a committed dataset is lost"
    for upload in uploads:
        assert upload.status != "failed", f"upload {upload.id} failed: {upload.error}"
        if upload.status == "complete":
            assert upload.dataset_id in datasets and datasets[upload.dataset_id].sha256 == upload.sha256
        else:
            staged = staging.path(upload.id).read_bytes() if staging.path(upload.id).exists() else b""
            assert len(staged) <= upload.size
            assert staged == files[upload.sha256].read_bytes()[:len(staged)], f"upload {upload.id}: wrong bytes"


def kill_point(catalog: Catalog, store: ObjectStore, staging: UploadStaging, uploader: Uploader, sha256: str,
               site: str) -> str:
    """Where the kill found the trial's upload, judged from the client's answer and the data left behind."""
    if uploader.dataset is not None:
        return "after the answer"
    with catalog.session() as db:
        upload = db.scalars(select(Upload).where(Upload.sha256 == sha256).order_by(Upload.created_at.desc())).first()
    if upload is None:
        return "declare"
    if upload.status == "complete":
        return "complete: committed, answer lost"
    if staging.offset(upload.id) < upload.size:
        return "chunks"
    if store.exists(site, sha256):
        return "complete: object stored, no dataset yet"
    return "complete: before the object"


def wait_for_new_file(directory: Path, known: set[Path], uploader: Uploader, timeout: float) -> bool:
    """Wait until a file not in ``known`` appears in ``directory`` (True) or the upload ends (False)."""
    deadline = time.monotonic() + timeout
    while uploader.is_alive() and time.monotonic() < deadline:
        if directory.exists() and set(directory.iterdir()) - known:
            return True
        time.sleep(0.001)
    return False


def test_service_killed_at_random_points_of_uploads_loses_and_exposes_nothing(catalog_url, tmp_path):
    """SIGKILL of the service during declare, chunks or complete, then restart: the data stays consistent."""
    trials = 50 if catalog_url.startswith("sqlite") else 10
    seed = int.from_bytes(os.urandom(4), "big")
    print(f"crash loop on {catalog_url.split(':')[0]}: {trials} trials, seed {seed}")
    rng = random.Random(seed)
    service_dir = tmp_path / "service"
    env = service_env(service_dir, catalog_url, upload_chunk_mb=1)
    config = Settings(data_dir=service_dir, catalog_url=catalog_url)
    store = ObjectStore.from_settings(config)
    staging = UploadStaging(service_dir / "service" / "staging")
    committed: dict[str, str] = {}
    files: dict[str, Path] = {}

    def new_scan() -> Path:
        path = write_scan(tmp_path / f"scan{len(files)}.h5", seed=len(files))
        files[sha256_of(path)] = path
        return path

    token = create_token(env, "alice", "siteA", ["researcher"])
    with ServiceProcess(env) as service, contextlib.ExitStack() as cleanup:
        catalog = Catalog.open(catalog_url, migrate=False)
        cleanup.callback(catalog.dispose)
        # How long the complete step takes right after a start (it imports the MRD checks) and once warm.
        complete_seconds = []
        for _ in range(2):
            uploader = Uploader(service.url, token, new_scan())
            uploader.start()
            assert uploader.requests.wait_for("complete", 1, timeout=120)
            start = time.monotonic()
            uploader.join()
            complete_seconds.append(time.monotonic() - start)
            committed[uploader.dataset["id"]] = uploader.dataset["sha256"]
        cold, warm = complete_seconds
        print(f"complete step right after a start {cold:.2f} s, warm {warm:.2f} s")
        # What each trial aims its kill at, in turn: (what happens, the how-manieth, delay range after it). "store":
        # the complete step's encrypted copy appears in the store's temporary directory, shortly before the commit.
        # Declares and 1 MiB chunks take a few ms each on loopback; the commit follows the store's copy within tens.
        targets = itertools.cycle([("declare", 1, (0.0, 0.01)), ("chunk", 1, (0.0, 0.015)),
                                   ("complete", 1, (0.0, cold)), ("chunk", 2, (0.0, 0.015)),
                                   ("store", 1, (0.0, warm / 2)), ("store", 1, (0.0, warm / 2))])
        # A continued upload skips what the interrupted one did already: aim only at what is left.
        left = {"chunks": {"chunk", "complete", "store"}, "complete: before the object": {"complete", "store"},
                "complete: object stored, no dataset yet": {"complete", "store"}}
        store_tmp = service_dir / "store" / "tmp"

        points, restarts, scan, point = Counter(), [], new_scan(), "after the answer"
        started = time.monotonic()
        for _ in range(trials):
            kind, count, delays = next(targets)
            while kind not in left.get(point, {kind}):
                kind, count, delays = next(targets)
            known = set(store_tmp.iterdir()) if store_tmp.exists() else set()
            uploader = Uploader(service.url, token, scan)
            uploader.start()
            if kind == "store":
                reached = wait_for_new_file(store_tmp, known, uploader, timeout=120)
            else:
                reached = uploader.requests.wait_for(kind, count, timeout=120)
            if reached:
                time.sleep(rng.uniform(*delays))
            service.kill()
            uploader.join(timeout=120)
            assert not uploader.is_alive()
            assert uploader.dataset is not None or uploader.lost_the_service(), repr(uploader.error)
            site, sha256 = "siteA", sha256_of(scan)
            point = kill_point(catalog, store, staging, uploader, sha256, site)
            points[point] += 1
            if uploader.dataset is not None:
                assert uploader.dataset["sha256"] == sha256
                committed[uploader.dataset["id"]] = sha256
                scan = new_scan()
            check_consistency(catalog, store, staging, committed, files)
            start = time.monotonic()
            service.restart()
            restarts.append(time.monotonic() - start)

        with Client(service.url, token) as client:  # the last interrupted upload resumes and completes
            dataset = client.upload(scan)
        assert dataset["sha256"] == sha256_of(scan)
        committed[dataset["id"]] = dataset["sha256"]
        print(f"{trials} trials in {time.monotonic() - started:.0f} s; one restart takes "
              f"{statistics.median(restarts):.2f} s (median); kills landed in: {dict(points)}")
        service.kill()
        check_consistency(catalog, store, staging, committed, files)
        with catalog.session() as db:
            assert {d.sha256 for d in db.scalars(select(Dataset))} == set(committed.values())
    assert points["chunks"] > 0
    assert sum(n for point, n in points.items() if point.startswith("complete")) > 0
