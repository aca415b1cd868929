"""The ingest benchmark runs end to end and fills every cell of its tables (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "ingest_throughput.py"


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_quick_ingest_benchmark(tmp_path):
    table = tmp_path / "ingest.md"
    # 32 MiB: enough CPU time for the rusage clock (its resolution can be a scheduler tick) to register
    result = subprocess.run([sys.executable, str(BENCHMARK), "--size-mb", "32", "--small-mb", "4", "--repeats", "1",
                             "--speed-seconds", "1", "--workdir", str(tmp_path), "--markdown", str(table)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr  # it exits non-zero if put, get and sha256sum disagree
    lines = table.read_text().splitlines()
    limits = {cells(line)[0][:2]: float(cells(line)[1]) for line in lines if line.startswith(("| A:", "| B:", "| C:"))}
    assert sorted(limits) == ["A:", "B:", "C:"] and all(value > 0 for value in limits.values())
    operations = [cells(line) for line in lines if line.startswith(("| put:", "| get:"))]
    assert len(operations) == 2
    for row in operations:  # MB/s wall, per user-CPU s, per CPU s; ratios to A, B, B; put only: to C
        assert all(float(cell) > 0 for cell in row[1:4]) and all(cell.endswith("%") for cell in row[4:7])
    assert operations[0][7].endswith("%") and operations[1][7] == ""
    memory = [cells(line) for line in lines if line.startswith(("| 4 MiB", "| 32 MiB"))]
    assert [row[0] for row in memory] == ["4 MiB", "32 MiB"]
    assert all(cell.endswith(" MiB") and float(cell.split()[0]) >= 0 for row in memory for cell in row[1:])
    assert [p.name for p in tmp_path.iterdir()] == ["ingest.md"]  # the test files and stores are removed
