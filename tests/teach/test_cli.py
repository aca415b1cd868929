"""`cloudmri teach`: exit codes 0 (all ran), 1 (some students failed), 2 (nothing could run), one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

import cloudmri_kernel.cli_teach  # noqa: F401 - registers `teach` on the app
from cloudmri_kernel.cli import app
from tests.teach.notebooks import sleepy_notebook

TUTORIALS = {
    "01_mrd_files": ["matrix", "coils", "accel", "calib", "noise", "seed"],
    "02_kspace_to_image": ["matrix", "coils", "oversampling", "noise", "kernel", "seed"],
    "03_parallel_imaging": ["matrix", "coils", "accel", "calib", "noise", "sense_iterations", "dataset"],
    "04_compressed_sensing": ["matrix", "coils", "accel", "calib", "pattern", "noise", "lambda_min", "lambda_max",
                              "n_lambdas", "max_iter"],
    "05_image_quality": ["matrix", "coils", "accel", "slices", "noise", "wrong_scale"],
    "06_secure_data_platform": ["matrix", "coils", "grant_days"],
    "07_ledger": ["datasets", "matrix", "leaf", "singles"],
    "08_deep_learning_and_federated": ["matrix", "train_samples", "epochs", "test_samples", "phantom_matrix", "accel",
                                       "rounds", "site_train", "site_test"],
    "09_scaling_with_dask": ["matrix", "coils", "slices", "accel", "sense_iterations", "workers"],
}


def invoke(*args):
    return CliRunner().invoke(app, ["teach", *map(str, args)], env={"COLUMNS": "200"})


def test_list_shows_every_tutorial_and_its_parameters():
    result = invoke("list", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert {t["name"]: [p["name"] for p in t["parameters"]] for t in listed} == TUTORIALS
    types = {p["name"]: p["type"] for t in listed for p in t["parameters"]}
    assert (types["matrix"], types["noise"], types["pattern"]) == ("int", "float", "str")
    assert all(t["title"].startswith(f"Tutorial {int(t['name'][:2])}: ") for t in listed)

    table = invoke("list")
    assert table.exit_code == 0
    assert "03_parallel_imaging: Tutorial 3: Parallel imaging with SENSE and GRAPPA" in table.stdout
    for name in TUTORIALS:
        assert f"{name}: Tutorial " in table.stdout


@pytest.mark.slow
def test_run_exit_codes_and_outputs(tmp_path):
    tutorial = sleepy_notebook(tmp_path / "sleepy.ipynb")
    (tmp_path / "good.csv").write_text("student,repeat\nana,1\nben,2\n")
    result = invoke("run", tutorial, "--class", tmp_path / "good.csv", "--out", tmp_path / "good", "--parallel", 2)
    assert result.exit_code == 0, result.output
    assert "Test tutorial (2 students)" in result.stdout and "summary" in result.stdout
    assert (tmp_path / "good" / "summary.html").is_file()
    assert sorted(p.name for p in (tmp_path / "good" / "notebooks").iterdir()) == ["ana.ipynb", "ben.ipynb"]

    (tmp_path / "some.csv").write_text("student,fail\nana,no\nben,yes\n")
    result = invoke("run", tutorial, "--class", tmp_path / "some.csv", "--out", tmp_path / "some")
    assert result.exit_code == 1, result.output
    assert "1 of 2 students' notebooks did not run through: ben (failed)" in result.stderr
    assert "AssertionError: asked to fail" in result.stdout
    assert "Traceback" not in result.output


def test_bad_input_exits_2_without_a_traceback(tmp_path):
    tutorial = sleepy_notebook(tmp_path / "sleepy.ipynb")
    (tmp_path / "bad.csv").write_text("student,repaet\nana,1\nana,2\n")
    result = invoke("run", tutorial, "--class", tmp_path / "bad.csv", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "error: nothing was run; fix the roster and parameters first (2 problems):" in result.stderr
    assert "column 'repaet' is not a parameter of sleepy: did you mean 'repeat'?" in result.stderr
    assert "student 'ana' is already on line 2" in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()

    result = invoke("run", "no_such_tutorial", "--class", tmp_path / "bad.csv")
    assert result.exit_code == 2 and "error: no tutorial 'no_such_tutorial'" in result.stderr
    assert invoke("run", tutorial).exit_code == 2  # --class is required
    assert invoke("run", tutorial, "--class", tmp_path / "bad.csv", "--parallel", 0).exit_code == 2

    # Hub-only options without --hub, and a hub token file others may read: refused before anything runs.
    (tmp_path / "good.csv").write_text("student,repeat\nana,1\n")
    for option in (["--start-servers"], ["--token-file", tmp_path / "token"]):
        result = invoke("run", tutorial, "--class", tmp_path / "good.csv", *option)
        assert result.exit_code == 2 and "are for runs on the hub: add --hub URL" in result.stderr
    (tmp_path / "token").write_text("secret")
    (tmp_path / "token").chmod(0o644)
    result = invoke("run", tutorial, "--class", tmp_path / "good.csv", "--hub", "http://127.0.0.1:9",
                    "--token-file", tmp_path / "token", "--out", tmp_path / "hub")
    assert result.exit_code == 2 and "the token file is readable by others: chmod 600 it" in result.stderr
    assert not (tmp_path / "hub").exists()


def test_the_command_as_a_process(tmp_path):
    """As a user runs it; `python -m cloudmri_kernel teach` once cli.py imports cli_teach."""
    tutorial = sleepy_notebook(tmp_path / "sleepy.ipynb")
    (tmp_path / "roster.csv").write_text("name\nana\n")
    launcher = "import cloudmri_kernel.cli_teach; from cloudmri_kernel.cli import app; app(prog_name='cloudmri')"
    result = subprocess.run([sys.executable, "-c", launcher, "teach", "run", str(tutorial), "--class",
                             str(tmp_path / "roster.csv"), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 2
    assert "no 'student' column (columns: name)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_ctrl_c_stops_the_class(tmp_path):
    """Ctrl-C stops every running notebook (their kernels shut down with them) and writes no summary."""
    tutorial = sleepy_notebook(tmp_path / "sleepy.ipynb")
    (tmp_path / "roster.csv").write_text("student,seconds\nana,300\nben,300\nchen,300\n")
    launcher = "import cloudmri_kernel.cli_teach; from cloudmri_kernel.cli import app; app(prog_name='cloudmri')"
    process = subprocess.Popen(
        [sys.executable, "-c", launcher, "teach", "run", str(tutorial), "--class", str(tmp_path / "roster.csv"),
         "--out", str(tmp_path / "out"), "--parallel", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal's foreground job
    logs = [tmp_path / "out" / "logs" / f"{name}.log" for name in ("ana", "ben")]
    deadline = time.monotonic() + 120
    while not all(log.is_file() and "Executing Cell 2" in log.read_text() for log in logs):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "out" / "summary.csv").exists()
    assert not (tmp_path / "out" / "notebooks" / "chen.ipynb").exists()
