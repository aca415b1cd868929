"""Encrypted, content-addressed storage of MRI raw data, per site, on a local disk or S3."""

from cloudmri_kernel.store.objects import HashMismatchError, ObjectNotFound, ObjectStore, StoredObject, VerifyReport

__all__ = ["HashMismatchError", "ObjectNotFound", "ObjectStore", "StoredObject", "VerifyReport"]
