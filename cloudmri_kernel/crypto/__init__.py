"""Cryptography for stored MRI raw data, built only from the primitives of the ``cryptography`` package.

- :mod:`.stream`: streaming AES-256-GCM (STREAM construction) for files of any size.
- :mod:`.envelope`: per-object data keys wrapped by versioned per-site key-encryption keys.
- :mod:`.signing`: Ed25519 provenance signatures over canonical JSON records.
- :mod:`.keyfiles`: private, race-free key files.
"""

from cloudmri_kernel.crypto.envelope import KeyRing, WrappedKey, check_site_name
from cloudmri_kernel.crypto.keyfiles import create_secret, load_or_create_secret, read_secret
from cloudmri_kernel.crypto.signing import SigningKey, sign_record, verify_record
from cloudmri_kernel.crypto.stream import IntegrityError, StreamHeader, decrypt_stream, encrypt_stream, read_header

__all__ = [
    "IntegrityError",
    "KeyRing",
    "SigningKey",
    "StreamHeader",
    "WrappedKey",
    "check_site_name",
    "create_secret",
    "decrypt_stream",
    "encrypt_stream",
    "load_or_create_secret",
    "read_header",
    "read_secret",
    "sign_record",
    "verify_record",
]
