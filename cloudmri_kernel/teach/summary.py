"""The summary of a class run: ``summary.csv`` for spreadsheets and scripts, ``summary.html`` for people.

One row per student: the status (``ok``, ``failed``, ``timeout``; on the hub also ``not running``, ``refused``,
``unknown student``, ``unreachable``), where a failed notebook stopped (the cell's index in the tutorial and its
error line) or why it did not run, how long it ran, the notebook, then one column per parameter given
(``param:NAME``) and per recorded value (``record:NAME``).
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloudmri_kernel.teach.runner import StudentResult
    from cloudmri_kernel.teach.tutorials import Tutorial

FIXED_COLUMNS = ("student", "status", "cell", "error", "seconds", "notebook")
#: Statuses in the order the counts list them; those of a local run first.
STATUSES = ("ok", "failed", "timeout", "not running", "refused", "unknown student", "unreachable")


def record_names(results: Sequence[StudentResult]) -> list[str]:
    """Recorded names in the order first recorded."""
    names: dict[str, None] = {}
    for result in results:
        names.update(dict.fromkeys(result.records))
    return list(names)


def _parameters(tutorial: Tutorial, results: Sequence[StudentResult]) -> list[str]:
    """The parameters given to any student, in the tutorial's order."""
    given = {name for result in results for name in result.parameters}
    return [name for name in tutorial.parameters if name in given]


def csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def shown_value(value) -> str:
    """A value for people: floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, list | dict):
        return json.dumps(value)
    return "" if value is None else str(value)


def rows(tutorial: Tutorial, results: Sequence[StudentResult], out_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The summary table: column names and one row (column: text) per student."""
    parameters, records = _parameters(tutorial, results), record_names(results)
    columns = [*FIXED_COLUMNS, *(f"param:{name}" for name in parameters), *(f"record:{name}" for name in records)]
    table = []
    for result in results:
        notebook = ("" if result.notebook is None else
                    Path(os.path.relpath(result.notebook, out_dir.resolve())).as_posix())
        row = {"student": result.student, "status": result.status,
               "cell": "" if result.cell is None else str(result.cell), "error": result.error or "",
               "seconds": f"{result.seconds:.1f}", "notebook": notebook}
        row.update({f"param:{name}": csv_value(result.parameters.get(name)) for name in parameters})
        row.update({f"record:{name}": csv_value(result.records.get(name)) for name in records})
        table.append(row)
    return columns, table


REPORT_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem; color: #1d2630; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; }
p.meta { color: #5a6572; margin-top: 0; }
.counts span { display: inline-block; margin-right: 1rem; font-weight: 600; }
table { border-collapse: collapse; margin-top: 1rem; font-size: .92rem; }
th, td { border-bottom: 1px solid #dde3ea; padding: .45rem .7rem; text-align: left; vertical-align: top; }
th { background: #f3f6f9; font-weight: 600; font-size: .85rem; }
td.where { min-width: 16rem; max-width: 28rem; }
th.group { text-align: center; border-left: 2px solid #fff; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { font-size: .85rem; background: #f3f6f9; padding: .05rem .25rem; border-radius: 3px; }
.status { border-radius: 999px; padding: .1rem .6rem; font-weight: 600; font-size: .8rem; color: #fff; }
.ok { background: #2e7d32; } .failed { background: #c62828; } .timeout { background: #ef6c00; }
.not-running { background: #6d4c41; } .refused, .unknown-student, .unreachable { background: #c62828; }
tr.bad td { background: #fff6f5; }
.error { color: #b71c1c; }
"""


def _html(tutorial: Tutorial, results: Sequence[StudentResult], out_dir: Path) -> str:
    parameters, records = _parameters(tutorial, results), record_names(results)
    _, table = rows(tutorial, results, out_dir)
    counts = {status: sum(r.status == status for r in results) for status in STATUSES}
    shown = {"timeout": "timed out"}
    # A local run always shows its three counts; the hub's other statuses only when some student has them.
    listed = "".join(f"<span>{count} {shown.get(status, status)}</span>" for status, count in counts.items()
                     if count or status in ("ok", "failed", "timeout"))
    escape = html.escape
    head = ["<th rowspan=2>Student</th><th rowspan=2>Status</th><th rowspan=2>Where it stopped</th>"
            "<th rowspan=2>Time (s)</th>"]
    if parameters:
        head.append(f'<th class="group" colspan={len(parameters)}>Parameters</th>')
    if records:
        head.append(f'<th class="group" colspan={len(records)}>Recorded values</th>')
    # Long snake_case names may break after an underscore, so that many columns fit on a page.
    sub = "".join(f"<th>{escape(name).replace('_', '_<wbr>')}</th>" for name in [*parameters, *records])
    body = []
    for result, row in zip(results, table, strict=True):
        where = ""
        if result.status != "ok":
            cell = "" if result.cell is None else f"cell {result.cell}"
            code = f": <code>{escape(result.source)}</code>" if result.source else ""
            where = f'{cell}{code}<div class="error">{escape(result.error or "")}</div>'
        values = "".join(f"<td>{escape(shown_value(result.parameters.get(name)))}</td>" for name in parameters)
        values += "".join(f'<td class="num">{escape(shown_value(result.records.get(name)))}</td>' for name in records)
        name = escape(result.student)
        link = f'<a href="{escape(row["notebook"])}">{name}</a>' if row["notebook"] else name
        body.append(f'<tr class="{"bad" if result.status != "ok" else ""}"><td>{link}</td>'
                    f'<td><span class="status {result.status.replace(" ", "-")}">{escape(result.status)}</span></td>'
                    f'<td class="where">{where}</td><td class="num">{result.seconds:.1f}</td>{values}</tr>')
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{escape(tutorial.title)}: class run"
            f"</title><style>{REPORT_CSS}</style></head><body>\n"
            f"<h1>{escape(tutorial.title)}</h1>\n"
            f"<p class=meta>{escape(tutorial.path.name)} &middot; {len(results)} students &middot; {when}</p>\n"
            f"<p class=counts>{listed}</p>\n"
            f"<table><thead><tr>{''.join(head)}</tr><tr>{sub}</tr></thead>\n<tbody>\n"
            + "\n".join(body) + "\n</tbody></table>\n"
            "<p class=meta>Cells are counted from 0 in the tutorial as distributed; click a name to open the "
            "executed notebook.</p>\n</body></html>\n")


def write_summary(tutorial: Tutorial, results: Sequence[StudentResult], out_dir: Path) -> tuple[Path, Path]:
    """Write ``summary.csv`` and ``summary.html`` into ``out_dir``; returns their paths."""
    columns, table = rows(tutorial, results, out_dir)
    csv_path, html_path = out_dir / "summary.csv", out_dir / "summary.html"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table)
    html_path.write_text(_html(tutorial, results, out_dir), encoding="utf-8")
    return csv_path, html_path
