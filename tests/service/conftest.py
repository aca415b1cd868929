"""Fixtures for the API service: a real app (in-process, with its lifespan) on SQLite and on PostgreSQL, local
tokens for one user per role at two sites, and a small valid MRD file."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from cloudmri_kernel.service.identity import ROLE_SCOPES

API = "/api/v1"
USERS = {  # name: (site, roles)
    "alice": ("siteA", ["researcher"]),
    "ada": ("siteA", ["admin"]),
    "rita": ("siteA", ["radiologist"]),
    "bob": ("siteB", ["researcher"]),
    "bea": ("siteB", ["admin"]),
}


def make_tokens() -> dict[str, str]:
    from cloudmri_kernel.service.state import local_tokens

    tokens = local_tokens()
    made = {name: tokens.create(name, site, sorted({s for r in roles for s in ROLE_SCOPES[r]}))
            for name, (site, roles) in USERS.items()}
    made["expired"] = tokens.create("alice", "siteA", ROLE_SCOPES["researcher"], expires_in=timedelta(seconds=-1))
    return made


@pytest.fixture(scope="session")
def phantom_mrd(tmp_path_factory) -> Path:
    """A small, valid MRD raw file (64 x 64, 4 coils, GRAPPA-style R2 with 16 calibration lines)."""
    return write_phantom(tmp_path_factory.mktemp("phantom") / "phantom.h5",
                         PhantomSpec(matrix=64, coils=4, accel=2, calib=16))


@dataclass
class Api:
    """The app under test and a way to call it as each user."""

    http: TestClient
    tokens: dict[str, str]
    data_dir: Path

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"token {self.tokens[user]}"}

    def get(self, path: str, user: str, **kwargs):
        return self.http.get(API + path, headers=self.headers(user), **kwargs)

    def post(self, path: str, user: str, **kwargs):
        return self.http.post(API + path, headers=self.headers(user), **kwargs)

    def put(self, path: str, user: str, **kwargs):
        return self.http.put(API + path, headers=self.headers(user), **kwargs)

    def patch(self, path: str, user: str, **kwargs):
        return self.http.patch(API + path, headers=self.headers(user), **kwargs)

    def delete(self, path: str, user: str, **kwargs):
        return self.http.delete(API + path, headers=self.headers(user), **kwargs)

    def upload(self, path: Path | bytes, user: str = "alice", declared_sha256: str | None = None):
        """Declare, send in chunks and complete; returns the completion response."""
        data = path if isinstance(path, bytes) else Path(path).read_bytes()
        declared = declared_sha256 or hashlib.sha256(data).hexdigest()
        upload = self.post("/uploads", user, json={"filename": "scan.h5", "size": len(data), "sha256": declared})
        assert upload.status_code == 201, upload.text
        upload = upload.json()
        offset = 0
        while offset < len(data):
            reply = self.put(f"/uploads/{upload['id']}/chunks", user, params={"offset": offset},
                             content=data[offset:offset + upload["chunk_size"]])
            assert reply.status_code == 200, reply.text
            offset = reply.json()["offset"]
        return self.post(f"/uploads/{upload['id']}/complete", user)

    def audit_rows(self) -> list[dict]:
        return self.get("/audit", "ada", params={"limit": 1000}).json()


@pytest.fixture
def api(catalog_url, monkeypatch, tmp_path) -> Api:
    """The service on a fresh data directory and database (run once on SQLite and once on PostgreSQL)."""
    from cloudmri_kernel.config import settings
    from cloudmri_kernel.service.app import create_app

    monkeypatch.setenv("CLOUDMRI_CATALOG_URL", catalog_url)
    monkeypatch.setenv("CLOUDMRI_UPLOAD_CHUNK_MB", "1")
    monkeypatch.delenv("JUPYTERHUB_API_URL", raising=False)
    tokens = make_tokens()
    with TestClient(create_app(), raise_server_exceptions=False) as http:
        yield Api(http, tokens, settings().data_dir)
