"""Small JSON state files of the ledger (contract addresses, compiled contracts), replaced atomically."""

from __future__ import annotations

import json
from pathlib import Path

from cloudmri_kernel.crypto.keyfiles import make_private_dirs
from cloudmri_kernel.mrd.writer import AtomicOutput


def write_json_atomic(path: str | Path, value) -> None:
    """Write ``value`` as JSON to ``path`` so that readers see the old or the new file, never a partial one."""
    path = Path(path)
    make_private_dirs(path.parent)
    output = AtomicOutput(path)
    try:
        output.temporary.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
        output.commit()
    except BaseException:
        output.discard()
        raise
