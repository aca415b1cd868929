"""The encrypted object store on a local directory: addressing, dedup, integrity, orphans, rotation, memory."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cloudmri_kernel.crypto import IntegrityError, KeyRing
from cloudmri_kernel.crypto.stream import HEADER_FIXED, read_header
from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.store import HashMismatchError, ObjectNotFound, ObjectStore, StoredObject

CHUNK = 1024
DATA = bytes(range(256)) * 20 + b"tail"  # 5 chunks of 1024 bytes


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_under(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()) if path.exists() else []


@pytest.fixture
def store(tmp_path) -> ObjectStore:
    return ObjectStore(tmp_path / "store", KeyRing(tmp_path / "kek"), chunk_size=CHUNK)


def data_path(store: ObjectStore, site: str, digest: str) -> Path:
    return store.backend.root / "objects" / site / digest[:2] / digest


def test_put_and_read_back(store, tmp_path):
    stored = store.put(DATA, "north")
    digest = sha(DATA)
    assert stored == StoredObject("north", digest, len(DATA), created=True)
    assert store.read_bytes("north", digest) == DATA
    assert [len(piece) for piece in store.open("north", digest)] == [1024] * 5 + [4]
    target = store.get_file("north", digest, tmp_path / "copy.h5")
    assert target == tmp_path / "copy.h5" and target.read_bytes() == DATA
    assert store.exists("north", digest) and not store.exists("south", digest)
    assert store.info("north", digest) == StoredObject("north", digest, len(DATA), created=False)
    assert list(store.iter_objects()) == [("north", digest)]


def test_layout_and_sidecar(store):
    digest = store.put(DATA, "north").sha256
    root = store.backend.root
    assert files_under(root / "objects") == [f"north/{digest[:2]}/{digest}", f"north/{digest[:2]}/{digest}.key"]
    assert files_under(root / "tmp") == []
    sidecar = json.loads((root / "objects" / "north" / digest[:2] / f"{digest}.key").read_text())
    assert set(sidecar) == {"kek_id", "wrapped", "key_id", "size", "created"}
    assert sidecar["kek_id"] == "north/v1" and sidecar["size"] == len(DATA)
    assert len(base64.b64decode(sidecar["wrapped"])) == 60
    with open(data_path(store, "north", digest), "rb") as handle:
        header = read_header(handle)
    assert header.key_id == sidecar["key_id"] and header.key_id.startswith("north/")
    assert header.chunk_size == CHUNK
    encrypted = data_path(store, "north", digest).read_bytes()
    assert len(encrypted) == len(header.raw) + len(DATA) + 6 * 16
    assert DATA[:64] not in encrypted  # stored encrypted


def test_every_kind_of_source_gives_the_same_object(store, tmp_path):
    source = tmp_path / "scan.dat"
    source.write_bytes(DATA)
    pieces = [DATA[:1], DATA[1:3000], DATA[3000:]]
    results = [store.put(DATA, "north"), store.put(source, "north"), store.put(str(source), "north"),
               store.put(io.BytesIO(DATA), "north"), store.put(iter(pieces), "north")]
    assert {r.sha256 for r in results} == {sha(DATA)}
    assert [r.created for r in results] == [True, False, False, False, False]
    assert len(files_under(store.backend.root / "objects")) == 2  # dedup: one data file, one sidecar
    assert files_under(store.backend.root / "tmp") == []


def test_empty_object(store):
    stored = store.put(b"", "north")
    assert stored.sha256 == sha(b"") and stored.size == 0
    assert store.read_bytes("north", stored.sha256) == b""


def test_sites_are_separate_namespaces(store):
    a, b = store.put(DATA, "north"), store.put(DATA, "south")
    assert a.created and b.created and a.sha256 == b.sha256
    assert data_path(store, "north", a.sha256).read_bytes() != data_path(store, "south", a.sha256).read_bytes()
    assert list(store.iter_objects("south")) == [("south", a.sha256)]


def test_expected_hash_mismatch_stores_nothing(store):
    wrong = sha(b"other")
    with pytest.raises(HashMismatchError, match=f"SHA-256 is {sha(DATA)}, not the expected {wrong}: .*nothing was"):
        store.put(DATA, "north", expected_sha256=wrong)
    assert files_under(store.backend.root / "objects") == []
    assert files_under(store.backend.root / "tmp") == []
    assert store.put(DATA, "north", expected_sha256=sha(DATA)).created


def test_flipped_bit_is_detected_on_read_and_by_verify(store, tmp_path):
    digest = store.put(DATA, "north").sha256
    good = store.put(b"intact", "north").sha256
    path = data_path(store, "north", digest)
    damaged = bytearray(path.read_bytes())
    damaged[HEADER_FIXED.size + 20 + 2 * (CHUNK + 16) + 100] ^= 0x04  # in chunk 2
    path.write_bytes(bytes(damaged))
    with pytest.raises(IntegrityError, match="chunk 2 of 'north/[0-9a-f]+' failed authentication"):
        store.read_bytes("north", digest)
    with pytest.raises(IntegrityError):
        store.get_file("north", digest, tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists() and list(tmp_path.glob(".out.h5*")) == []
    calls = []
    report = store.verify(progress=lambda done, total: calls.append((done, total)))
    assert report.checked == 2 and calls == [(1, 2), (2, 2)]
    assert [(site, d) for site, d, _ in report.damaged] == [("north", digest)]
    assert "chunk 2" in report.damaged[0][2]
    assert report.orphans == []
    assert store.read_bytes("north", good) == b"intact"


def test_replaced_files_are_detected_before_the_last_chunk_is_released(store):
    """Object A's files replaced by object B's, re-wrapped for A: decrypts fine, but the hash is B's."""
    a, b = store.put(DATA, "north").sha256, store.put(DATA[::-1], "north").sha256
    root = store.backend.root / "objects" / "north"
    sidecar = json.loads((root / b[:2] / f"{b}.key").read_text())
    keyring = store.keyring
    from cloudmri_kernel.crypto import WrappedKey
    key = keyring.unwrap(WrappedKey(sidecar["kek_id"], base64.b64decode(sidecar["wrapped"])), f"north/{b}".encode())
    forged = keyring.wrap("north", key, f"north/{a}".encode())
    sidecar.update(kek_id=forged.kek_id, wrapped=base64.b64encode(forged.wrapped).decode())
    (root / a[:2] / f"{a}.key").write_text(json.dumps(sidecar))
    shutil.copyfile(root / b[:2] / b, root / a[:2] / a)
    received = []
    with pytest.raises(IntegrityError, match=f"object north/{a} decrypts to data with SHA-256 {b}"):
        for piece in store.open("north", a):
            received.append(piece)
    assert sum(map(len, received)) == 5 * 1024  # everything but the held-back last chunk


def test_swapped_or_missing_sidecars_are_detected(store):
    a, b = store.put(DATA, "north").sha256, store.put(b"second", "north").sha256
    root = store.backend.root / "objects" / "north"
    shutil.copyfile(root / b[:2] / f"{b}.key", root / a[:2] / f"{a}.key")
    with pytest.raises(IntegrityError, match="cannot unwrap a data key with KEK north/v1"):
        store.open("north", a)
    (root / b[:2] / f"{b}.key").unlink()
    with pytest.raises(IntegrityError, match=f"object north/{b} has no key sidecar"):
        store.open("north", b)
    report = store.verify()
    assert sorted(d for _, d, _ in report.damaged) == sorted([a, b])


def test_orphans_are_listed(store):
    digest = store.put(DATA, "north").sha256
    root = store.backend.root
    (root / "tmp" / "tmpabc.part").write_bytes(b"partial")
    lonely = root / "objects" / "north" / "ff" / ("ff" * 32 + ".key")
    lonely.parent.mkdir()
    lonely.write_text("{}")
    (root / "objects" / "north" / "stray.txt").write_text("?")
    report = store.verify()
    assert report.checked == 1 and report.damaged == []
    assert report.orphans == [f"objects/north/ff/{'ff' * 32}.key", "objects/north/stray.txt", "tmp/tmpabc.part"]
    assert list(store.iter_objects()) == [("north", digest)]


def test_interrupted_publishing_leaves_no_object_and_a_retry_succeeds(store, monkeypatch):
    """A failure after the sidecar is written but before the data is renamed into place."""
    commit = store.backend.commit

    def crash(staged, target):
        if not target.endswith(".key"):
            raise OSError("simulated crash")
        commit(staged, target)

    with monkeypatch.context() as patch:
        patch.setattr(store.backend, "commit", crash)
        with pytest.raises(OSError, match="simulated crash"):
            store.put(DATA, "north")
    digest = sha(DATA)
    assert not store.exists("north", digest) and list(store.iter_objects()) == []
    assert store.verify().orphans == [f"objects/north/{digest[:2]}/{digest}.key"]
    assert store.put(DATA, "north").created
    assert store.read_bytes("north", digest) == DATA
    report = store.verify()
    assert report.damaged == [] and report.orphans == []


def test_concurrent_puts_of_the_same_data_store_it_once(store):
    """Each put has its own data key; the site lock keeps the one published sidecar paired with its data."""
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: store.put(iter([DATA[:2000], DATA[2000:]]), "north"), range(12)))
    assert sum(r.created for r in results) == 1
    assert store.read_bytes("north", sha(DATA)) == DATA
    report = store.verify()
    assert (report.checked, report.damaged, report.orphans) == (1, [], [])


def test_rotate_rewraps_every_key_of_the_site_and_never_touches_data(store):
    digests = [store.put(bytes([i]) * 3000, "north").sha256 for i in range(3)]
    other = store.put(DATA, "south").sha256
    before = {d: data_path(store, "north", d).read_bytes() for d in digests}
    assert store.rotate("north") == 3
    for d in digests:
        assert data_path(store, "north", d).read_bytes() == before[d]
        sidecar = json.loads(data_path(store, "north", d).with_suffix(".key").read_text())
        assert sidecar["kek_id"] == "north/v2"
    assert store.put(b"new", "north").sha256 in {d for _, d in store.iter_objects("north")}
    assert json.loads(data_path(store, "south", other).with_suffix(".key").read_text())["kek_id"] == "south/v1"
    store.keyring.retire("north", 1)
    assert [store.read_bytes("north", d) for d in digests] == [bytes([i]) * 3000 for i in range(3)]
    assert store.rotate("north") == 4
    assert store.verify().damaged == []


def test_retiring_a_kek_still_in_use_makes_its_objects_unreadable(store):
    digest = store.put(DATA, "north").sha256
    store.keyring.rotate("north")
    store.keyring.retire("north", 1)
    with pytest.raises(UsageError, match="KEK north/v1 is not in the key ring"):
        store.read_bytes("north", digest)
    assert [d for _, d, _ in store.verify().damaged] == [digest]


@pytest.mark.parametrize("bad", ["../../../etc/passwd", "AB" * 32, "ab" * 31, "ab" * 32 + "/", "ab" * 32 + "\n"])
def test_addresses_are_validated(store, bad):
    with pytest.raises(UsageError, match="is not a SHA-256 address: expected 64 lowercase hex digits"):
        store.open("north", bad)
    with pytest.raises(UsageError):
        store.exists("north", bad)
    with pytest.raises(UsageError):
        store.put(DATA, "north", expected_sha256=bad)


@pytest.mark.parametrize("site", ["../x", "..", "a/b"])
def test_site_names_are_validated(store, site):
    with pytest.raises(UsageError, match="site name"):
        store.put(DATA, site)
    with pytest.raises(UsageError, match="site name"):
        store.open(site, sha(DATA))
    assert files_under(store.backend.root) == []


def test_missing_objects_and_sources(store, tmp_path):
    digest = sha(b"never stored")
    with pytest.raises(ObjectNotFound, match=f"no object {digest} in site 'north'"):
        store.open("north", digest)
    with pytest.raises(ObjectNotFound):
        store.info("north", digest)
    assert ObjectNotFound.exit_code == 2
    with pytest.raises(UsageError, match="cannot read the file to store"):
        store.put(tmp_path / "missing.h5", "north")
    with pytest.raises(UsageError, match="pieces of bytes, not int"):
        store.put([b"a", 1], "north")
    assert files_under(store.backend.root / "objects") == []


def test_objects_stay_readable_with_another_chunk_size(store, tmp_path):
    digest = store.put(DATA, "north").sha256
    other = ObjectStore(store.backend.root, store.keyring, chunk_size=7)
    assert other.read_bytes("north", digest) == DATA


def test_from_settings_uses_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDMRI_DATA_DIR", str(tmp_path / "state"))
    store = ObjectStore.from_settings()
    digest = store.put(DATA, "north").sha256
    assert (tmp_path / "state" / "store" / "objects" / "north" / digest[:2] / digest).is_file()
    assert (tmp_path / "state" / "keys" / "kek" / "north" / "v1.key").is_file()
    monkeypatch.setenv("CLOUDMRI_STORE_URL", str(tmp_path / "elsewhere"))
    assert ObjectStore.from_settings().backend.root == tmp_path / "elsewhere"


def test_memory_stays_bounded_by_the_chunk_size(tmp_path):
    """64 MiB through put and open with 1 MiB chunks: traced peak under 8 MiB (measured 2.0 MiB
    for put and 5.0 MiB for open: a few chunks in flight)."""
    store = ObjectStore(tmp_path / "store", KeyRing(tmp_path / "kek"), chunk_size=1 << 20)
    block = os.urandom(1 << 20)
    store.keyring.current("north")
    tracemalloc.start()
    try:
        stored = store.put(iter([block] * 64), "north")
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        digest = hashlib.sha256()
        for piece in store.open("north", stored.sha256):
            digest.update(piece)
        _, open_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stored.size == 64 << 20 and digest.hexdigest() == stored.sha256
    assert put_peak < 8 << 20, put_peak
    assert open_peak < 8 << 20, open_peak
