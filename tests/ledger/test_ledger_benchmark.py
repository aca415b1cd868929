"""The ledger benchmark's quick mode runs end to end and fills its tables (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "ledger_throughput.py"


def test_quick_ledger_benchmark(tmp_path):
    table = tmp_path / "ledger.md"
    result = subprocess.run([sys.executable, str(BENCHMARK), "--quick", "--markdown", str(table)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert (figures["records"], figures["peer_records"], figures["verified"]) == (200, 20, 50)
    assert figures["batched_transactions"] == 4  # 200 records in batches of 64
    assert figures["peer_transactions"] == 20
    assert figures["all_verified"] and 1 <= figures["longest_proof"] <= 6
    rows = [line for line in table.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 5 and "| 200 | 4 |" in rows[1] and "| 20 | 20 |" in rows[2]
