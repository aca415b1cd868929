"""Who is calling: scopes, roles and the two token authorities (JupyterHub and local tokens).

The API service accepts a JupyterHub token (``Authorization: token …`` or ``Bearer …``) and asks the hub who
it belongs to and which scopes it carries; Cloud-MRI permissions are JupyterHub custom scopes
(``custom:cloudmri:read-raw``) that hub roles assign, so the hub stays the one place where roles are managed.
Stand-alone (``cloudmri service --local``) and in tests, a local token file plays the hub's part: tokens are
stored only as SHA-256 hashes, with their user, site, scopes and expiry.

References:
    JupyterHub documentation, "JupyterHub RBAC: custom scopes" (JupyterHub 3.0+).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from cloudmri_kernel.errors import UsageError

SCOPE_PREFIX = "custom:cloudmri:"
SCOPES = {
    "upload": "Upload raw data to the caller's site.",
    "read-raw": "Download raw k-space of the caller's site (other sites need a grant).",
    "read-images": "View reconstructed images, labels and scores of the caller's site.",
    "recon": "Submit and cancel reconstruction jobs.",
    "label": "Draw and save the caller's own labels and quality scores.",
    "report": "Write and sign radiology reports; see the worklist.",
    "admin": "Manage the site: grants, worklist assignments, the audit log.",
    "metrics": "Read the service's Prometheus metrics.",
}
ROLE_SCOPES = {
    "researcher": ["upload", "read-raw", "read-images", "recon", "label"],
    "radiologist": ["read-images", "label", "report"],
    "instructor": ["read-images", "recon"],
    "admin": list(SCOPES),
}
SITE_GROUP_PREFIX = "site-"


class AuthenticationError(Exception):
    """No valid token: the answer is 401."""


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: their name, site, groups and Cloud-MRI scopes (short names, e.g. ``read-raw``)."""

    user: str
    site: str | None
    scopes: frozenset[str]
    groups: tuple[str, ...] = ()

    def has(self, scope: str) -> bool:
        return scope in self.scopes


def short_scopes(hub_scopes: list[str]) -> frozenset[str]:
    """The Cloud-MRI scopes among a hub token's scopes (filters such as ``!group=x`` are not used here)."""
    return frozenset(s[len(SCOPE_PREFIX):] for s in hub_scopes if s.startswith(SCOPE_PREFIX)) & set(SCOPES)


def token_from_header(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationError("no token: send 'Authorization: token YOUR_TOKEN'")
    kind, _, token = authorization.partition(" ")
    if kind.lower() not in ("token", "bearer") or not token.strip():
        raise AuthenticationError("the Authorization header must be 'token YOUR_TOKEN' or 'Bearer YOUR_TOKEN'")
    return token.strip()


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class LocalTokens:
    """Tokens for stand-alone use, kept as hashes in a JSON file of mode 0600."""

    path: Path
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _cache: tuple[tuple, list[dict]] | None = field(default=None, repr=False)

    def _load(self) -> list[dict]:
        """The token records, parsed again only when the file changed (every request checks a token)."""
        try:
            status = self.path.stat()
        except FileNotFoundError:
            return []
        mode = status.st_mode & 0o777
        if mode & 0o077:
            raise UsageError(f"the token file is readable by others (mode {mode:o}): chmod 600 it", self.path)
        version = (status.st_mtime_ns, status.st_size, status.st_ino)
        cached = self._cache
        if cached is None or cached[0] != version:
            cached = self._cache = (version, json.loads(self.path.read_text())["tokens"])
        return cached[1]

    def _save(self, records: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = self.path.with_suffix(".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"tokens": records}, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)

    def create(self, user: str, site: str, scopes: list[str], expires_in: timedelta | None = None,
               note: str = "") -> str:
        """Issue a token; only its hash is kept, so it is shown once."""
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise UsageError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
        token = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        record = {"sha256": _hash(token), "user": user, "site": site, "scopes": sorted(set(scopes)),
                  "created_at": now.isoformat(), "note": note,
                  "expires_at": (now + expires_in).isoformat() if expires_in is not None else None}
        with self._lock:
            self._save([*self._load(), record])
        return token

    def identify(self, token: str) -> Identity:
        digest = _hash(token)
        for record in self._load():
            if secrets.compare_digest(record["sha256"], digest):
                expires = record.get("expires_at")
                if expires and datetime.fromisoformat(expires) <= datetime.now(UTC):
                    raise AuthenticationError("the token has expired: ask for a new one")
                return Identity(record["user"], record["site"], frozenset(record["scopes"]))
        raise AuthenticationError("the token is not valid")


@dataclass
class HubTokens:
    """Asks JupyterHub (``GET {api_url}/user``) who owns a token, with a short cache.

    The hub answers with the user's name, groups and the token's scopes; the site is the group named
    ``site-NAME``.
    """

    api_url: str
    cache_seconds: float = 30.0
    _cache: dict[str, tuple[float, Identity]] = field(default_factory=dict, repr=False)

    def identify(self, token: str) -> Identity:
        digest = _hash(token)
        hit = self._cache.get(digest)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        try:
            reply = httpx.get(f"{self.api_url.rstrip('/')}/user", headers={"Authorization": f"token {token}"},
                              timeout=10)
        except httpx.HTTPError as exc:
            raise AuthenticationError(f"cannot reach JupyterHub to check the token ({exc})") from None
        if reply.status_code in (401, 403):
            raise AuthenticationError("JupyterHub does not accept this token")
        if reply.status_code != 200:
            raise AuthenticationError(f"JupyterHub could not check the token (it answered {reply.status_code})")
        model = reply.json()
        groups = tuple(model.get("groups", []))
        sites = [g[len(SITE_GROUP_PREFIX):] for g in groups if g.startswith(SITE_GROUP_PREFIX)]
        identity = Identity(model["name"], sites[0] if sites else None, short_scopes(model.get("scopes", [])),
                            groups)
        self._cache[digest] = (time.monotonic() + self.cache_seconds, identity)
        return identity
