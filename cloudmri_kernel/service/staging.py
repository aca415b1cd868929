"""Staging of resumable uploads: bytes are appended at the acknowledged offset and fsynced before the answer.

The staged file's length is the acknowledged offset, so a client that lost its connection, or a service that
was killed, resumes from exactly the bytes on disk. Staged bytes become a dataset only after the declared
SHA-256 matches and the MRD validator passes; until then nothing reaches the store or the catalog.
"""

from __future__ import annotations

import os
import re
import threading
from collections import defaultdict
from pathlib import Path

from cloudmri_kernel.errors import UsageError

_ID = re.compile(r"[0-9a-f]{32}")


class OffsetMismatch(Exception):
    """The chunk does not start where the staged bytes end; ``offset`` is where they do."""

    def __init__(self, offset: int):
        super().__init__(f"the upload continues at byte {offset}")
        self.offset = offset


class UploadStaging:
    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)

    def path(self, upload_id: str) -> Path:
        if not _ID.fullmatch(upload_id):
            raise UsageError(f"'{upload_id}' is not an upload ID")
        return self.directory / f"{upload_id}.part"

    def offset(self, upload_id: str) -> int:
        path = self.path(upload_id)
        return path.stat().st_size if path.exists() else 0

    def append(self, upload_id: str, offset: int, data: bytes, total: int) -> int:
        """Append ``data`` at ``offset``; returns the new offset once the bytes are on disk."""
        path = self.path(upload_id)
        with self._locks[upload_id]:
            current = self.offset(upload_id)
            if offset != current:
                raise OffsetMismatch(current)
            if current + len(data) > total:
                raise UsageError(f"the chunk would make the upload {current + len(data)} bytes long, but "
                                 f"{total} were declared")
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            return current + len(data)

    def last_write(self, upload_id: str) -> float | None:
        """When bytes last arrived (POSIX time), or None when none have."""
        path = self.path(upload_id)
        return path.stat().st_mtime if path.exists() else None

    def remove_all_but(self, open_ids: set[str]) -> list[str]:
        """Delete staged files of uploads that are no longer open (left by a stop between commit and clean-up)."""
        removed = []
        for path in self.directory.glob("*.part"):
            if path.stem not in open_ids:
                path.unlink(missing_ok=True)
                removed.append(path.stem)
        return removed

    def discard(self, upload_id: str) -> None:
        self.path(upload_id).unlink(missing_ok=True)
        self._locks.pop(upload_id, None)
