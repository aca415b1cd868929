"""The benchmarks run and their compared methods agree on the result (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_bulk_read_benchmark_compares_identical_results(tmp_path):
    table = tmp_path / "bulk.md"
    result = subprocess.run([sys.executable, str(BENCHMARKS / "bulk_read.py"), "--gib", "0.01", "--repeats", "1",
                             "--markdown", str(table)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr  # it exits non-zero when the two readers disagree
    rows = [line for line in table.read_text().splitlines() if line.startswith("| ismrmrd") or
            line.startswith("| cloudmri")]
    assert len(rows) == 2 and "| 1.0x |" in rows[0]
