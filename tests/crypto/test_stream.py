"""Streaming AES-256-GCM: layout, roundtrips at every size, and detection of each kind of tampering."""

from __future__ import annotations

import io
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmri_kernel.crypto import IntegrityError, decrypt_stream, encrypt_stream, read_header
from cloudmri_kernel.crypto.stream import HEADER_FIXED, MAGIC, TAG_BYTES
from cloudmri_kernel.errors import InvalidDataError, UsageError

KEY = bytes(range(32))
KEY_ID = "north/3f2a"


def seal(data: bytes, chunk_size: int, key: bytes = KEY) -> bytes:
    return b"".join(encrypt_stream([data], key, KEY_ID, chunk_size))


def unseal(sealed: bytes, key: bytes = KEY) -> bytes:
    return b"".join(decrypt_stream(io.BytesIO(sealed), key))


def chunks_of(sealed: bytes, chunk_size: int) -> tuple[bytes, list[bytes]]:
    """Split a stream into its header and its sealed chunks."""
    start = HEADER_FIXED.size + len(KEY_ID)
    record = chunk_size + TAG_BYTES
    return sealed[:start], [sealed[i:i + record] for i in range(start, len(sealed), record)]


def test_header_layout_by_size_and_offset():
    sealed = seal(b"abc", 1000)
    assert HEADER_FIXED.size == 23
    assert sealed[0:8] == MAGIC == b"CMRIENC1"
    assert sealed[8] == 1  # format version
    assert struct.unpack(">I", sealed[9:13]) == (1000,)
    assert struct.unpack(">H", sealed[21:23]) == (len(KEY_ID),)
    assert sealed[23:23 + len(KEY_ID)] == KEY_ID.encode()
    assert len(sealed) == 23 + len(KEY_ID) + 3 + TAG_BYTES
    handle = io.BytesIO(sealed)
    header = read_header(handle)
    assert (header.version, header.chunk_size, header.key_id) == (1, 1000, KEY_ID)
    assert header.nonce_prefix == sealed[13:21] and header.raw == sealed[:23 + len(KEY_ID)]
    assert handle.tell() == len(header.raw)  # left at the first chunk


@pytest.mark.parametrize("size, chunks", [(0, 1), (1, 1), (16, 1), (17, 2), (32, 2), (33, 3)])
def test_chunk_boundaries(size, chunks):
    """0 bytes is one empty chunk; exactly one chunk stays one chunk; chunk + 1 makes two."""
    data = os.urandom(size)
    sealed = seal(data, 16)
    assert len(sealed) == HEADER_FIXED.size + len(KEY_ID) + size + chunks * TAG_BYTES
    assert unseal(sealed) == data


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=3000), chunk_size=st.integers(1, 400), cuts=st.lists(st.integers(0, 3000)),
       read_size=st.integers(1, 700))
def test_roundtrip_any_size_chunking_and_piece_size(data, chunk_size, cuts, read_size):
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    sealed = b"".join(encrypt_stream(pieces, KEY, KEY_ID, chunk_size))
    chunks = max(1, -(-len(data) // chunk_size))  # an empty stream is one empty chunk
    assert len(sealed) == HEADER_FIXED.size + len(KEY_ID) + len(data) + chunks * TAG_BYTES
    assert unseal(sealed) == data
    from_pieces = [sealed[i:i + read_size] for i in range(0, len(sealed), read_size)]
    assert b"".join(decrypt_stream(from_pieces, KEY)) == data


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=2000), chunk_size=st.integers(1, 300), read_size=st.integers(1, 700))
def test_a_reused_input_buffer_is_copied_before_it_changes(data, chunk_size, read_size):
    """A reader that refills one bytearray (readinto style) must not change chunks still waiting to be sealed."""
    def refill_one_buffer():
        source, buffer = io.BytesIO(data), bytearray(read_size)
        while count := source.readinto(buffer):
            yield memoryview(buffer)[:count]
    sealed = b"".join(encrypt_stream(refill_one_buffer(), KEY, KEY_ID, chunk_size))
    assert unseal(sealed) == data


def test_same_plaintext_twice_gives_different_ciphertexts():
    assert seal(b"x" * 100, 16) != seal(b"x" * 100, 16)  # the nonce prefix is random


@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, 200), chunk_size=st.integers(1, 64), where=st.floats(0, 1, exclude_max=True),
       bit=st.integers(0, 7))
def test_any_flipped_bit_is_detected(size, chunk_size, where, bit):
    sealed = bytearray(seal(os.urandom(size), chunk_size))
    sealed[int(where * len(sealed))] ^= 1 << bit
    with pytest.raises(IntegrityError):
        unseal(bytes(sealed))


def test_flipped_bit_names_the_chunk():
    sealed = bytearray(seal(os.urandom(100), 16))
    header, _ = chunks_of(bytes(sealed), 16)
    sealed[len(header) + 3 * 32 + 5] ^= 0x10  # inside chunk 3
    received = []
    with pytest.raises(IntegrityError, match=f"chunk 3 of '{KEY_ID}' failed authentication"):
        for piece in decrypt_stream(io.BytesIO(bytes(sealed)), KEY):
            received.append(piece)
    assert len(received) == 3  # the chunks before the damage, never the damaged one


def test_truncation_at_a_chunk_boundary_is_detected():
    header, chunks = chunks_of(seal(os.urandom(64), 16), 16)
    assert len(chunks) == 4
    with pytest.raises(IntegrityError, match="ends after chunk 2 .*which is not its last chunk: it was truncated"):
        unseal(header + b"".join(chunks[:3]))
    with pytest.raises(IntegrityError, match="ends after its header"):
        unseal(header)


def test_truncation_inside_a_chunk_is_detected():
    sealed = seal(os.urandom(64), 16)
    with pytest.raises(IntegrityError, match="chunk 3"):
        unseal(sealed[:-1])
    with pytest.raises(IntegrityError, match="shorter than its authentication tag"):
        unseal(sealed[:-(16 + 8)])


def test_reordered_chunks_are_detected():
    header, chunks = chunks_of(seal(os.urandom(64), 16), 16)
    chunks[1], chunks[2] = chunks[2], chunks[1]
    with pytest.raises(IntegrityError, match="chunk 1 .*failed authentication"):
        unseal(header + b"".join(chunks))


def test_chunk_spliced_from_another_stream_with_the_same_key_is_detected():
    header, chunks = chunks_of(seal(os.urandom(64), 16), 16)
    _, other = chunks_of(seal(os.urandom(64), 16), 16)
    with pytest.raises(IntegrityError, match="chunk 2 .*failed authentication"):
        unseal(header + b"".join(chunks[:2] + other[2:3] + chunks[3:]))


@pytest.mark.parametrize("size", [64, 60])
def test_appended_bytes_are_detected(size):
    sealed = seal(os.urandom(size), 16)
    with pytest.raises(IntegrityError, match="chunk 3"):
        unseal(sealed + b"\x00")
    with pytest.raises(IntegrityError):
        unseal(sealed + sealed[-32:])


def test_bytes_after_a_full_last_chunk_are_reported_as_appended():
    sealed = seal(os.urandom(64), 16)
    with pytest.raises(IntegrityError, match="data follows chunk 3 .*which is its last chunk: bytes were appended"):
        unseal(sealed + os.urandom(40))


def test_wrong_key_fails_on_the_first_chunk():
    sealed = seal(b"raw data", 16)
    with pytest.raises(IntegrityError, match="chunk 0 .*or the key is wrong"):
        unseal(sealed, key=bytes(32))


def test_not_a_stream_and_unknown_version():
    with pytest.raises(IntegrityError, match="not an encrypted Cloud-MRI stream: it starts with b'\\\\x89HDF"):
        unseal(b"\x89HDF\r\n\x1a\n" + bytes(100))
    sealed = bytearray(seal(b"abc", 16))
    sealed[8] = 7
    with pytest.raises(IntegrityError, match="format version 7; .*reads version 1: upgrade"):
        unseal(bytes(sealed))
    with pytest.raises(IntegrityError, match="header is truncated"):
        unseal(MAGIC + b"\x01")
    assert issubclass(IntegrityError, InvalidDataError) and IntegrityError.exit_code == 1


def test_bad_arguments_are_usage_errors():
    with pytest.raises(UsageError, match="has 16 bytes; AES-256 needs 32"):
        seal(b"x", 16, key=bytes(16))
    with pytest.raises(UsageError, match="chunk size 0 must be between 1 and"):
        seal(b"x", 0)
