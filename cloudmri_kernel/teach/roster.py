"""A class roster and class-wide parameters, checked against a tutorial's parameters before anything runs.

The roster is a CSV file whose first row names the columns: ``student`` and any of the tutorial's parameters,
e.g.::

    student,accel,seed
    ana,2,1
    ben,3,
    chen,4,3

An empty cell leaves that parameter to the class-wide value (``params.yaml``, a mapping of parameter: value) or
else to the tutorial's default. Values are converted to the parameter's type (``int``, ``float``, ``bool``:
true/false/yes/no/1/0, ``str``). Every problem of the roster and the parameters file is collected and reported
at once, as a :class:`RosterError`.
"""

from __future__ import annotations

import csv
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.teach.tutorials import Parameter, Tutorial

STUDENT_COLUMN = "student"
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}
_INTEGER = re.compile(r"[+-]?\d+")


class RosterError(UsageError):
    """The roster or the parameters file cannot be run; ``problems`` lists every reason, one per entry."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        super().__init__(f"nothing was run; fix the roster and parameters first ({count}):\n"
                         + "\n".join(f"  - {problem}" for problem in problems))


@dataclass(frozen=True)
class Student:
    """One row of the roster.

    Attributes:
        name: the ``student`` cell.
        line: its line in the CSV file (the column names are line 1).
        parameters: the parameters this student's notebook runs with: class-wide values, then the row's.
        slug: the file-name form of the name (executed notebook ``slug.ipynb``).
    """

    name: str
    line: int
    parameters: dict[str, object] = field(default_factory=dict)
    slug: str = ""


def _suggest(name: str, known: dict[str, Parameter]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        return f": did you mean '{close[0]}'?"
    return f" (parameters: {', '.join(known) or 'none'})"


def convert(text: str, parameter: Parameter) -> object:
    """A roster cell's text as the parameter's type.

    Raises:
        ValueError: the text is not a value of that type; the message says what was expected.
    """
    kind = parameter.type
    if kind == "int":
        if not _INTEGER.fullmatch(text):
            raise ValueError(f"{parameter.name} must be a whole number (int), got '{text}'")
        return int(text)
    if kind == "float":
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{parameter.name} must be a number (float), got '{text}'") from None
        if not math.isfinite(value):
            raise ValueError(f"{parameter.name} must be a finite number, got '{text}'")
        return value
    if kind == "bool":
        lowered = text.lower()
        if lowered not in _TRUE | _FALSE:
            raise ValueError(f"{parameter.name} must be true or false (bool), got '{text}'")
        return lowered in _TRUE
    return text


def check_value(value: object, parameter: Parameter) -> object:
    """A typed value (from YAML) checked against the parameter's type; ints are accepted for floats.

    Raises:
        ValueError: the value has another type.
    """
    kind = parameter.type
    if isinstance(value, str) and kind not in (None, "str"):
        return convert(value.strip(), parameter)
    expected = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}.get(kind)
    wrong = expected is not None and (not isinstance(value, expected) or (isinstance(value, bool) and kind != "bool"))
    if wrong or isinstance(value, dict | list):
        shown = "a mapping" if isinstance(value, dict) else "a list" if isinstance(value, list) else repr(value)
        raise ValueError(f"{parameter.name} must be {kind or 'a single value'}, got {shown} "
                         f"({type(value).__name__})")
    return float(value) if kind == "float" else value


def slug(name: str) -> str:
    """A student's name as a file name: letters, digits, ``.``, ``_`` and ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "student"


def read_class_parameters(path: Path, tutorial: Tutorial, problems: list[str]) -> dict[str, object]:
    """The class-wide parameters of a YAML file, checked; problems are appended to ``problems``."""
    if not path.is_file():
        problems.append(f"{path}: no such parameters file")
        return {}
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: not valid YAML ({str(exc).splitlines()[0]})")
        return {}
    if content is None:
        return {}
    if not isinstance(content, dict):
        problems.append(f"{path}: must be a mapping of parameter: value, got {type(content).__name__}")
        return {}
    values = {}
    for name, value in content.items():
        parameter = tutorial.parameters.get(str(name))
        if parameter is None:
            problems.append(f"{path}: '{name}' is not a parameter of {tutorial.name}"
                            f"{_suggest(str(name), tutorial.parameters)}")
            continue
        try:
            values[parameter.name] = check_value(value, parameter)
        except ValueError as exc:
            problems.append(f"{path}: {exc}")
    return values


def read_roster(path: str | Path, tutorial: Tutorial, params_yaml: str | Path | None = None) -> list[Student]:
    """The students of a roster with the parameters each runs with, after checking everything.

    Raises:
        RosterError: every problem found: a missing ``student`` column, empty or duplicate students, columns
            that are not parameters of the tutorial, values of the wrong type, a bad parameters file.
    """
    path = Path(path)
    problems: list[str] = []
    class_values = read_class_parameters(Path(params_yaml), tutorial, problems) if params_yaml else {}
    if not path.is_file():
        raise RosterError([*problems, f"{path}: no such roster file"])
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise RosterError([*problems, f"{path}: cannot be read as UTF-8 text ({exc})"]) from None
    reader = csv.reader(text.splitlines())
    rows = [(reader.line_num, row) for row in reader]
    rows = [(line, [cell.strip() for cell in row]) for line, row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise RosterError([*problems, f"{path}: the roster is empty; its first row names the columns, one of "
                                      f"them '{STUDENT_COLUMN}'"])
    _, columns = rows[0]
    if STUDENT_COLUMN not in columns:
        problems.append(f"{path}: no '{STUDENT_COLUMN}' column (columns: {', '.join(columns) or 'none'}); the "
                        f"first row names the columns, one of them '{STUDENT_COLUMN}'")
    for index, column in enumerate(columns):
        if not column:
            problems.append(f"{path}: column {index + 1} has no name")
        elif column != STUDENT_COLUMN and column not in tutorial.parameters:
            problems.append(f"{path}: column '{column}' is not a parameter of {tutorial.name}"
                            f"{_suggest(column, tutorial.parameters)}")
    duplicates = sorted({c for c in columns if c and columns.count(c) > 1})
    if duplicates:
        problems.append(f"{path}: column(s) {', '.join(duplicates)} appear more than once")
    if STUDENT_COLUMN not in columns:
        raise RosterError(problems)

    students: list[Student] = []
    seen: dict[str, int] = {}
    slugs: dict[str, str] = {}
    for line, row in rows[1:]:
        if len(row) > len(columns):
            problems.append(f"{path} line {line}: {len(row)} fields but {len(columns)} columns")
            continue
        cells = dict(zip(columns, row + [""] * (len(columns) - len(row)), strict=True))
        name = cells[STUDENT_COLUMN]
        if not name:
            problems.append(f"{path} line {line}: the student is empty")
            continue
        if name in seen:
            problems.append(f"{path} line {line}: student '{name}' is already on line {seen[name]}")
            continue
        seen[name] = line
        values = dict(class_values)
        for column, text in cells.items():
            if column == STUDENT_COLUMN or column not in tutorial.parameters or not text:
                continue
            try:
                values[column] = convert(text, tutorial.parameters[column])
            except ValueError as exc:
                problems.append(f"{path} line {line} (student '{name}'): {exc}")
        file_name = slug(name)
        if file_name in slugs:
            problems.append(f"{path} line {line}: students '{slugs[file_name]}' and '{name}' would both be saved "
                            f"as {file_name}.ipynb: make the names differ in letters or digits")
        slugs[file_name] = name
        students.append(Student(name, line, values, file_name))
    if not students and not problems:
        problems.append(f"{path}: no students: add one row per student under the column names")
    if problems:
        raise RosterError(problems)
    return students
