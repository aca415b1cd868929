"""An encrypted, content-addressed object store for MRI raw data, namespaced per site.

An object is addressed by the SHA-256 of its plaintext within its site, so storing the same file twice in a
site stores it once. Each object is encrypted (:mod:`cloudmri_kernel.crypto.stream`) under its own random
data key, which is wrapped by the site's key-encryption key (:mod:`cloudmri_kernel.crypto.envelope`) with the
object's address as associated data. Layout under the root::

    objects/<site>/<sha[:2]>/<sha>        the encrypted stream; its key id is "<site>/<data key id>"
    objects/<site>/<sha[:2]>/<sha>.key    JSON: kek_id, wrapped (base64), key_id, size, created
    tmp/                                  uploads in flight (local root only)
    locks/<site>.lock                     serializes publishing within a site (local root only)

The stream's key id names the data key rather than the address because the address is known only after the
single pass over the data, and the chunks authenticate the header. An object becomes visible when its data
file appears, which happens by one atomic rename (or one S3 PUT) after its key sidecar is durably in place:
a crash at any moment leaves either no object or a complete one, plus perhaps temporary files that
:meth:`ObjectStore.verify` lists as orphans. Reading decrypts, authenticates every chunk and re-hashes the
plaintext, and the last chunk is released only once the hash matches the address.

References:
    Quinlan S, Dorward S. Venti: a new approach to archival storage. USENIX FAST 2002 (content addressing).
    Pillai TS et al. All File Systems Are Not Created Equal: On the Complexity of Crafting Crash-Consistent
    Applications. USENIX OSDI 2014 (fsync of file and directory around rename).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from cloudmri_kernel.config import Settings, settings
from cloudmri_kernel.crypto.envelope import KeyRing, WrappedKey, check_site_name
from cloudmri_kernel.crypto.stream import (
    DEFAULT_CHUNK_SIZE,
    KEY_BYTES,
    IntegrityError,
    decrypt_stream,
    encrypt_stream,
    read_header,
)
from cloudmri_kernel.errors import CloudMRIError, InvalidDataError, UsageError
from cloudmri_kernel.mrd.writer import AtomicOutput
from cloudmri_kernel.store.backends import open_backend

_SHA256 = re.compile(r"[0-9a-f]{64}")
_SIDECAR_FIELDS = {"kek_id": str, "wrapped": str, "key_id": str, "size": int, "created": str}


class ObjectNotFound(UsageError):
    """The store has no object at the given site and address."""


class HashMismatchError(InvalidDataError):
    """The data's SHA-256 differs from the one the caller expected; nothing was stored."""


@dataclass(frozen=True)
class StoredObject:
    """An object in the store; ``created`` is True when this call stored it, False when it was there already."""

    site: str
    sha256: str
    size: int
    created: bool


@dataclass
class VerifyReport:
    """Result of a full integrity scrub.

    Attributes:
        checked: How many objects were read and re-hashed.
        damaged: (site, sha256, reason) of each object that failed.
        orphans: Root-relative paths of leftovers that belong to no object: temporary files, key sidecars
            without data (from interrupted uploads, or uploads in flight during the scrub), unknown files.
    """

    checked: int = 0
    damaged: list[tuple[str, str, str]] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Sidecar:
    kek_id: str
    wrapped: str
    key_id: str
    size: int
    created: str

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()


class ObjectStore:
    """Encrypted, content-addressed storage of raw data files, per site.

    Args:
        root: A directory, or an fsspec URL such as ``s3://bucket/prefix``.
        keyring: The key-encryption keys of the sites.
        storage_options: fsspec options for a URL root (endpoint, credentials).
        chunk_size: Plaintext bytes per encrypted chunk; memory use is a few chunks, whatever the file size.

    Example:
        >>> store = ObjectStore(tmp / "store", KeyRing(tmp / "kek"))  # doctest: +SKIP
        >>> stored = store.put("meas_MID42.h5", site="charite")  # doctest: +SKIP
        >>> store.get_file("charite", stored.sha256, "copy.h5")  # doctest: +SKIP
    """

    def __init__(self, root: str | Path, keyring: KeyRing, storage_options: dict | None = None, *,
                 chunk_size: int = DEFAULT_CHUNK_SIZE):
        self.backend = open_backend(root, storage_options)
        self.keyring = keyring
        self.chunk_size = chunk_size

    @classmethod
    def from_settings(cls, config: Settings | None = None) -> ObjectStore:
        """The store of the settings: ``store_url`` or DATA_DIR/store, with KEKs in DATA_DIR/keys/kek."""
        config = config or settings()
        root = config.store_url or config.data_dir / "store"
        return cls(root, KeyRing(config.data_dir / "keys" / "kek"), config.store_options or None)

    def put(self, source: BinaryIO | Iterable[bytes] | bytes | str | Path, site: str,
            expected_sha256: str | None = None) -> StoredObject:
        """Encrypt and store data in one pass; returns its address.

        Args:
            source: A file path, a binary file object, bytes, or the data in pieces of any size.
            site: The site the data belongs to; its KEK wraps the data key.
            expected_sha256: If given, the data must have this SHA-256 (e.g. from the uploader).

        Raises:
            HashMismatchError: The data's SHA-256 is not ``expected_sha256``; nothing was stored.
            UsageError: Bad site name or hash, or ``source`` is not readable.
        """
        check_site_name(site)
        if expected_sha256 is not None:
            _check_sha256(expected_sha256)
        data_key = os.urandom(KEY_BYTES)
        key_id = f"{site}/{secrets.token_hex(16)}"
        digest = hashlib.sha256()
        size = 0

        def plaintext() -> Iterator[bytes]:
            nonlocal size
            for piece in _pieces(source, self.chunk_size):
                digest.update(piece)
                size += len(piece)
                yield piece

        with self.backend.staging() as staged:
            with open(staged, "wb") as output:
                for sealed in encrypt_stream(plaintext(), data_key, key_id, self.chunk_size):
                    output.write(sealed)
            sha256 = digest.hexdigest()
            if expected_sha256 is not None and sha256 != expected_sha256:
                raise HashMismatchError(f"the data's SHA-256 is {sha256}, not the expected {expected_sha256}: it "
                                        "changed in transfer or the expected hash is wrong; nothing was stored")
            data, sidecar = _paths(site, sha256)
            with self.backend.lock(site):
                if self.backend.exists(data):
                    return StoredObject(site, sha256, size, created=False)
                wrapped = self.keyring.wrap(site, data_key, _context(site, sha256))
                created = datetime.now(UTC).isoformat(timespec="seconds")
                record = _Sidecar(wrapped.kek_id, base64.b64encode(wrapped.wrapped).decode(), key_id, size, created)
                self.backend.write_atomic(sidecar, record.to_json())
                self.backend.commit(staged, data)
        return StoredObject(site, sha256, size, created=True)

    def open(self, site: str, sha256: str) -> Iterator[bytes]:
        """The plaintext of an object, chunk by chunk, authenticated and re-hashed as it is read.

        Raises:
            ObjectNotFound: No such object (raised by this call).
            IntegrityError: A chunk fails authentication, or the plaintext does not hash to ``sha256`` (raised
                while iterating, before the last chunk is released).
        """
        data, record, data_key = self._unlock(site, sha256)
        handle = self.backend.open_read(data)
        try:
            key_id = read_header(handle).key_id
            if key_id != record.key_id:
                raise IntegrityError(f"object {site}/{sha256} was encrypted with data key '{key_id}' but its key "
                                     f"sidecar holds '{record.key_id}': the two files do not belong together")
            handle.seek(0)
        except BaseException:
            handle.close()
            raise
        return self._plaintext(handle, data_key, record, site, sha256)

    def read_bytes(self, site: str, sha256: str) -> bytes:
        """The whole plaintext of a (small) object; see :meth:`open`."""
        return b"".join(self.open(site, sha256))

    def get_file(self, site: str, sha256: str, dest: str | Path) -> Path:
        """Decrypt an object to ``dest``, which appears only once the whole object is verified.

        Raises:
            ObjectNotFound, IntegrityError: See :meth:`open`; ``dest`` is then left untouched.
            UsageError: ``dest`` is a directory or its directory does not exist.
        """
        output = AtomicOutput(dest)
        try:
            with open(output.temporary, "wb") as handle:
                for piece in self.open(site, sha256):
                    handle.write(piece)
            output.commit()
        except BaseException:
            output.discard()
            raise
        return output.target

    def plaintext_sha256(self, site: str, sha256: str) -> str:
        """The SHA-256 of what the object at ``site/sha256`` decrypts to now. Unlike :meth:`open`, a plaintext
        that no longer matches its address is hashed, not refused, so that a verification can name it.

        Raises:
            ObjectNotFound: No such object.
            IntegrityError: A chunk fails authentication (a changed ciphertext has no plaintext to hash).
        """
        data, _, data_key = self._unlock(site, sha256)
        digest = hashlib.sha256()
        with self.backend.open_read(data) as handle:
            for piece in decrypt_stream(handle, data_key):
                digest.update(piece)
        return digest.hexdigest()

    def ciphertext_sha256(self, site: str, sha256: str) -> str:
        """The SHA-256 of the stored (encrypted) bytes of an object, to name a changed ciphertext."""
        data, _ = _paths(check_site_name(site), _check_sha256(sha256))
        digest = hashlib.sha256()
        with self.backend.open_read(data) as handle:
            for piece in iter(lambda: handle.read(1 << 20), b""):
                digest.update(piece)
        return digest.hexdigest()

    def exists(self, site: str, sha256: str) -> bool:
        data, _ = _paths(check_site_name(site), _check_sha256(sha256))
        return self.backend.exists(data)

    def info(self, site: str, sha256: str) -> StoredObject:
        """Site, address and plaintext size of an object, from its key sidecar (the data is not read)."""
        if not self.exists(site, sha256):
            raise ObjectNotFound(f"no object {sha256} in site '{site}'", self.backend)
        return StoredObject(site, sha256, self._sidecar(site, sha256).size, created=False)

    def iter_objects(self, site: str | None = None) -> Iterator[tuple[str, str]]:
        """(site, sha256) of every visible object, of one site or of all, sorted."""
        prefix = "objects" if site is None else f"objects/{check_site_name(site)}"
        for path in self.backend.files(prefix):
            kind, address = _classify(path)
            if kind == "data":
                yield address

    def verify(self, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
        """Read, authenticate and re-hash every object; list damaged ones and leftovers.

        Args:
            progress: Called as ``progress(done, total)`` after each object.
        """
        report = VerifyReport()
        objects, sidecars = set(), []
        for path in self.backend.files("objects"):
            kind, address = _classify(path)
            if kind == "data":
                objects.add(address)
            elif kind == "sidecar":
                sidecars.append((path, address))
            else:
                report.orphans.append(path)
        report.orphans.extend(path for path, address in sidecars if address not in objects)
        report.orphans.extend(self.backend.staged_files())
        report.orphans.sort()
        for done, (site, sha256) in enumerate(sorted(objects), start=1):
            try:
                for _ in self.open(site, sha256):
                    pass
            except CloudMRIError as exc:
                report.damaged.append((site, sha256, str(exc)))
            report.checked += 1
            if progress:
                progress(done, len(objects))
        return report

    def rotate(self, site: str) -> int:
        """Start a new KEK version for ``site`` and re-wrap every data key of the site with it.

        The data is not re-encrypted; each key sidecar is replaced atomically. The old KEK stays in the key ring
        until :meth:`KeyRing.retire` is called. Returns how many data keys were re-wrapped.
        """
        self.keyring.rotate(check_site_name(site))
        rewrapped = 0
        for _, sha256 in list(self.iter_objects(site)):
            _, sidecar = _paths(site, sha256)
            with self.backend.lock(site):
                record = self._sidecar(site, sha256)
                if record.kek_id == self.keyring.current(site):
                    continue
                context = _context(site, sha256)
                data_key = self.keyring.unwrap(WrappedKey(record.kek_id, base64.b64decode(record.wrapped)), context)
                wrapped = self.keyring.wrap(site, data_key, context)
                updated = _Sidecar(wrapped.kek_id, base64.b64encode(wrapped.wrapped).decode(), record.key_id,
                                   record.size, record.created)
                self.backend.write_atomic(sidecar, updated.to_json())
                rewrapped += 1
        return rewrapped

    def _unlock(self, site: str, sha256: str) -> tuple[str, _Sidecar, bytes]:
        """(data path, key sidecar, unwrapped data key) of an existing object; ObjectNotFound otherwise."""
        data, _ = _paths(check_site_name(site), _check_sha256(sha256))
        if not self.backend.exists(data):
            raise ObjectNotFound(f"no object {sha256} in site '{site}'", self.backend)
        record = self._sidecar(site, sha256)
        data_key = self.keyring.unwrap(WrappedKey(record.kek_id, base64.b64decode(record.wrapped)),
                                       _context(site, sha256))
        return data, record, data_key

    def _sidecar(self, site: str, sha256: str) -> _Sidecar:
        _, path = _paths(site, sha256)
        try:
            content = json.loads(self.backend.read_small(path))
        except FileNotFoundError:
            raise IntegrityError(f"object {site}/{sha256} has no key sidecar {path}: it cannot be decrypted") from None
        except ValueError as exc:
            raise IntegrityError(f"the key sidecar {path} is not valid JSON ({exc})") from None
        if not isinstance(content, dict) or set(content) != set(_SIDECAR_FIELDS) or not all(
                isinstance(content[name], kind) for name, kind in _SIDECAR_FIELDS.items()):
            raise IntegrityError(f"the key sidecar {path} is damaged: expected the fields "
                                 f"{', '.join(_SIDECAR_FIELDS)} with their types")
        try:
            base64.b64decode(content["wrapped"], validate=True)
        except binascii.Error:
            raise IntegrityError(f"the key sidecar {path} is damaged: 'wrapped' is not base64") from None
        return _Sidecar(**content)

    def _plaintext(self, handle: BinaryIO, data_key: bytes, record: _Sidecar, site: str,
                   sha256: str) -> Iterator[bytes]:
        digest = hashlib.sha256()
        size = 0
        held = b""
        try:
            # One chunk is held back so that a reader never gets the whole object before its hash is checked.
            for piece in decrypt_stream(handle, data_key):
                if held:
                    yield held
                digest.update(piece)
                size += len(piece)
                held = piece
        finally:
            handle.close()
        if digest.hexdigest() != sha256:
            raise IntegrityError(f"object {site}/{sha256} decrypts to data with SHA-256 {digest.hexdigest()}: "
                                 "its files were replaced")
        if size != record.size:
            raise IntegrityError(f"object {site}/{sha256} has {size} bytes but its key sidecar says {record.size}")
        if held:
            yield held


def _check_sha256(sha256: str) -> str:
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise UsageError(f"'{sha256}' is not a SHA-256 address: expected 64 lowercase hex digits")
    return sha256


def _paths(site: str, sha256: str) -> tuple[str, str]:
    data = f"objects/{site}/{sha256[:2]}/{sha256}"
    return data, data + ".key"


def _context(site: str, sha256: str) -> bytes:
    return f"{site}/{sha256}".encode()


def _classify(path: str) -> tuple[str, tuple[str, str] | None]:
    """("data" | "sidecar" | "other", (site, sha256)) for a root-relative path under objects/."""
    parts = path.split("/")
    if len(parts) == 4 and parts[0] == "objects":
        _, site, shard, name = parts
        sha256, _, suffix = name.partition(".")
        if _SHA256.fullmatch(sha256) and shard == sha256[:2] and suffix in ("", "key"):
            try:
                check_site_name(site)
            except UsageError:
                return "other", None
            return ("data" if suffix == "" else "sidecar"), (site, sha256)
    return "other", None


def _pieces(source: BinaryIO | Iterable[bytes] | bytes | str | Path, size: int) -> Iterator[bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield bytes(source)
    elif isinstance(source, (str, Path)):
        try:
            handle = open(source, "rb")
        except OSError as exc:
            raise UsageError(f"cannot read the file to store ({exc.strerror})", source) from None
        with handle:
            yield from iter(lambda: handle.read(size), b"")
    elif hasattr(source, "read"):
        yield from iter(lambda: source.read(size), b"")
    else:
        for piece in source:
            if not isinstance(piece, (bytes, bytearray, memoryview)):
                raise UsageError(f"the data to store must come in pieces of bytes, not {type(piece).__name__}")
            yield piece
