"""Key files: private modes, refused when others can read them, created once even under races."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from cloudmri_kernel.crypto import create_secret, load_or_create_secret, read_secret
from cloudmri_kernel.errors import UsageError


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_create_secret_is_private_with_private_new_directories(tmp_path):
    path = tmp_path / "a" / "b" / "k.key"
    create_secret(path, b"s" * 40)
    assert path.read_bytes() == b"s" * 40
    assert mode(path) == 0o600
    assert mode(tmp_path / "a") == 0o700 and mode(tmp_path / "a" / "b") == 0o700
    assert os.listdir(path.parent) == ["k.key"]  # no temporary file left


def test_create_secret_never_replaces_an_existing_one(tmp_path):
    path = tmp_path / "k.key"
    create_secret(path, b"first")
    with pytest.raises(FileExistsError):
        create_secret(path, b"second")
    assert path.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["k.key"]


def test_read_secret_refuses_files_others_can_read(tmp_path):
    path = tmp_path / "k.key"
    create_secret(path, os.urandom(32))
    os.chmod(path, 0o644)
    with pytest.raises(UsageError, match=r"the key file is readable by others \(mode 644\): chmod 600 it"):
        read_secret(path, 32)
    os.chmod(path, 0o640)
    with pytest.raises(UsageError, match=r"the site key is readable by others \(mode 640\)"):
        read_secret(path, 32, what="site key")
    os.chmod(path, 0o600)
    assert len(read_secret(path, 32)) == 32


def test_read_secret_too_short_or_missing(tmp_path):
    path = tmp_path / "k.key"
    create_secret(path, b"short")
    with pytest.raises(UsageError, match="has 5 bytes, needs at least 32"):
        read_secret(path, 32)
    with pytest.raises(UsageError, match="the key file does not exist"):
        read_secret(tmp_path / "missing.key", 32)


def test_load_or_create_under_a_race_agrees_on_one_secret(tmp_path):
    path = tmp_path / "keys" / "race.key"
    with ThreadPoolExecutor(16) as pool:
        secrets = list(pool.map(lambda _: load_or_create_secret(path, 32), range(64)))
    assert len(set(secrets)) == 1 and len(secrets[0]) == 32
    assert path.read_bytes() == secrets[0]
    assert os.listdir(path.parent) == ["race.key"]
