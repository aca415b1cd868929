"""The ledger signing key of a site: read from a private file (mode 0600), never from source code.

Three file forms are accepted: 32 raw bytes (what :func:`load_or_create_account` writes), 64 hex digits
(optionally ``0x``-prefixed, as ``cast wallet new`` prints them), or an Ethereum keystore JSON (Web3 Secret
Storage, scrypt or PBKDF2, as geth and Besu write them) whose password comes from the environment.

References:
    Ethereum Web3 Secret Storage Definition (https://ethereum.org/en/developers/docs/data-structures-and-encoding/web3-secret-storage/).
    NIST SP 800-57 Part 1 Rev. 5, section 6 (protection of keys at rest).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from cloudmri_kernel.crypto.keyfiles import load_or_create_secret, read_secret
from cloudmri_kernel.errors import UsageError

_HEX_KEY = re.compile(rb"\s*(?:0x)?([0-9a-fA-F]{64})\s*")


def load_account(path: str | Path, password: str | None = None) -> LocalAccount:
    """The account whose private key is in ``path`` (see the module docstring for the forms).

    Raises:
        UsageError: the file is missing, readable by others, or holds no usable key.
    """
    secret = read_secret(path, 32, "ledger key file")
    if len(secret) == 32:  # raw bytes first: a random key may well start with "{" or whitespace
        return _from_key(secret, path)
    if match := _HEX_KEY.fullmatch(secret):
        return _from_key(bytes.fromhex(match.group(1).decode()), path)
    if secret.lstrip().startswith(b"{"):
        if password is None:
            raise UsageError("the ledger key file is a keystore: set CLOUDMRI_LEDGER_KEY_PASSWORD", path)
        try:
            key = Account.decrypt(json.loads(secret), password)
        except (ValueError, KeyError) as exc:
            raise UsageError(f"cannot decrypt the keystore ({exc})", path) from None
        return Account.from_key(key)
    raise UsageError("the ledger key file holds neither 32 raw bytes, 64 hex digits nor a keystore JSON", path)


def _from_key(key: bytes, path: str | Path) -> LocalAccount:
    try:
        return Account.from_key(key)
    except ValueError as exc:  # zero or above the secp256k1 group order
        raise UsageError(f"the ledger key is not a valid secp256k1 private key ({exc})", path) from None


def load_or_create_account(path: str | Path, password: str | None = None) -> LocalAccount:
    """The account in ``path``; a new random key (32 bytes, mode 0600) is created there first if it is missing."""
    if not Path(path).exists():
        load_or_create_secret(path, 32, "ledger key file")
    return load_account(path, password)
