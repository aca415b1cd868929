"""Streaming authenticated encryption: AES-256-GCM over fixed-size chunks, after the STREAM construction.

A stream is a header followed by chunks. Every chunk but the last holds ``chunk_size`` bytes of plaintext;
each is sealed separately with AES-256-GCM, so memory stays bounded by the chunk size however long the
stream is, and a reader can stop at the first bad chunk::

    header = magic "CMRIENC1" (8 bytes) | version (u8) | chunk_size (u32) | nonce_prefix (8 bytes)
             | key_id length (u16) | key_id (UTF-8)                          all integers big-endian
    chunk i = AES-256-GCM(key, nonce = nonce_prefix || u32(i),
                          data = plaintext[i * chunk_size : (i + 1) * chunk_size],
                          associated data = header || u32(i) || u8(is last chunk))   -> ciphertext || 16-byte tag

The chunk index in the nonce and associated data detects reordered chunks; the header (with its random
nonce prefix) in the associated data detects chunks spliced in from another stream, even one under the same
key; the "last chunk" flag detects a stream cut at a chunk boundary and bytes appended after the end. An
empty plaintext is one empty last chunk, so an empty stream is still authenticated.

References:
    Hoang VT, Reyhanitabar R, Rogaway P, Vizár D. Online Authenticated-Encryption and its Nonce-Reuse
    Misuse-Resistance. CRYPTO 2015, LNCS 9215, pp. 493-517 (the STREAM construction, section 7).
    Dworkin M. Recommendation for Block Cipher Modes of Operation: Galois/Counter Mode (GCM) and GMAC.
    NIST SP 800-38D, 2007.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cloudmri_kernel.errors import InvalidDataError, UsageError

MAGIC = b"CMRIENC1"
VERSION = 1
KEY_BYTES = 32
TAG_BYTES = 16
NONCE_PREFIX_BYTES = 8
DEFAULT_CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 1 << 26
MAX_KEY_ID_BYTES = 1024
MAX_CHUNKS = 1 << 32
HEADER_FIXED = struct.Struct(">8sBI8sH")  # magic, version, chunk size, nonce prefix, key id length
_CHUNK_SUFFIX = struct.Struct(">I?")  # chunk index, last-chunk flag; appended to the header as associated data


class IntegrityError(InvalidDataError):
    """Encrypted or stored data failed its integrity check: altered, truncated, extended or under another key."""


@dataclass(frozen=True)
class StreamHeader:
    """The header of an encrypted stream; ``raw`` is its exact bytes, authenticated with every chunk."""

    version: int
    chunk_size: int
    nonce_prefix: bytes
    key_id: str
    raw: bytes

    @classmethod
    def new(cls, key_id: str, chunk_size: int) -> StreamHeader:
        """A header with a fresh random nonce prefix."""
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise UsageError(f"chunk size {chunk_size} must be between 1 and {MAX_CHUNK_SIZE} bytes")
        encoded = key_id.encode()
        if len(encoded) > MAX_KEY_ID_BYTES:
            raise UsageError(f"key id of {len(encoded)} bytes is longer than {MAX_KEY_ID_BYTES}")
        prefix = os.urandom(NONCE_PREFIX_BYTES)
        raw = HEADER_FIXED.pack(MAGIC, VERSION, chunk_size, prefix, len(encoded)) + encoded
        return cls(VERSION, chunk_size, prefix, key_id, raw)


def read_header(fileobj: BinaryIO) -> StreamHeader:
    """Read and check the header at the current position of ``fileobj``, leaving it at the first chunk.

    Raises:
        IntegrityError: The data does not start with a valid header of a supported version.
    """
    return _read_header(_Reader(fileobj))


def encrypt_stream(chunks: Iterable[bytes], key: bytes, key_id: str,
                   chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
    """Encrypt a byte stream given in pieces of any size; yields the header, then one sealed chunk at a time.

    Memory use is bounded by ``chunk_size`` plus the largest input piece.

    Args:
        chunks: The plaintext, in pieces of any size (a file read in blocks, a network stream, ...).
        key: 32 random bytes, e.g. ``AESGCM.generate_key(256)``; use each key for one stream or a few.
        key_id: Names the key for whoever decrypts (stored in the clear, authenticated).
        chunk_size: Plaintext bytes per sealed chunk, 1 byte to 64 MiB.

    Example:
        >>> key = AESGCM.generate_key(256)
        >>> sealed = b"".join(encrypt_stream([b"k-space"], key, "demo", chunk_size=4))
        >>> b"".join(decrypt_stream([sealed], key))
        b'k-space'
    """
    cipher = _cipher(key)
    header = StreamHeader.new(key_id, chunk_size)
    yield header.raw
    # A chunk is sealed as "not last" only once another one is known to follow it.
    index, held = 0, None
    for chunk in _rechunk(chunks, chunk_size):
        if held is not None:
            yield _seal(cipher, header, index, held, last=False)
            index += 1
        held = chunk
    yield _seal(cipher, header, index, b"" if held is None else held, last=True)


def decrypt_stream(ciphertext: BinaryIO | Iterable[bytes], key: bytes) -> Iterator[bytes]:
    """Decrypt and authenticate a stream made by :func:`encrypt_stream`; yields the plaintext chunk by chunk.

    Each chunk is checked before it is yielded, and the end of the stream is checked after the last one, so a
    consumer that reads to the end has received exactly what was encrypted.

    Args:
        ciphertext: A binary file object positioned at the header, or the stream in pieces of any size.
        key: The 32-byte key it was encrypted with.

    Raises:
        IntegrityError: Bad header, a chunk that fails authentication (the message names its index and what
            probably happened), a truncated stream or data after the last chunk.
    """
    cipher = _cipher(key)
    reader = _Reader(ciphertext)
    header = _read_header(reader)
    record = header.chunk_size + TAG_BYTES
    following = reader.read(record)
    if not following:
        raise IntegrityError(f"the encrypted stream '{header.key_id}' ends after its header: it was truncated")
    for index in range(MAX_CHUNKS):
        current = following
        following = reader.read(record) if len(current) == record else b""
        last = not following
        if len(current) < TAG_BYTES:
            raise IntegrityError(f"chunk {index} of '{header.key_id}' is shorter than its authentication tag: "
                                 "the stream was truncated")
        yield _open(cipher, header, index, current, last)
        if last:
            return
    raise IntegrityError(f"the encrypted stream '{header.key_id}' has more than {MAX_CHUNKS} chunks")


def _rechunk(pieces: Iterable[bytes], size: int) -> Iterator[bytes | memoryview]:
    """The concatenated pieces in ``size``-byte chunks, the last one shorter (and omitted if empty).

    Whole chunks inside a ``bytes`` piece are passed on as views, without a copy: at 1 MiB chunks a copy
    costs about a tenth of the time of encrypting and hashing. Other buffers are copied first, since their
    owner may change them once the next piece is asked for.
    """
    partial = bytearray()
    for piece in pieces:
        view = memoryview(piece if isinstance(piece, bytes) else bytes(piece))
        start = 0
        if partial:
            start = min(size - len(partial), len(view))
            partial += view[:start]
            if len(partial) < size:
                continue
            yield bytes(partial)
            partial.clear()
        while len(view) - start >= size:
            yield view[start:start + size]
            start += size
        partial += view[start:]
    if partial:
        yield bytes(partial)


def _cipher(key: bytes) -> AESGCM:
    if len(key) != KEY_BYTES:
        raise UsageError(f"the key has {len(key)} bytes; AES-256 needs {KEY_BYTES}")
    return AESGCM(key)


def _nonce(header: StreamHeader, index: int) -> bytes:
    return header.nonce_prefix + index.to_bytes(4, "big")


def _seal(cipher: AESGCM, header: StreamHeader, index: int, plaintext, last: bool) -> bytes:
    if index >= MAX_CHUNKS:
        raise UsageError(f"the stream has more than {MAX_CHUNKS} chunks of {header.chunk_size} bytes: "
                         "use a larger chunk size")
    return cipher.encrypt(_nonce(header, index), plaintext, header.raw + _CHUNK_SUFFIX.pack(index, last))


def _open(cipher: AESGCM, header: StreamHeader, index: int, sealed: bytes, last: bool) -> bytes:
    nonce = _nonce(header, index)
    try:
        return cipher.decrypt(nonce, sealed, header.raw + _CHUNK_SUFFIX.pack(index, last))
    except InvalidTag:
        pass
    name = f"chunk {index} of '{header.key_id}'"
    try:
        # Only to say what happened: the chunk is authentic, but its position in the stream is not.
        cipher.decrypt(nonce, sealed, header.raw + _CHUNK_SUFFIX.pack(index, not last))
    except InvalidTag:
        raise IntegrityError(f"{name} failed authentication: it was altered, cut or extended, moved from another "
                             "position or stream, or the key is wrong") from None
    if last:
        raise IntegrityError(f"the stream ends after {name}, which is not its last chunk: it was truncated")
    raise IntegrityError(f"data follows {name}, which is its last chunk: bytes were appended")


def _read_header(reader: _Reader) -> StreamHeader:
    fixed = reader.read(HEADER_FIXED.size)
    if fixed[:len(MAGIC)] != MAGIC:
        raise IntegrityError(f"not an encrypted Cloud-MRI stream: it starts with {fixed[:len(MAGIC)]!r}, "
                             f"not {MAGIC!r}")
    if len(fixed) < HEADER_FIXED.size:
        raise IntegrityError("the encrypted stream's header is truncated")
    _, version, chunk_size, prefix, key_id_length = HEADER_FIXED.unpack(fixed)
    if version != VERSION:
        raise IntegrityError(f"the encrypted stream has format version {version}; this version of "
                             f"cloudmri reads version {VERSION}: upgrade it")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE or key_id_length > MAX_KEY_ID_BYTES:
        raise IntegrityError(f"the encrypted stream's header is damaged (chunk size {chunk_size}, "
                             f"key id length {key_id_length})")
    encoded = reader.read(key_id_length)
    if len(encoded) < key_id_length:
        raise IntegrityError("the encrypted stream's header is truncated")
    try:
        key_id = encoded.decode()
    except UnicodeDecodeError:
        raise IntegrityError("the encrypted stream's header is damaged (key id is not UTF-8)") from None
    return StreamHeader(version, chunk_size, prefix, key_id, fixed + encoded)


class _Reader:
    """Reads exactly ``n`` bytes (fewer only at the end) from a file object or from pieces of any size."""

    def __init__(self, source: BinaryIO | Iterable[bytes]):
        self._read = source.read if hasattr(source, "read") else None
        self._pieces = None if self._read else iter(source)
        self._buffer = bytearray()

    def _next_piece(self, n: int) -> bytes:
        if self._read:
            return self._read(n)
        return next(self._pieces, b"")

    def read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            piece = self._next_piece(n - len(self._buffer))
            if not piece:
                break
            if not self._buffer and len(piece) == n:
                return bytes(piece)  # the common case: no copy through the buffer
            self._buffer += piece
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

