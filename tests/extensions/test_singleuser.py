"""The spawned single-user server defers the IRI grammars jsonschema would build at import, and validates the same."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("rfc3987_syntax", reason="installed with jsonschema[format-nongpl] (jupyter_events, nbformat)")

VALUES = ["http://example.com/a%20b", "https://例え.テスト/パス", "http://exa mple.com", "urn:isbn:0451450523",
          "//no-scheme", ""]
CHECK = """
import json, sys
{setup}
import jsonschema
before = "rfc3987_syntax.syntax_helpers" in sys.modules
checker = jsonschema.Draft7Validator.FORMAT_CHECKER
results = [checker.conforms(value, fmt) for fmt in ("iri", "iri-reference") for value in {values!r}]
print(json.dumps({{"built_at_import": before, "results": results,
                   "built_after": "rfc3987_syntax.syntax_helpers" in sys.modules}}))
"""


def _run(setup: str) -> dict:
    code = CHECK.format(setup=setup, values=VALUES)
    return json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                     check=True).stdout)


def test_iri_grammars_are_built_at_first_use_and_validation_is_unchanged():
    plain = _run("")
    deferred = _run("from cloudmri_jupyter.singleuser import defer_iri_grammars; assert defer_iri_grammars()")
    assert plain["built_at_import"] and not deferred["built_at_import"]
    assert deferred["results"] == plain["results"]
    assert plain["results"][:3] == [True, True, False]  # the checks do run: a space is no IRI
    assert deferred["built_after"]


def test_nothing_changes_when_the_module_is_already_imported():
    import rfc3987_syntax  # noqa: F401
    from cloudmri_jupyter.singleuser import defer_iri_grammars

    assert defer_iri_grammars() is False
    assert sys.modules["rfc3987_syntax"].is_valid_syntax.__module__ != "cloudmri_jupyter.singleuser"
