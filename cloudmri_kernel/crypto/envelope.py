"""Envelope encryption: each object has its own data key, wrapped by its site's key-encryption key (KEK).

The KEKs of a site are versioned files in a key ring directory::

    DIR/<site>/v1.key, v2.key, ...      32 random bytes each, mode 0600, directories 0700

The newest version wraps new data keys. Rotating a site adds a version; data keys wrapped with older versions
stay readable until that version is retired, and re-wrapping a data key never touches the data it encrypts.
A data key is wrapped with AES-256-GCM under a random 96-bit nonce, with the KEK's id and a caller's context
(for example the object's address) as associated data, so a wrapped key copied to another object does not
unwrap. NIST SP 800-38D limits a key to 2**32 random-nonce encryptions; rotate long before that.

References:
    NIST SP 800-57 Part 1 Rev. 5, Recommendation for Key Management, section 5.3 (cryptoperiods, rotation).
    Dworkin M. Recommendation for Block Cipher Modes of Operation: Galois/Counter Mode (GCM) and GMAC.
    NIST SP 800-38D, 2007, section 8.2.2 (random nonces).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cloudmri_kernel.crypto.keyfiles import create_secret, fsync_directory, read_secret
from cloudmri_kernel.crypto.stream import KEY_BYTES, IntegrityError
from cloudmri_kernel.errors import UsageError

SITE_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_VERSION_FILE = re.compile(r"v([1-9][0-9]*)\.key")
_KEK_ID = re.compile(r"(?P<site>[A-Za-z0-9_.-]{1,64})/v(?P<version>[1-9][0-9]*)")
_NONCE_BYTES = 12
_WRAP_LABEL = b"cloudmri-kek-wrap-v1\x00"


def check_site_name(site: str) -> str:
    """Return ``site`` if it can name a directory; raise UsageError otherwise (no '/', no '..')."""
    if not isinstance(site, str) or not SITE_PATTERN.fullmatch(site):
        raise UsageError(f"site name '{site}' must be 1-64 letters, digits, '.', '_' or '-'")
    if set(site) == {"."}:
        raise UsageError(f"site name '{site}' must not be only dots")
    return site


@dataclass(frozen=True)
class WrappedKey:
    """A data key encrypted under a KEK; ``kek_id`` is ``"<site>/v<version>"``."""

    kek_id: str
    wrapped: bytes


class KeyRing:
    """Versioned key-encryption keys per site, kept as private files under one directory.

    Example:
        >>> ring = KeyRing(tmp / "kek")  # doctest: +SKIP
        >>> wrapped = ring.wrap("charite", data_key, b"charite/3f5a...")  # doctest: +SKIP
        >>> ring.unwrap(wrapped, b"charite/3f5a...") == data_key  # doctest: +SKIP
        True
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def versions(self, site: str) -> list[int]:
        """The KEK versions of ``site`` that exist, oldest first."""
        folder = self.directory / check_site_name(site)
        if not folder.is_dir():
            return []
        found = (_VERSION_FILE.fullmatch(name) for name in os.listdir(folder))
        return sorted(int(match.group(1)) for match in found if match)

    def current(self, site: str) -> str:
        """The id of the KEK that wraps new data keys of ``site``; creates version 1 on first use."""
        versions = self.versions(site)
        if versions:
            return f"{site}/v{versions[-1]}"
        try:
            create_secret(self._path(site, 1), os.urandom(KEY_BYTES))
        except FileExistsError:
            pass  # another process created it first
        return self.current(site)

    def rotate(self, site: str) -> str:
        """Add a new KEK version for ``site`` and return its id; older versions stay until retired."""
        while True:
            versions = self.versions(site)
            version = versions[-1] + 1 if versions else 1
            try:
                create_secret(self._path(site, version), os.urandom(KEY_BYTES))
            except FileExistsError:
                continue  # a concurrent rotation took this version; take the next one
            return f"{site}/v{version}"

    def retire(self, site: str, version: int) -> None:
        """Delete an old KEK version. Data keys wrapped with it can no longer be unwrapped: re-wrap them first.

        The file is unlinked, not shredded: on journaling file systems and SSDs its blocks may survive.

        Raises:
            UsageError: No such version, or it is the current one (rotate first).
        """
        versions = self.versions(site)
        if version not in versions:
            raise UsageError(f"site '{site}' has no KEK version {version} (it has {versions or 'none'})",
                             self.directory)
        if version == versions[-1]:
            raise UsageError(f"v{version} is the current KEK of site '{site}': rotate before retiring it",
                             self.directory)
        self._path(site, version).unlink()
        for leftover in (self.directory / site).glob(f".v{version}.key.*.tmp"):
            leftover.unlink()  # from a process killed while creating this version: maybe a link to the key
        fsync_directory(self.directory / site)

    def wrap(self, site: str, data_key: bytes, context: bytes) -> WrappedKey:
        """Encrypt ``data_key`` under the current KEK of ``site``, bound to ``context``."""
        kek_id = self.current(site)
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(self._load(kek_id)).encrypt(nonce, data_key, _associated_data(kek_id, context))
        return WrappedKey(kek_id, nonce + sealed)

    def unwrap(self, wrapped: WrappedKey, context: bytes) -> bytes:
        """The data key in ``wrapped``.

        Raises:
            IntegrityError: ``context`` differs from the one it was wrapped with, or the wrapped key or the KEK
                file was changed.
            UsageError: The KEK is not in this key ring (retired, or the ring is another site's).
        """
        kek = self._load(wrapped.kek_id)
        nonce, sealed = wrapped.wrapped[:_NONCE_BYTES], wrapped.wrapped[_NONCE_BYTES:]
        try:
            return AESGCM(kek).decrypt(nonce, sealed, _associated_data(wrapped.kek_id, context))
        except InvalidTag:
            raise IntegrityError(f"cannot unwrap a data key with KEK {wrapped.kek_id}: it was wrapped for another "
                                 f"object than {context.decode(errors='replace')!r}, or the wrapped key or the "
                                 "KEK file was changed") from None

    def _path(self, site: str, version: int) -> Path:
        return self.directory / check_site_name(site) / f"v{version}.key"

    def _load(self, kek_id: str) -> bytes:
        match = _KEK_ID.fullmatch(kek_id)
        if not match:
            raise UsageError(f"'{kek_id}' is not a KEK id of the form SITE/vN")
        path = self._path(match["site"], int(match["version"]))
        if not path.exists():
            raise UsageError(f"KEK {kek_id} is not in the key ring (retired?): restore {path.name} from a backup to "
                             "read what it wrapped", path.parent)
        kek = read_secret(path, KEY_BYTES, what=f"KEK {kek_id}")
        if len(kek) != KEY_BYTES:
            raise UsageError(f"KEK {kek_id} has {len(kek)} bytes, not {KEY_BYTES}: it is not a key of this ring", path)
        return kek


def _associated_data(kek_id: str, context: bytes) -> bytes:
    return _WRAP_LABEL + kek_id.encode() + b"\x00" + context
