"""`cloudmri up --demo` with its ledger: anvil started with the workbench, contracts deployed once with a key made
once (0600), the demo datasets anchored by the API service, and an old record verified after a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cloudmri_kernel.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
CLOUDMRI = Path(sys.executable).parent / "cloudmri"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (ROOT / "node_modules" / ".bin" / "configurable-http-proxy").exists(),
                       reason="needs configurable-http-proxy from npm (./workbench setup installs it; in CI)"),
]


def _start(data_dir: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMRI_")}
    env.update({"CLOUDMRI_LEDGER_BATCH_DELAY_S": "0.2", "CLOUDMRI_LEDGER_FLUSH_POLL_S": "0.2"})
    process = subprocess.Popen([str(CLOUDMRI), "up", "--demo", "--port", str(port), "--data-dir", str(data_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip())
        if line.startswith("Ctrl-C stops it"):
            return process
    process.wait()
    raise AssertionError("cloudmri up did not start:\n" + "\n".join(lines))


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0


def _provenance(url: str, token: str, dataset_id: str) -> dict:
    deadline = time.monotonic() + 90
    while True:
        reply = httpx.get(f"{url}/services/cloudmri/api/v1/datasets/{dataset_id}/provenance",
                          headers={"Authorization": f"token {token}"}, timeout=30)
        assert reply.status_code == 200, reply.text
        if reply.json()["state"] == "anchored":
            return reply.json()
        assert time.monotonic() < deadline, f"dataset {dataset_id} was not anchored: {reply.text}"
        time.sleep(0.2)


def _token(url: str, hub_dir: Path) -> str:
    manager = (hub_dir / "manager.token").read_text().strip()
    reply = httpx.post(f"{url}/hub/api/users/researcher/tokens", json={"note": "test"},
                       headers={"Authorization": f"token {manager}"}, timeout=30)
    assert reply.status_code == 201, reply.text
    return reply.json()["token"]


def test_up_starts_the_ledger_anchors_the_demo_and_resumes_the_chain(tmp_path):
    data_dir, port = tmp_path / "workbench", free_port()
    url, hub_dir, ledger_dir = f"http://127.0.0.1:{port}", data_dir / "hub", data_dir / "ledger"
    process = _start(data_dir, port)
    try:
        key = ledger_dir / "keys" / "site.key"
        assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32
        deployment = json.loads((ledger_dir / "addresses.json").read_text())
        health = httpx.get(f"{url}/services/cloudmri/health", timeout=30).json()
        assert health["ledger"]["configured"] is True and health["ledger"]["up"] is True
        token = _token(url, hub_dir)
        datasets = httpx.get(f"{url}/services/cloudmri/api/v1/datasets", timeout=30,
                             headers={"Authorization": f"token {token}"}).json()
        assert len(datasets) >= 3
        before = _provenance(url, token, datasets[-1]["id"])
        assert before["anchored_by_site"] == "demo" and before["sha256"] == datasets[-1]["sha256"]
        assert before["submitter"] == deployment["admin"]
    finally:
        _stop(process)
    assert (ledger_dir / "anvil-state.json").stat().st_size > 0

    process = _start(data_dir, port)  # a second `up`: the same chain, key and contracts
    try:
        assert (ledger_dir / "keys" / "site.key").read_bytes() == key.read_bytes()
        assert json.loads((ledger_dir / "addresses.json").read_text()) == deployment
        after = _provenance(url, _token(url, hub_dir), datasets[-1]["id"])
        assert {k: after[k] for k in ("block_number", "tx_hash", "root", "proof", "anchored_at")} == \
            {k: before[k] for k in ("block_number", "tx_hash", "root", "proof", "anchored_at")}
    finally:
        _stop(process)
