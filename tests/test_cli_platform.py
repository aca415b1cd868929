"""The server-side platform commands: store verify and key rotation, local tokens, the service's start checks."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cloudmri_kernel.cli import app
from cloudmri_kernel.config import settings
from cloudmri_kernel.service.state import local_tokens
from cloudmri_kernel.store import ObjectStore

runner = CliRunner()


def test_store_verify_reports_damage_and_exits_1():
    store = ObjectStore.from_settings()
    good = store.put(b"intact raw data", "siteA")
    bad = store.put(b"raw data that will rot", "siteA")
    clean = runner.invoke(app, ["store", "verify", "--json"])
    assert clean.exit_code == 0 and json.loads(clean.stdout)["checked"] == 2
    path = next((settings().data_dir / "store").rglob(bad.sha256))
    data = bytearray(path.read_bytes())
    data[-20] ^= 0x10
    path.write_bytes(bytes(data))
    result = runner.invoke(app, ["store", "verify"])
    assert result.exit_code == 1 and f"DAMAGED siteA/{bad.sha256}" in result.stdout
    assert good.sha256 not in result.stdout


def test_rotate_key_rewraps_and_objects_stay_readable():
    store = ObjectStore.from_settings()
    stored = store.put(b"k-space", "siteA")
    result = runner.invoke(app, ["store", "rotate-key", "--site", "siteA"])
    assert result.exit_code == 0 and "re-wrapped 1 data key(s)" in result.stdout
    assert ObjectStore.from_settings().read_bytes("siteA", stored.sha256) == b"k-space"


def test_token_create_saves_a_private_token_with_role_scopes():
    result = runner.invoke(app, ["service", "token", "create", "--user", "rita", "--site", "siteA",
                                 "--role", "radiologist", "--save"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    saved = settings().data_dir / "client" / "token"
    assert saved.read_text().strip() == token and saved.stat().st_mode & 0o777 == 0o600
    who = local_tokens().identify(token)
    assert (who.user, who.site, who.scopes) == ("rita", "siteA", frozenset({"read-images", "label", "report"}))


def test_token_create_needs_a_role_or_scope_and_knows_scopes():
    assert runner.invoke(app, ["service", "token", "create", "--user", "x", "--site", "s"]).exit_code == 2
    unknown = runner.invoke(app, ["service", "token", "create", "--user", "x", "--site", "s", "--scope", "root"])
    assert unknown.exit_code == 2 and "unknown scope" in unknown.output


def test_service_without_hub_or_local_is_a_usage_error(monkeypatch):
    monkeypatch.delenv("JUPYTERHUB_API_URL", raising=False)
    result = runner.invoke(app, ["service"])
    assert result.exit_code == 2 and "--local" in result.output


def test_client_commands_without_a_service_say_so(monkeypatch):
    monkeypatch.setenv("CLOUDMRI_SERVICE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("CLOUDMRI_SERVICE_TOKEN", "x")
    result = runner.invoke(app, ["ls"])
    assert result.exit_code == 2 and "cannot reach the Cloud-MRI service" in result.output
