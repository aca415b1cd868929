"""Signing keys come from private files in three forms; bad files are refused with a clear reason."""

from __future__ import annotations

import json
import os

import pytest
from eth_account import Account

from cloudmri_kernel.crypto.keyfiles import create_secret
from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.ledger.keys import load_account, load_or_create_account


def test_raw_hex_and_keystore_forms(tmp_path):
    account = Account.create()
    create_secret(tmp_path / "raw.key", bytes(account.key))
    create_secret(tmp_path / "hex.key", f"0x{bytes(account.key).hex()}\n".encode())
    create_secret(tmp_path / "store.json", json.dumps(Account.encrypt(account.key, "pw", iterations=2)).encode())
    assert load_account(tmp_path / "raw.key").address == account.address
    assert load_account(tmp_path / "hex.key").address == account.address
    assert load_account(tmp_path / "store.json", "pw").address == account.address
    brace = bytes([0x7B]) + bytes(account.key)[1:]  # a raw key that starts with "{" is still a raw key
    create_secret(tmp_path / "brace.key", brace)
    assert load_account(tmp_path / "brace.key").address == Account.from_key(brace).address
    with pytest.raises(UsageError, match="CLOUDMRI_LEDGER_KEY_PASSWORD"):
        load_account(tmp_path / "store.json")
    with pytest.raises(UsageError, match="cannot decrypt"):
        load_account(tmp_path / "store.json", "wrong")


def test_created_once_private_and_stable(tmp_path):
    first = load_or_create_account(tmp_path / "keys" / "site.key")
    assert oct(os.stat(tmp_path / "keys" / "site.key").st_mode & 0o777) == "0o600"
    assert load_or_create_account(tmp_path / "keys" / "site.key").address == first.address


def test_bad_key_files_are_refused(tmp_path):
    loose = tmp_path / "loose.key"
    loose.write_bytes(os.urandom(32))
    loose.chmod(0o644)
    with pytest.raises(UsageError, match="readable by others"):
        load_account(loose)
    with pytest.raises(UsageError, match="does not exist"):
        load_account(tmp_path / "missing.key")
    create_secret(tmp_path / "zero.key", bytes(32))
    with pytest.raises(UsageError, match="not a valid secp256k1"):
        load_account(tmp_path / "zero.key")
    create_secret(tmp_path / "junk.key", b"x" * 40)
    with pytest.raises(UsageError, match="neither 32 raw bytes"):
        load_account(tmp_path / "junk.key")
