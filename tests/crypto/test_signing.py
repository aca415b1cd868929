"""Ed25519 provenance signatures over canonical JSON: roundtrip, tampering, key files, a known answer."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloudmri_kernel.crypto import SigningKey, sign_record, verify_record
from cloudmri_kernel.crypto.signing import canonical_json
from cloudmri_kernel.errors import UsageError

RECORD = {"site": "north", "sha256": "ab" * 32, "size": 1048576, "note": "Müller scan", "tags": [1, True, None]}
# RFC 8032 section 7.1, TEST 1: a published Ed25519 key pair, so the signature below can be recomputed anywhere.
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_EMPTY_MESSAGE_SIGNATURE = ("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc"
                                   "61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")


@pytest.fixture
def key(tmp_path) -> SigningKey:
    return SigningKey.load_or_create(tmp_path / "keys" / "provenance.pem")


def test_key_file_is_private_pkcs8_and_reloads(key, tmp_path):
    path = tmp_path / "keys" / "provenance.pem"
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = SigningKey.load_or_create(path)
    assert again.key_id == key.key_id and again.public_key_pem() == key.public_key_pem()
    raw = serialization.load_pem_public_key(key.public_key_pem().encode()).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key.key_id == hashlib.sha256(raw).hexdigest()[:16]


def test_canonical_json_sorts_keys_without_spaces_in_utf8():
    assert canonical_json({"b": [1, "é"], "a": None, "c": {"z": 1.5, "y": False}}) == \
        '{"a":null,"b":[1,"é"],"c":{"y":false,"z":1.5}}'.encode()


def test_known_answer_with_the_rfc8032_key():
    key = SigningKey(Ed25519PrivateKey.from_private_bytes(RFC8032_SECRET))
    assert key.sign(b"").hex() == RFC8032_EMPTY_MESSAGE_SIGNATURE
    assert key.key_id == hashlib.sha256(RFC8032_PUBLIC).hexdigest()[:16] == "21fe31dfa154a261"
    signed = sign_record({"sha256": "00" * 32, "site": "north"}, key)
    # Ed25519 is deterministic: this pins the canonical form (sorted keys, key_id included, no spaces).
    assert signed["signature"] == ("/8PHQFI+4G4+lYkELvFudPusgnJRWoQz8twu+s9InyP+t9QRY4nOzNuFQ41A580ge7YNCLmDyKV0J"
                                   "BrpJlaOBg==")
    message = ('{"key_id":"21fe31dfa154a261","sha256":"' + "00" * 32 + '","site":"north"}').encode()
    assert base64.b64decode(signed["signature"]) == key.sign(message)


def test_roundtrip_also_through_json_and_with_other_key_order(key):
    signed = sign_record(RECORD, key)
    assert signed["key_id"] == key.key_id and len(base64.b64decode(signed["signature"])) == 64
    assert "signature" not in RECORD  # the input is not modified
    assert verify_record(signed, key.public_key_pem())
    assert verify_record(json.loads(json.dumps(signed)), key.public_key_pem())
    assert verify_record(dict(reversed(list(signed.items()))), key.public_key_pem())


@pytest.mark.parametrize("tamper", [
    lambda r: r.update(size=1048577),
    lambda r: r.update(extra="x"),
    lambda r: r.pop("note"),
    lambda r: r["tags"].append(2),
    lambda r: r.update(key_id="0" * 16),
    lambda r: r.pop("signature"),
    lambda r: r.update(signature=r["signature"][:-4] + "AAA="),
    lambda r: r.update(signature="not base64!"),
    lambda r: r.update(signature=42),
])
def test_any_tampering_fails_verification(key, tamper):
    signed = json.loads(json.dumps(sign_record(RECORD, key)))
    tamper(signed)
    assert verify_record(signed, key.public_key_pem()) is False


def test_another_key_does_not_verify(key, tmp_path):
    other = SigningKey.load_or_create(tmp_path / "other.pem")
    assert verify_record(sign_record(RECORD, key), other.public_key_pem()) is False


def test_records_that_cannot_be_signed(key):
    with pytest.raises(UsageError, match="already has the field.s. signature"):
        sign_record({"signature": "x"}, key)
    with pytest.raises(UsageError, match="cannot be signed"):
        sign_record({"value": float("nan")}, key)
    with pytest.raises(UsageError, match="cannot be signed"):
        sign_record({"value": b"bytes"}, key)


def test_bad_key_files_are_refused(tmp_path):
    path = tmp_path / "ec.pem"
    path.write_bytes(generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(path, 0o600)
    with pytest.raises(UsageError, match="the signing key is of type ECPrivateKey, not Ed25519"):
        SigningKey.load_or_create(path)
    os.chmod(path, 0o644)
    with pytest.raises(UsageError, match="signing key is readable by others"):
        SigningKey.load_or_create(path)
    with pytest.raises(UsageError, match="not a PEM public key"):
        verify_record({}, "garbage")
