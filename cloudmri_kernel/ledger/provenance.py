"""Provenance of a catalogued dataset: its stored object re-hashed and checked against the ledger's anchor.

The hash is recomputed from the encrypted object in the store (decrypted and authenticated chunk by chunk), not
taken from the catalog or from the object's address, so a store whose files were replaced, re-encrypted or
damaged is caught and both hashes are named: the one the ledger anchored and the one the store now holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudmri_kernel.crypto import IntegrityError
from cloudmri_kernel.ledger.client import Ledger, Verification, VerificationFailed
from cloudmri_kernel.ledger.queue import Record
from cloudmri_kernel.store import ObjectStore


@dataclass(frozen=True)
class DatasetProvenance:
    """What the ledger says about a dataset: ``state`` is ``anchored`` (with its checked ``verification``) or
    ``queued`` (waiting for its batch to be confirmed)."""

    dataset_id: str
    site: str
    sha256: str
    state: str
    queued_at: float
    verification: Verification | None


def dataset_record(ledger: Ledger, dataset_id: str) -> Record:
    """The ledger record of a catalogued dataset (kind ``dataset``, queued under its catalog ID).

    Raises:
        VerificationFailed: this ledger never queued the dataset.
    """
    records = [r for r in ledger.queue.history(dataset_id) if r.kind == "dataset" and r.dataset_id == dataset_id]
    if not records:
        raise VerificationFailed(f"dataset {dataset_id} was never queued for anchoring by the ledger in "
                                 f"{ledger.directory}")
    return records[-1]


def verify_dataset(ledger: Ledger, store: ObjectStore, dataset_id: str, site: str, address: str
                   ) -> DatasetProvenance:
    """Re-hash the dataset's stored object and check it against the ledger, then the ledger against the chain.

    Args:
        ledger: the service's ledger (its queue holds the dataset's record and inclusion proof).
        store: the encrypted object store.
        dataset_id: the catalog ID.
        site, address: where the catalog says the dataset's object is (its site and SHA-256 address).

    Raises:
        VerificationFailed: ``TAMPERED``: the stored object's hash is not the anchored one (both are named), or it
            fails authentication; or the record's proof does not lead to the on-chain root.
        ChainMismatch, NodeUnavailable: the chain lost the anchor, or the node does not answer.
    """
    record = dataset_record(ledger, dataset_id)
    batch = ledger.queue.batch(record.batch_id) if record.batch_id else None
    where = (f" in block {batch.block_number}, transaction {batch.tx_hash}"
             if batch is not None and batch.state == "confirmed" else " (its anchor is still queued)")
    try:
        actual = store.plaintext_sha256(site, address)
    except IntegrityError as exc:
        raise VerificationFailed(
            f"TAMPERED: dataset {dataset_id}: the ledger anchored sha256 {record.object_hash}{where}, but the "
            f"stored object {site}/{address} fails authentication ({exc}), so it no longer holds that data; the "
            f"stored ciphertext's sha256 is {store.ciphertext_sha256(site, address)}") from None
    if actual != record.object_hash:
        raise VerificationFailed(
            f"TAMPERED: dataset {dataset_id}: the stored object {site}/{address} decrypts to sha256 {actual}, but "
            f"the ledger anchored sha256 {record.object_hash}{where}")
    if batch is None or batch.state != "confirmed":
        return DatasetProvenance(dataset_id, site, actual, "queued", record.queued_at, None)
    return DatasetProvenance(dataset_id, site, actual, "anchored", record.queued_at, ledger.verify_record(record))
