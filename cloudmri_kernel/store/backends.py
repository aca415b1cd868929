"""Where an object store keeps its files: a local directory, or any fsspec file system (S3 and compatible).

Both backends offer the few operations the store needs, named by paths relative to the store's root with
``/`` separators. Only the local backend can lock: the fsspec backend assumes one writer per site at a time
(a site's ingest node writes its own namespace), because S3 has no locks.

References:
    POSIX.1-2017, rename(): "If the link named by the new argument exists, it shall be removed and old
    renamed to new" atomically; fsync() of the directory makes the rename durable.
    Amazon S3 User Guide, "Amazon S3 data consistency model": a PUT is atomic and strongly consistent.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import fsspec

from cloudmri_kernel.crypto.keyfiles import fsync_directory, make_private_dirs
from cloudmri_kernel.errors import UsageError

_UPLOAD_PART = 8 << 20  # bytes per S3 request, in both directions
_MAX_PARTS = 9000  # below S3's limit of 10,000 parts per upload


class LocalBackend:
    """A directory: ``objects/`` for the store's content, ``tmp/`` for uploads in flight, ``locks/`` per site.

    A write goes to a private temporary file in ``tmp/``, is flushed to disk, and is renamed into place; the
    directory is flushed after each rename. Writers of one site serialize their short publishing step with an
    ``flock(2)`` on ``locks/<site>.lock``, which the kernel releases when a process dies.
    """

    def __init__(self, root: Path):
        self.root = root

    def __str__(self) -> str:
        return str(self.root)

    def staging(self) -> contextlib.AbstractContextManager[Path]:
        """A new private temporary file in ``tmp/``; removed on exit unless it was committed."""
        make_private_dirs(self.root / "tmp")
        return _temporary_file(self.root / "tmp")

    @contextlib.contextmanager
    def lock(self, site: str) -> Iterator[None]:
        """Exclusive among processes on this host (and NFS with working locks) for the site's publishing step."""
        make_private_dirs(self.root / "locks")
        handle = os.open(self.root / "locks" / f"{site}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            os.close(handle)

    def commit(self, staged: Path, target: str) -> None:
        """Flush ``staged`` to disk and rename it to ``target`` (atomic, durable)."""
        with open(staged, "rb") as handle:
            os.fsync(handle.fileno())
        path = self.root / target
        make_private_dirs(path.parent)
        os.replace(staged, path)
        fsync_directory(path.parent)

    def write_atomic(self, target: str, data: bytes) -> None:
        """Replace ``target`` with ``data``: readers see the old or the new content, never a mix."""
        with self.staging() as staged:
            with open(staged, "wb") as handle:
                handle.write(data)
            self.commit(staged, target)

    def exists(self, target: str) -> bool:
        return (self.root / target).is_file()

    def open_read(self, target: str) -> BinaryIO:
        return open(self.root / target, "rb")

    def read_small(self, target: str) -> bytes:
        """The content of a small file; FileNotFoundError if it does not exist."""
        return (self.root / target).read_bytes()

    def staged_files(self) -> Iterator[str]:
        """Temporary files of uploads in flight or interrupted."""
        return self.files("tmp")

    def files(self, prefix: str) -> Iterator[str]:
        """Relative paths of all files under the folder ``prefix``, sorted."""
        top = self.root / prefix
        found = []
        for folder, _, names in os.walk(top):
            relative = Path(folder).relative_to(self.root).as_posix()
            found.extend(f"{relative}/{name}" for name in names)
        yield from sorted(found)


class FsspecBackend:
    """A prefix in an fsspec file system, e.g. ``s3://bucket/store``.

    Uploads are staged in a local temporary file and then copied in parts (on S3 a multipart upload, visible
    only once complete); small files are written with one ``pipe_file`` (a single PUT).
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, url: str):
        self.fs = fs
        self.root = root.rstrip("/")
        self.url = url

    def __str__(self) -> str:
        return self.url

    def staging(self) -> contextlib.AbstractContextManager[Path]:
        """A local temporary file that is uploaded by :meth:`commit`; removed on exit."""
        return _temporary_file(None, prefix="cloudmri-store-")

    @contextlib.contextmanager
    def lock(self, site: str) -> Iterator[None]:
        yield  # no locks on object stores: one writer per site (see the class docstring)

    def commit(self, staged: Path, target: str) -> None:
        # Copied in parts of bounded size rather than with put_file, which s3fs runs with 10 concurrent 50 MiB
        # parts. S3 allows 10,000 parts, so parts grow beyond 8 MiB only for objects over about 70 GiB.
        part = max(_UPLOAD_PART, -(-staged.stat().st_size // _MAX_PARTS))
        with open(staged, "rb") as source, self.fs.open(self._full(target), "wb", block_size=part) as upload:
            shutil.copyfileobj(source, upload, part)
        self.fs.invalidate_cache(self._full(target))

    def write_atomic(self, target: str, data: bytes) -> None:
        self.fs.pipe_file(self._full(target), data)
        self.fs.invalidate_cache(self._full(target))

    def exists(self, target: str) -> bool:
        self.fs.invalidate_cache(self._full(target))
        return self.fs.isfile(self._full(target))

    def open_read(self, target: str) -> BinaryIO:
        # Requests of one part each: a request per 1 MiB chunk would be bound by latency; memory holds one part.
        return self.fs.open(self._full(target), "rb", block_size=_UPLOAD_PART, cache_type="readahead")

    def read_small(self, target: str) -> bytes:
        return self.fs.cat_file(self._full(target))

    def staged_files(self) -> Iterator[str]:
        return iter(())  # staging happens in the local temporary directory, outside the store

    def files(self, prefix: str) -> Iterator[str]:
        self.fs.invalidate_cache()
        start = len(self.root) + 1
        yield from sorted(path[start:] for path in self.fs.find(self._full(prefix)))

    def _full(self, target: str) -> str:
        return f"{self.root}/{target}"


def open_backend(root: str | Path, storage_options: dict | None) -> LocalBackend | FsspecBackend:
    """The backend for a directory or an fsspec URL (``s3://bucket/prefix``)."""
    if isinstance(root, Path) or "://" not in root:
        if storage_options:
            raise UsageError("storage options apply only to a store given as a URL such as s3://bucket/prefix",
                             root)
        return LocalBackend(Path(root))
    try:
        fs, path = fsspec.url_to_fs(root, **(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise UsageError(f"cannot open the store ({exc})", root) from None
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    if "file" in protocols:
        return LocalBackend(Path(path))
    return FsspecBackend(fs, path, root)


@contextlib.contextmanager
def _temporary_file(directory: Path | None, prefix: str = "") -> Iterator[Path]:
    """A new private (0600) temporary file, removed on exit unless it was moved away."""
    handle, name = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=directory)
    os.close(handle)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)
