"""Rosters and class parameters are checked against the tutorial's parameters, every problem reported at once."""

from __future__ import annotations

import pytest

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.teach import RosterError, load_tutorial, read_roster
from cloudmri_kernel.teach.roster import slug
from tests.teach.notebooks import sleepy_notebook, write_notebook


@pytest.fixture
def tutorial(tmp_path):
    return load_tutorial(sleepy_notebook(tmp_path / "sleepy.ipynb"))


def roster(tmp_path, text: str, name: str = "roster.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(excinfo) -> list[str]:
    return excinfo.value.problems


def test_parameters_come_from_the_parameters_cell(tutorial):
    assert tutorial.title == "Test tutorial"
    assert {name: (p.type, p.default, p.help) for name, p in tutorial.parameters.items()} == {
        "seconds": ("float", "0.0", "how long cell 2 sleeps"),
        "fail": ("bool", "False", "make cell 4 fail"),
        "label": ("str", "'x'", "a text parameter"),
        "repeat": ("int", "1", "a whole number"),
    }


def test_values_are_converted_and_class_parameters_apply(tutorial, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("seconds: 1\nlabel: week 3\nrepeat: 2\n")
    students = read_roster(roster(tmp_path, "\ufeffstudent, fail ,repeat,seconds\n"
                                            "ana,yes,5,\n ben ,0,,0.5\n\nchen,TRUE,-3,2e-1\n"), tutorial, params)
    assert [(s.name, s.line, s.parameters) for s in students] == [
        ("ana", 2, {"seconds": 1.0, "label": "week 3", "repeat": 5, "fail": True}),
        ("ben", 3, {"seconds": 0.5, "label": "week 3", "repeat": 2, "fail": False}),
        ("chen", 5, {"seconds": 0.2, "label": "week 3", "repeat": -3, "fail": True}),
    ]
    assert all(isinstance(s.parameters["seconds"], float) for s in students)


def test_a_roster_without_a_student_column_is_refused(tutorial, tmp_path):
    with pytest.raises(RosterError) as excinfo:
        read_roster(roster(tmp_path, "name,repeat\nana,1\n"), tutorial)
    assert len(problems(excinfo)) == 2
    assert "no 'student' column (columns: name, repeat)" in problems(excinfo)[0]
    assert "column 'name' is not a parameter of sleepy" in problems(excinfo)[1]


def test_every_problem_is_listed_in_one_error(tutorial, tmp_path):
    text = ("student,repeat,secnds,fail,\n"
            "ana,1.5,1,maybe,\n"
            ",2,1,no,\n"
            "ana,3,1,no,\n"
            "ben,4,1,no,,extra\n"
            "chen,x,1,true,\n")
    params = tmp_path / "params.yaml"
    params.write_text("labell: a\nseconds: [1, 2]\nrepeat: true\n")
    with pytest.raises(RosterError) as excinfo:
        read_roster(roster(tmp_path, text), tutorial, params)
    found = problems(excinfo)
    expected = [
        "'labell' is not a parameter of sleepy: did you mean 'label'?",
        "seconds must be float, got a list (list)",
        "repeat must be int, got True (bool)",
        "column 'secnds' is not a parameter of sleepy: did you mean 'seconds'?",
        "column 5 has no name",
        "line 2 (student 'ana'): repeat must be a whole number (int), got '1.5'",
        "line 2 (student 'ana'): fail must be true or false (bool), got 'maybe'",
        "line 3: the student is empty",
        "line 4: student 'ana' is already on line 2",
        "line 5: 6 fields but 5 columns",
        "line 6 (student 'chen'): repeat must be a whole number (int), got 'x'",
    ]
    assert len(found) == len(expected), found
    for problem, text in zip(found, expected, strict=True):
        assert text in problem
    message = str(excinfo.value)
    assert message.startswith("nothing was run; fix the roster and parameters first (11 problems):")
    assert isinstance(excinfo.value, UsageError) and excinfo.value.exit_code == 2


@pytest.mark.parametrize(("text", "problem"), [
    ("", "the roster is empty"),
    ("student,repeat\n", "no students"),
    ("student,seconds\nana,inf\n", "seconds must be a finite number, got 'inf'"),
    ("student,repeat,repeat\nana,1,2\n", "column(s) repeat appear more than once"),
    ("student\nAna Lee\nana-lee\nAna_Lee\n", "students 'Ana Lee' and 'Ana_Lee' would both be saved as Ana_Lee.ipynb"),
])
def test_more_bad_rosters(tutorial, tmp_path, text, problem):
    with pytest.raises(RosterError) as excinfo:
        read_roster(roster(tmp_path, text), tutorial)
    assert any(problem in p for p in problems(excinfo)), problems(excinfo)


def test_missing_files_and_bad_yaml(tutorial, tmp_path):
    with pytest.raises(RosterError, match="no such roster file"):
        read_roster(tmp_path / "absent.csv", tutorial)
    good = roster(tmp_path, "student\nana\n")
    for content, problem in (("a: [", "not valid YAML"), ("- 1\n- 2\n", "must be a mapping of parameter: value")):
        (tmp_path / "p.yaml").write_text(content)
        with pytest.raises(RosterError, match=problem):
            read_roster(good, tutorial, tmp_path / "p.yaml")
    with pytest.raises(RosterError, match="no such parameters file"):
        read_roster(good, tutorial, tmp_path / "absent.yaml")


def test_a_notebook_without_a_parameters_cell_is_not_a_tutorial(tmp_path):
    path = write_notebook(tmp_path / "plain.ipynb", "x = 1")
    notebook = path.read_text().replace('"parameters"', '"other"')
    path.write_text(notebook)
    with pytest.raises(InvalidDataError, match="no cell tagged 'parameters'"):
        load_tutorial(path)


def test_slugs_are_file_names():
    assert slug("Ana María López") == "Ana_Mar_a_L_pez"
    assert slug("../etc/passwd") == "etc_passwd"
    assert slug("...") == "student"
