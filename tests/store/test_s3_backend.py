"""The object store on S3, against a real moto server process: put, open, dedup, verify, a flipped bit."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloudmri_kernel.crypto import IntegrityError, KeyRing
from cloudmri_kernel.store import ObjectNotFound, ObjectStore
from cloudmri_kernel.store.backends import FsspecBackend

MOTO_SERVER = Path(sys.executable).parent / "moto_server"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def s3_options(tmp_path, monkeypatch) -> dict:
    """A moto S3 server on a free port with an empty bucket 'scans'; fsspec options to reach it."""
    if not MOTO_SERVER.exists():
        pytest.skip("needs moto[server] (dev extra)")
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "none"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    server = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        options = {"key": "testing", "secret": "testing", "endpoint_url": f"http://127.0.0.1:{port}",
                   "skip_instance_cache": True}
        import s3fs

        s3fs.S3FileSystem(**options).mkdir("scans")
        yield options
    finally:
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


@pytest.mark.slow
def test_store_on_s3(s3_options, tmp_path):
    store = ObjectStore("s3://scans/store", KeyRing(tmp_path / "kek"), s3_options, chunk_size=4096)
    assert isinstance(store.backend, FsspecBackend)
    data = os.urandom(3 * 4096 + 17)
    digest = hashlib.sha256(data).hexdigest()
    stored = store.put(data, "north")
    assert stored.sha256 == digest and stored.created and stored.size == len(data)
    assert not store.put(iter([data[:5], data[5:]]), "north").created
    assert store.read_bytes("north", digest) == data
    assert store.get_file("north", digest, tmp_path / "copy.dat").read_bytes() == data
    assert list(store.iter_objects()) == [("north", digest)]
    fs = store.backend.fs
    assert sorted(fs.find("scans/store")) == [f"scans/store/objects/north/{digest[:2]}/{digest}",
                                              f"scans/store/objects/north/{digest[:2]}/{digest}.key"]
    with pytest.raises(ObjectNotFound):
        store.open("north", "0" * 64)
    assert store.rotate("north") == 1 and store.read_bytes("north", digest) == data

    other = store.put(b"second object", "north").sha256
    fs.pipe_file(f"scans/store/objects/north/{'ee' * 32}.key", b"{}")
    report = store.verify()
    assert report.checked == 2 and report.damaged == [] and report.orphans == [f"objects/north/{'ee' * 32}.key"]

    path = f"scans/store/objects/north/{digest[:2]}/{digest}"
    damaged = bytearray(fs.cat_file(path))
    damaged[-20] ^= 0x01  # in the last chunk (17 bytes + tag)
    fs.pipe_file(path, bytes(damaged))
    with pytest.raises(IntegrityError, match="chunk 3 of 'north/"):
        store.read_bytes("north", digest)
    report = store.verify()
    assert [(site, sha) for site, sha, _ in report.damaged] == [("north", digest)]
    assert store.read_bytes("north", other) == b"second object"


@pytest.mark.slow
def test_large_object_goes_up_in_parts(s3_options, tmp_path):
    """20 MiB: a multipart upload of three 8 MiB parts, read back in 8 MiB ranges."""
    store = ObjectStore("s3://scans/big", KeyRing(tmp_path / "kek"), s3_options)
    block = os.urandom(1 << 20)
    digest = store.put(iter([block] * 20), "north").sha256
    assert digest == hashlib.sha256(block * 20).hexdigest()
    info = store.backend.fs.info(f"scans/big/objects/north/{digest[:2]}/{digest}")
    assert info["size"] > 20 << 20 and info["ETag"].endswith("-3\"")  # S3 marks multipart ETags with "-parts"
    readback = hashlib.sha256()
    for piece in store.open("north", digest):
        readback.update(piece)
    assert readback.hexdigest() == digest
