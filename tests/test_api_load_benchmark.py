"""The API load benchmark runs end to end and every request it sends is answered and audited (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cloudmri_kernel.catalog.testing import PostgresServer

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "api_load.py"
SCENARIOS = ["GET /datasets?filters", "GET /datasets/{id}", "GET /series/{id}/images/{i}.png",
             "GET /series/{id}/array?index=i"]


@pytest.mark.slow
def test_api_load_benchmark_answers_and_audits_every_request(tmp_path):
    table = tmp_path / "api_load.md"
    table.write_text("# old numbers\n\n## Reading\nkept by hand\n")
    result = subprocess.run([sys.executable, str(BENCHMARK), "--duration", "0.5", "--clients", "3", "--markdown",
                             str(table)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr  # it exits non-zero when a request was answered but not audited
    databases = ["sqlite", "postgresql"] if PostgresServer.available() else ["sqlite"]
    text = table.read_text()
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| GET")]
    assert [(row[0], row[1]) for row in rows] == [(s, d) for s in SCENARIOS for d in databases]
    assert all(row[6] == "0" and int(row[7]) > 0 for row in rows)  # no errors; some requests answered
    assert text.endswith("## Reading\nkept by hand\n")
