"""Secret files on disk: created once, private (mode 0600), never half-written, refused when others can read them.

A secret is written to a private temporary file beside its final name, flushed to disk, and published with
``link(2)``, which fails when the name exists. So two processes that create the same secret at the same time
agree on one of them, and a reader never sees a partly written key. A process killed in between may leave
its private temporary file (``.NAME.<random>.tmp``) behind. This needs a POSIX file system with hard links
(any local Linux file system; not FAT).

References:
    POSIX.1-2017, link() and open() with O_CREAT | O_EXCL.
    NIST SP 800-57 Part 1 Rev. 5, Recommendation for Key Management, section 6 (protection of keys at rest).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from cloudmri_kernel.errors import UsageError


def fsync_directory(directory: str | Path) -> None:
    """Flush a directory's entries to disk, so that a rename or new file in it survives a power loss."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def make_private_dirs(directory: str | Path) -> None:
    """Create ``directory`` and its missing parents with mode 0700; existing directories are left as they are."""
    directory = Path(directory)
    missing = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        fsync_directory(path.parent)


def read_secret(path: str | Path, min_bytes: int, what: str = "key file") -> bytes:
    """The content of a secret file, checked for privacy and length.

    Args:
        path: The file.
        min_bytes: The fewest bytes a valid secret has.
        what: How error messages name the file, e.g. ``"site key"``.

    Raises:
        UsageError: The file is missing, readable by group or others, or shorter than ``min_bytes``.
    """
    path = Path(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise UsageError(f"the {what} does not exist", path) from None
    if mode & 0o077:
        raise UsageError(f"the {what} is readable by others (mode {mode:o}): chmod 600 it", path)
    secret = path.read_bytes()
    if len(secret) < min_bytes:
        raise UsageError(f"the {what} has {len(secret)} bytes, needs at least {min_bytes}", path)
    return secret


def create_secret(path: str | Path, data: bytes) -> None:
    """Write a new secret file (mode 0600, parent directories 0700) that appears complete or not at all.

    Raises:
        FileExistsError: ``path`` exists; it is left unchanged.
    """
    path = Path(path)
    make_private_dirs(path.parent)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(handle, "wb") as output:
            output.write(data)
            output.flush()
            os.fsync(output.fileno())
        os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_directory(path.parent)


def load_or_create_secret(path: str | Path, nbytes: int, what: str = "key file") -> bytes:
    """The secret in ``path``; ``nbytes`` random bytes are written there first if it does not exist.

    Safe when several processes call it at once: all of them get the secret of the one that created it.

    Raises:
        UsageError: See :func:`read_secret`.
    """
    path = Path(path)
    if not path.exists():
        try:
            create_secret(path, secrets.token_bytes(nbytes))
        except FileExistsError:
            pass  # another process created it first; use theirs
    return read_secret(path, nbytes, what)
