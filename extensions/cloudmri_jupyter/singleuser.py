"""The single-user server the hub spawns: ``jupyterhub-singleuser``, without compiling grammars it never uses.

jsonschema imports every format checker when it is imported (``jsonschema/_format.py``). With ``rfc3987-syntax``
installed (it comes with ``jsonschema[format-nongpl]``, which ``jupyter_events`` and ``nbformat`` require), that
import builds about 35 Lark Earley parsers for the ``iri`` and ``iri-reference`` formats: 0.8–1.4 s of every
Jupyter server's start on this project's 2-core machine, before the server answers (jupyter_server issue #1559,
jsonschema issue #1428). No Jupyter or Cloud-MRI schema uses those formats. So before the server starts,
``rfc3987_syntax`` is registered as a stand-in whose ``is_valid_syntax`` imports the real module at its first call
and delegates to it: validation is unchanged, the cost moves to the first IRI ever checked (in practice never).

Run by the spawner as ``python -m cloudmri_jupyter.singleuser [jupyterhub-singleuser options]``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

MODULE = "rfc3987_syntax"


def _stand_in() -> types.ModuleType:
    module = types.ModuleType(MODULE, f"Stand-in for {MODULE}: the real module is imported at the first check.")

    def is_valid_syntax(rule: str, value: str) -> bool:
        if sys.modules.get(MODULE) is module:
            del sys.modules[MODULE]
        return importlib.import_module(MODULE).is_valid_syntax(rule, value)

    module.is_valid_syntax = is_valid_syntax
    return module


def defer_iri_grammars() -> bool:
    """Register the stand-in; False (nothing changed) when the module is absent or already imported."""
    if MODULE in sys.modules or importlib.util.find_spec(MODULE) is None:
        return False
    sys.modules[MODULE] = _stand_in()
    return True


def main() -> int:
    defer_iri_grammars()
    from jupyterhub.singleuser import main as singleuser

    sys.argv[0] = "jupyterhub-singleuser"
    return singleuser()


if __name__ == "__main__":
    sys.exit(main())
