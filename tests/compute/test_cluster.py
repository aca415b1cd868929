"""Tasks on real Dask processes: a LocalCluster and a separately started scheduler with workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cloudmri_kernel.compute.cluster import run_tasks
from cloudmri_kernel.errors import UsageError

pytestmark = pytest.mark.slow


def spectrum_energy(seed: int) -> tuple[int, float, int]:
    """A small deterministic task that reports which process ran it."""
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((64, 64))
    return seed, float(np.abs(np.fft.fft2(image)).sum()), os.getpid()


def test_local_cluster_returns_results_in_order_and_uses_worker_processes():
    seen = []
    results = run_tasks(spectrum_energy, list(range(8)), workers=2,
                        progress=lambda done, total, link: seen.append((done, total, link)))
    assert [r[0] for r in results] == list(range(8))
    assert [r[1] for r in results] == [spectrum_energy(i)[1] for i in range(8)]
    assert os.getpid() not in {r[2] for r in results}
    assert [s[:2] for s in seen] == [(i, 8) for i in range(1, 9)]
    assert seen[-1][2].startswith("http://127.0.0.1:")


def test_in_process_run_without_workers():
    results = run_tasks(spectrum_energy, [3, 1])
    assert [r[0] for r in results] == [3, 1] and {r[2] for r in results} == {os.getpid()}


def test_external_scheduler_and_workers(tmp_path, monkeypatch):
    scheduler_file = tmp_path / "scheduler.json"
    bin_dir = Path(sys.executable).parent
    # The scheduler and workers unpickle the task function, which lives in this test module.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    scheduler = subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    workers = []
    try:
        for _ in range(50):
            if scheduler_file.exists() and scheduler_file.stat().st_size:
                break
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        workers = [subprocess.Popen([str(bin_dir / "dask"), "worker", address, "--nthreads", "1", "--host",
                                     "127.0.0.1", "--dashboard-address", "127.0.0.1:0"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
                   for _ in range(2)]
        monkeypatch.setenv("CLOUDMRI_DASK_SCHEDULER", address)
        from distributed import Client

        with Client(address) as client:
            client.wait_for_workers(2, timeout=60)
        results = run_tasks(spectrum_energy, list(range(6)))
        assert [r[1] for r in results] == [spectrum_energy(i)[1] for i in range(6)]
        assert len({r[2] for r in results} - {os.getpid()}) >= 1
    finally:
        for process in [*workers, scheduler]:
            process.terminate()
        for process in [*workers, scheduler]:
            process.wait(timeout=30)


def test_unreachable_scheduler_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CLOUDMRI_DASK_SCHEDULER", "tcp://127.0.0.1:9")
    with pytest.raises(UsageError, match="cannot reach the Dask scheduler tcp://127.0.0.1:9"):
        run_tasks(spectrum_energy, [1])
