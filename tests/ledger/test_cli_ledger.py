"""``cloudmri ledger …`` against a real anvil node, through typer's CliRunner."""

from __future__ import annotations

import hashlib
import json

import pytest
from eth_account import Account
from typer.testing import CliRunner

from cloudmri_kernel import cli_ledger  # noqa: F401 - registers the ledger commands on app
from cloudmri_kernel.cli import app
from cloudmri_kernel.ledger.testing import new_key_file

runner = CliRunner()


@pytest.fixture
def env(node, tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDMRI_LEDGER_RPC_URL", node.url)
    monkeypatch.setenv("CLOUDMRI_LEDGER_DIR", str(tmp_path / "ledger"))
    monkeypatch.setenv("CLOUDMRI_LEDGER_KEY_FILE", str(new_key_file(tmp_path / "secrets" / "ledger.key")))
    monkeypatch.setenv("CLOUDMRI_SITE", "charite")
    result = runner.invoke(app, ["ledger", "deploy"])
    assert result.exit_code == 0, result.output
    return tmp_path


def test_anchor_verify_history_and_tampering(env):
    scan = env / "scan.h5"
    scan.write_bytes(b"k-space" * 1000)
    digest = hashlib.sha256(scan.read_bytes()).hexdigest()
    result = runner.invoke(app, ["ledger", "anchor", str(scan), "--dataset", "ds-1"])
    assert result.exit_code == 0, result.output
    assert digest in result.output and "block" in result.output
    result = runner.invoke(app, ["ledger", "verify", str(scan)])
    assert result.exit_code == 0, result.output
    assert "verified" in result.output and "site charite" in result.output
    result = runner.invoke(app, ["ledger", "verify", digest, "--json"])
    assert json.loads(result.stdout)["dataset_id"] == "ds-1"
    result = runner.invoke(app, ["ledger", "history", "ds-1", "--json"])
    assert [(r["kind"], r["state"]) for r in json.loads(result.stdout)] == [("dataset", "confirmed")]

    data = bytearray(scan.read_bytes())
    data[7] ^= 0xFF
    scan.write_bytes(bytes(data))
    result = runner.invoke(app, ["ledger", "verify", str(scan)])
    assert result.exit_code == 1
    assert "TAMPERED" in result.output and digest in result.output
    assert hashlib.sha256(bytes(data)).hexdigest() in result.output
    assert "Traceback" not in result.output


def test_grants_commands(env):
    dataset = hashlib.sha256(b"d").hexdigest()
    grantee = Account.create().address
    result = runner.invoke(app, ["ledger", "grant", dataset, grantee, "--scope", "read-images", "--days", "2"])
    assert result.exit_code == 0, result.output
    listed = json.loads(runner.invoke(app, ["ledger", "grants", dataset, "--json"]).stdout)
    assert [(g["grantee"], g["scope"], g["active"]) for g in listed] == [(grantee, "read-images", True)]
    assert runner.invoke(app, ["ledger", "revoke", dataset, grantee, "--scope", "read-images"]).exit_code == 0
    result = runner.invoke(app, ["ledger", "revoke", dataset, grantee, "--scope", "read-images"])
    assert result.exit_code == 1 and "there is no such grant to revoke" in result.output


def test_check_and_usage_errors(env, node):
    assert runner.invoke(app, ["ledger", "check"]).exit_code == 0
    result = runner.invoke(app, ["ledger", "verify", "nothex"])
    assert result.exit_code == 2 and "not a SHA-256" in result.output
    result = runner.invoke(app, ["ledger", "anchor", str(env / "missing.h5")])
    assert result.exit_code == 2 and "not a file" in result.output
    result = runner.invoke(app, ["ledger", "history", "ds-unknown"])
    assert result.exit_code == 2 and "no records" in result.output
    node.stop()
    result = runner.invoke(app, ["ledger", "grants"])
    assert result.exit_code == 1 and "does not answer" in result.output and "Traceback" not in result.output


def test_a_loose_key_file_is_refused(env, monkeypatch):
    key = env / "secrets" / "ledger.key"
    key.chmod(0o644)
    result = runner.invoke(app, ["ledger", "address"])
    assert result.exit_code == 2 and "chmod 600" in result.output
