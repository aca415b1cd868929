"""The benchmarks run and their compared methods agree on the result (no timing is asserted)."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_bulk_read_benchmark_compares_identical_results(tmp_path):
    table = tmp_path / "bulk.md"
    result = subprocess.run([sys.executable, str(BENCHMARKS / "bulk_read.py"), "--gib", "0.01", "--repeats", "1",
                             "--markdown", str(table)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr  # it exits non-zero when the two readers disagree
    rows = [line for line in table.read_text().splitlines() if line.startswith("| ismrmrd") or
            line.startswith("| cloudmri")]
    assert len(rows) == 2 and "| 1.0x |" in rows[0]


def _ssims(row: str) -> list[float]:
    """The SSIM of each site in a table row ("| name | 0.9 / 30.1 | ... | mean |" or "| name | 0.9 ± 0.01 | ...")."""
    return [float(cell.split()[0]) for cell in row.split(" | ")[1:-1]]


def test_federated_benchmark_summarizes_several_seeds(tmp_path):
    table = tmp_path / "federated.md"
    tiny = ["--matrix", "32", "--train", "2", "--test", "2", "--val", "2", "--rounds", "2", "--check-every", "1",
            "--personalize-epochs", "1", "--local-epochs", "1", "--arms", "site-lamda-ft", "--jobs", "2",
            "--patience", "1", "--rounds-patience", "1"]
    result = _federated(*tiny, "--seed", "0", "1", "--markdown", str(table))
    assert result.returncode == 0, result.stderr
    text = table.read_text()
    per_seed, summary = text.split("### Across seeds")
    seeds = per_seed.split("### Seed ")[1:]
    assert [s.split()[0] for s in seeds] == ["0", "1"]
    rows = [{line.split(" | ")[0][2:]: line for line in s.splitlines() if line.startswith("| ") and " / " in line}
            for s in seeds]  # the score table (not the wall-time one)
    sites = ("site-a", "site-b", "site-c")
    central = [_ssims(r["central (pooled)"]) for r in rows]
    own = [[_ssims(r[f"local ({site})"])[i] for i, site in enumerate(sites)] for r in rows]
    across = {line.split(" | ")[0][2:]: line for line in summary.splitlines() if line.startswith("| ")}
    for name, per_seed_ssims in (("central (pooled)", central), ("each site's own model", own)):
        means = _ssims(across[name])
        spreads = [float(cell.split("±")[1]) for cell in across[name].split(" | ")[1:-1]]
        for i in range(3):
            values = [ssims[i] for ssims in per_seed_ssims]
            assert means[i] == pytest.approx(statistics.mean(values), abs=1.5e-4)
            assert spreads[i] == pytest.approx(statistics.stdev(values), abs=1.5e-4)
    met = sum("targets met" in line for s in seeds for line in s.splitlines() if line.startswith("- FedAvg-FT"))
    assert f"both targets met in {met} of 2 seeds" in summary
    federated = [_ssims(next(line for name, line in r.items() if name.startswith("FedAvg-FT"))) for r in rows]
    for i, site in enumerate(sites):  # mean ± standard error of the paired differences to the site's own model
        differences = [federated[seed][i] - own[seed][i] for seed in (0, 1)]
        mean, error = re.search(rf"{site} ([-+][0-9.]+) ± ([0-9.]+) \(", summary).groups()
        assert float(mean) == pytest.approx(statistics.mean(differences), abs=1.5e-4)
        assert float(error) == pytest.approx(statistics.stdev(differences) / 2 ** 0.5, abs=1.5e-4)
    assert all("round 1 of 1, fine-tuning epochs kept" in s for s in seeds)  # the experiment's kept round

    again = _federated(*tiny, "--seed", "0", "0")
    assert again.returncode == 2 and "each seed once" in again.stderr
    impatient = _federated(*tiny[:tiny.index("--val")], "--patience", "3")
    assert impatient.returncode == 2 and "--patience needs validation images" in impatient.stderr
    impatient = _federated(*tiny[:tiny.index("--val")], "--rounds-patience", "3")
    assert impatient.returncode == 2 and "--rounds-patience needs validation images" in impatient.stderr

    # The same seeds run by separate commands and combined: the same summary as the two-seed run's.
    for seed in ("0", "1"):
        assert _federated(*tiny, "--seed", seed, "--json", str(tmp_path / f"{seed}.json")).returncode == 0
    combined = _federated("--combine", str(tmp_path / "0.json"), str(tmp_path / "1.json"),
                          "--markdown", str(tmp_path / "combined.md"))
    assert combined.returncode == 0, combined.stderr
    assert (tmp_path / "combined.md").read_text().split("### Across seeds")[1] == summary
    assert set(json.loads((tmp_path / "0.json").read_text())["runs"]) == {"0"}


def test_federated_benchmark_refuses_runs_it_cannot_combine(tmp_path):
    run = {"settings": {"lr": 0.003, "rounds": 480}, "runs": {"0": {}}}
    files = {}
    for name, content in (("a", run), ("again", run), ("other", {**run, "settings": {"lr": 0.001, "rounds": 480},
                                                                     "runs": {"1": {}}}),
                          ("broken", None)):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text("{not json" if content is None else json.dumps(content))
    for names, message in ((("a", "again"), "each seed once"), (("a", "other"), "other settings than"),
                           (("a",), "two seeds or more"), (("a", "broken"), "--combine"),
                           (("a", "missing"), "missing.json")):
        refused = _federated("--combine", *(str(tmp_path / f"{name}.json") for name in names))
        assert refused.returncode == 2 and message in refused.stderr, (names, refused.stderr)
    assert "(lr)" in _federated("--combine", str(files["a"]), str(files["other"])).stderr


def _federated(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / "federated_vs_central.py"), *args],
                          capture_output=True, text=True, timeout=600)
