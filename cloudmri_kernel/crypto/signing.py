"""Provenance signatures: Ed25519 over a canonical JSON form of a record.

A record (for example "site X stored object SHA at time T from file F") is signed as its canonical JSON:
keys sorted, no insignificant whitespace (separators ``,`` and ``:``), UTF-8 without escaping non-ASCII
characters, NaN and infinities refused. That is the canonical form of RFC 8785 for records of strings,
integers, booleans, null, lists and objects; floats are written as Python writes them, and keys are sorted by
code point rather than by UTF-16 unit, which differ from RFC 8785 only for characters beyond the BMP.

References:
    Josefsson S, Liusvaara I. Edwards-Curve Digital Signature Algorithm (EdDSA). RFC 8032, 2017.
    Rundgren A, Jordan B, Erdtman S. JSON Canonicalization Scheme (JCS). RFC 8785, 2020.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cloudmri_kernel.crypto.keyfiles import create_secret, read_secret
from cloudmri_kernel.errors import UsageError

SIGNATURE_FIELDS = ("signature", "key_id")


def canonical_json(record: Any) -> bytes:
    """The canonical UTF-8 JSON of ``record`` (sorted keys, no spaces); raises UsageError if it is not JSON."""
    try:
        return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise UsageError(f"the record cannot be signed: {exc}") from None


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of SHA-256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class SigningKey:
    """An Ed25519 private key kept in a PKCS#8 PEM file (mode 0600)."""

    def __init__(self, private_key: Ed25519PrivateKey):
        self._private = private_key
        self.key_id = key_id_of(private_key.public_key())

    @classmethod
    def load_or_create(cls, path: str | Path) -> SigningKey:
        """The key in ``path``, generated there first if the file does not exist.

        Raises:
            UsageError: The file is readable by others, or is not an unencrypted Ed25519 PKCS#8 PEM key.
        """
        path = Path(path)
        if not path.exists():
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            try:
                create_secret(path, pem)
            except FileExistsError:
                pass  # another process created it first
        try:
            private_key = serialization.load_pem_private_key(read_secret(path, 1, what="signing key"), None)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"not an unencrypted PKCS#8 PEM private key ({exc})", path) from None
        if not isinstance(private_key, Ed25519PrivateKey):
            raise UsageError(f"the signing key is of type {type(private_key).__name__}, not Ed25519", path)
        return cls(private_key)

    def public_key_pem(self) -> str:
        """The public key as a SubjectPublicKeyInfo PEM, for whoever verifies the records."""
        return self._private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._private.sign(message)


def sign_record(record: dict, key: SigningKey) -> dict:
    """A copy of ``record`` with ``key_id`` and ``signature`` (base64) added; both are covered by the signature.

    Raises:
        UsageError: The record already has one of those fields, or holds values that are not JSON.
    """
    taken = [name for name in SIGNATURE_FIELDS if name in record]
    if taken:
        raise UsageError(f"the record already has the field(s) {', '.join(taken)}, which signing adds")
    signed = {**record, "key_id": key.key_id}
    signed["signature"] = base64.b64encode(key.sign(canonical_json(signed))).decode()
    return signed


def verify_record(signed: dict, public_key_pem: str | bytes) -> bool:
    """True only if ``signed`` is, field for field, a record signed by the key of ``public_key_pem``.

    Raises:
        UsageError: ``public_key_pem`` is not an Ed25519 public key in PEM form.
    """
    public_key = load_public_key(public_key_pem)
    if not isinstance(signed, dict) or not isinstance(signed.get("signature"), str):
        return False
    if signed.get("key_id") != key_id_of(public_key):
        return False
    body = {name: value for name, value in signed.items() if name != "signature"}
    try:
        signature = base64.b64decode(signed["signature"], validate=True)
        public_key.verify(signature, canonical_json(body))
    except (binascii.Error, InvalidSignature, UsageError):
        return False
    return True


def load_public_key(public_key_pem: str | bytes) -> Ed25519PublicKey:
    """Parse a SubjectPublicKeyInfo PEM that must hold an Ed25519 key."""
    data = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
    try:
        public_key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise UsageError(f"not a PEM public key ({exc})") from None
    if not isinstance(public_key, Ed25519PublicKey):
        raise UsageError(f"the public key is of type {type(public_key).__name__}, not Ed25519")
    return public_key
