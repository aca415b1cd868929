"""run_class executes a tutorial per student on real kernels, in parallel processes, and summarizes the outcome."""

from __future__ import annotations

import csv

import nbformat
import pytest

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.teach import RosterError, read_records, run_class
from tests.teach.notebooks import sleepy_notebook


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def summary_rows(run):
    with run.summary_csv.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_class_of_three_with_one_failing_parameter(tmp_path):
    """The issue's test: tutorial 1 for three students; ben's coil count makes the simulation cell raise."""
    roster = write(tmp_path / "roster.csv", "student,matrix,coils\nana,32,2\nben,32,0\nchen,48,1\n")
    progress = []
    run = run_class("mrd_files", roster, out_dir=tmp_path / "out", parallel=2,
                    progress=lambda done, total, result: progress.append((done, total, result.student)))

    assert [(r.student, r.status) for r in run.results] == [("ana", "ok"), ("ben", "failed"), ("chen", "ok")]
    assert [r.student for r in run.failed] == ["ben"]
    ben = run.failed[0]
    assert ben.cell == 4  # the cell that calls write_phantom, counted in the tutorial as distributed
    assert ben.source.startswith("write_phantom(path, PhantomSpec(")
    assert ben.error == "UsageError: phantom coils must be 1 to 64, got 0"
    assert sorted(done for done, _, _ in progress) == [1, 2, 3] and {t for _, t, _ in progress} == {3}

    rows = summary_rows(run)
    assert [(r["student"], r["status"], r["cell"], r["error"]) for r in rows] == [
        ("ana", "ok", "", ""), ("ben", "failed", "4", "UsageError: phantom coils must be 1 to 64, got 0"),
        ("chen", "ok", "", "")]
    assert [r["param:coils"] for r in rows] == ["2", "0", "1"]
    # ana: 2 noise scans + 16 imaging lines (every 2nd of 32) + 12 calibration-only lines of 24
    assert [r["record:acquisitions"] for r in rows] == ["30", "", str(2 + 24 + 12)]
    assert rows[0]["record:valid"] == "True" and rows[0]["notebook"] == "notebooks/ana.ipynb"

    executed = nbformat.read(str(tmp_path / "out" / "notebooks" / "ben.ipynb"), as_version=4)
    assert any(o.get("ename") == "UsageError" for c in executed.cells for o in c.get("outputs", []))
    assert read_records(tmp_path / "out" / "notebooks" / "ana.ipynb")["readout_oversampling"] == 2.0
    page = run.summary_html.read_text()
    assert "1 failed" in page and "2 ok" in page and "phantom coils must be 1 to 64, got 0" in page
    assert (tmp_path / "out" / "logs" / "ben.log").stat().st_size > 0


@pytest.mark.slow
def test_a_hanging_cell_is_reported_as_a_timeout(tmp_path):
    tutorial = sleepy_notebook(tmp_path / "sleepy.ipynb")
    roster = write(tmp_path / "roster.csv", "student,seconds,fail,label\nquick,0,,a\nsleepy,120,,b\nwrong,0,yes,c\n")
    params = write(tmp_path / "params.yaml", "repeat: 21\n")
    run = run_class(tutorial, roster, params, out_dir=tmp_path / "out", parallel=3, cell_timeout=10)

    by_name = {r.student: r for r in run.results}
    assert (by_name["quick"].status, by_name["quick"].records) == ("ok", {"twice": 42, "label": "a"})
    sleepy = by_name["sleepy"]
    assert (sleepy.status, sleepy.cell, sleepy.source) == ("timeout", 2, "time.sleep(seconds)")  # the running line
    assert sleepy.error == "the cell ran longer than the limit of 10 s"
    assert sleepy.records == {}
    wrong = by_name["wrong"]
    assert (wrong.status, wrong.cell, wrong.error) == ("failed", 4, "AssertionError: asked to fail")
    assert wrong.source == "assert not fail, 'asked to fail'"
    assert wrong.records == {"twice": 42, "label": "c"}  # recorded before the failing cell
    assert [r["status"] for r in summary_rows(run)] == ["ok", "timeout", "failed"]


@pytest.mark.parametrize(("roster_text", "params_text", "expected"), [
    ("name,seconds\nana,1\n", None, "no 'student' column"),
    ("student,secs\nana,1\n", None, "column 'secs' is not a parameter of sleepy"),
    ("student,repeat\nana,two\n", None, "repeat must be a whole number (int), got 'two'"),
    ("student\nana\n", "fail: 3\n", "fail must be bool, got 3 (int)"),
])
def test_bad_input_is_refused_before_anything_runs(tmp_path, roster_text, params_text, expected):
    tutorial = sleepy_notebook(tmp_path / "sleepy.ipynb")
    roster = write(tmp_path / "roster.csv", roster_text)
    params = write(tmp_path / "params.yaml", params_text) if params_text else None
    with pytest.raises(RosterError) as excinfo:
        run_class(tutorial, roster, params, out_dir=tmp_path / "out")
    assert any(expected in problem for problem in excinfo.value.problems), excinfo.value.problems
    assert not (tmp_path / "out").exists()


def test_an_unknown_kernel_is_reported_with_the_roster_problems(tmp_path):
    tutorial = sleepy_notebook(tmp_path / "sleepy.ipynb")
    roster = write(tmp_path / "roster.csv", "student,repeat\nana,x\n")
    with pytest.raises(RosterError) as excinfo:
        run_class(tutorial, roster, out_dir=tmp_path / "out", kernel_name="no-such-kernel")
    assert len(excinfo.value.problems) == 2
    assert "no Jupyter kernel 'no-such-kernel' here" in excinfo.value.problems[1]
    assert not (tmp_path / "out").exists()


def test_unknown_tutorials_and_options_are_usage_errors(tmp_path):
    roster = write(tmp_path / "roster.csv", "student\nana\n")
    with pytest.raises(UsageError, match="no tutorial 'nope' in .* \\(tutorials: 01_mrd_files, 02_kspace_to_image"):
        run_class("nope", roster, out_dir=tmp_path / "out")
    with pytest.raises(UsageError, match="no such notebook"):
        run_class(tmp_path / "absent.ipynb", roster, out_dir=tmp_path / "out")
    tutorial = sleepy_notebook(tmp_path / "sleepy.ipynb")
    with pytest.raises(UsageError, match="parallel must be at least 1"):
        run_class(tutorial, roster, out_dir=tmp_path / "out", parallel=0)
    with pytest.raises(UsageError, match="cell timeout must be a positive"):
        run_class(tutorial, roster, out_dir=tmp_path / "out", cell_timeout=0)
    assert not (tmp_path / "out").exists()
