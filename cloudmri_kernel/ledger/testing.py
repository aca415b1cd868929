"""Test helpers that ship with the package: a real anvil node and ledgers with fresh keys.

No well-known development key is used: anvil starts with no accounts (``--accounts 0``) and each site's key is
random, written to a 0600 file, and funded on the local chain with ``anvil_setBalance``.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from cloudmri_kernel.crypto.keyfiles import create_secret
from cloudmri_kernel.ledger.client import Ledger
from cloudmri_kernel.ledger.keys import load_account
from cloudmri_kernel.ledger.node import AnvilNode
from cloudmri_kernel.processes import free_port


def new_key_file(path: str | Path) -> Path:
    """A fresh random signing key in ``path`` (mode 0600)."""
    create_secret(path, secrets.token_bytes(32))
    return Path(path)


def start_node(directory: str | Path) -> AnvilNode:
    """A started anvil node on a free port, its state in ``directory``."""
    node = AnvilNode(directory, free_port())
    node.start()
    return node


def ledger_for(directory: str | Path, rpc_url: str, **options) -> Ledger:
    """A ledger in ``directory`` whose key is ``directory/site.key`` (created on first use)."""
    directory = Path(directory)
    key = directory / "site.key"
    if not key.exists():
        new_key_file(key)
    return Ledger(directory, rpc_url, load_account(key), **options)
