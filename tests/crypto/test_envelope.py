"""Envelope encryption: wrap/unwrap bound to a context, KEK rotation and retirement, private key files."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from cloudmri_kernel.crypto import IntegrityError, KeyRing, WrappedKey
from cloudmri_kernel.errors import UsageError

DATA_KEY = bytes(range(100, 132))
CONTEXT = b"north/" + b"ab" * 32


@pytest.fixture
def ring(tmp_path) -> KeyRing:
    return KeyRing(tmp_path / "kek")


def test_wrap_unwrap_roundtrip(ring, tmp_path):
    wrapped = ring.wrap("north", DATA_KEY, CONTEXT)
    assert wrapped.kek_id == "north/v1"
    assert len(wrapped.wrapped) == 12 + 32 + 16  # nonce, encrypted key, tag
    assert DATA_KEY not in wrapped.wrapped
    assert ring.unwrap(wrapped, CONTEXT) == DATA_KEY
    assert ring.wrap("north", DATA_KEY, CONTEXT).wrapped != wrapped.wrapped  # fresh nonce each time


def test_key_files_are_private(ring, tmp_path):
    ring.current("north")
    kek = tmp_path / "kek" / "north" / "v1.key"
    assert len(kek.read_bytes()) == 32
    assert stat.S_IMODE(kek.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "kek").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "kek" / "north").stat().st_mode) == 0o700


def test_wrong_context_or_changed_bytes_fail(ring):
    wrapped = ring.wrap("north", DATA_KEY, CONTEXT)
    with pytest.raises(IntegrityError, match="cannot unwrap a data key with KEK north/v1: it was wrapped for another"):
        ring.unwrap(wrapped, b"north/" + b"cd" * 32)
    damaged = WrappedKey(wrapped.kek_id, wrapped.wrapped[:-1] + bytes([wrapped.wrapped[-1] ^ 1]))
    with pytest.raises(IntegrityError):
        ring.unwrap(damaged, CONTEXT)


def test_a_wrapped_key_does_not_move_to_another_site(ring):
    ring.current("south")
    wrapped = ring.wrap("north", DATA_KEY, CONTEXT)
    with pytest.raises(IntegrityError):
        ring.unwrap(WrappedKey("south/v1", wrapped.wrapped), CONTEXT)


def test_rotation_keeps_old_wraps_readable_and_new_wraps_use_the_new_version(ring):
    old = ring.wrap("north", DATA_KEY, CONTEXT)
    assert ring.rotate("north") == "north/v2"
    assert ring.current("north") == "north/v2"
    new = ring.wrap("north", DATA_KEY, CONTEXT)
    assert new.kek_id == "north/v2"
    assert ring.unwrap(old, CONTEXT) == ring.unwrap(new, CONTEXT) == DATA_KEY
    assert ring.versions("north") == [1, 2]
    assert ring.versions("south") == []


def test_retire_deletes_only_when_asked_and_never_the_current_key(ring, tmp_path):
    old = ring.wrap("north", DATA_KEY, CONTEXT)
    with pytest.raises(UsageError, match="v1 is the current KEK of site 'north': rotate before retiring it"):
        ring.retire("north", 1)
    ring.rotate("north")
    with pytest.raises(UsageError, match=r"site 'north' has no KEK version 5 \(it has \[1, 2\]\)"):
        ring.retire("north", 5)
    leftover = tmp_path / "kek" / "north" / ".v1.key.0123456789abcdef.tmp"
    os.link(tmp_path / "kek" / "north" / "v1.key", leftover)  # as a creator killed before its clean-up leaves it
    ring.retire("north", 1)
    assert ring.versions("north") == [2]
    assert sorted(os.listdir(tmp_path / "kek" / "north")) == ["v2.key"]
    with pytest.raises(UsageError, match="KEK north/v1 is not in the key ring .retired..: restore v1.key"):
        ring.unwrap(old, CONTEXT)
    assert ring.rotate("north") == "north/v3"  # versions are never reused


def test_kek_readable_by_others_is_refused(ring, tmp_path):
    wrapped = ring.wrap("north", DATA_KEY, CONTEXT)
    os.chmod(tmp_path / "kek" / "north" / "v1.key", 0o644)
    with pytest.raises(UsageError, match=r"KEK north/v1 is readable by others \(mode 644\): chmod 600 it"):
        ring.unwrap(wrapped, CONTEXT)


@pytest.mark.parametrize("site", ["../x", "..", ".", "a/b", "", "x" * 65, "é"])
def test_site_names_that_could_leave_the_directory_are_refused(ring, tmp_path, site):
    with pytest.raises(UsageError, match="site name"):
        ring.current(site)
    with pytest.raises(UsageError):
        ring.unwrap(WrappedKey(f"{site}/v1", bytes(60)), CONTEXT)
    assert not (tmp_path / "x").exists() and not (tmp_path / "v1.key").exists()


def test_concurrent_first_use_creates_one_key(ring, tmp_path):
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: ring.current("north"), range(32)))
    assert ids == {"north/v1"}
    assert os.listdir(tmp_path / "kek" / "north") == ["v1.key"]
