"""The ledger against a real anvil node: anchoring in batches, proofs checked on chain, tampering, outages,
restarts, chain replacement, and who may anchor."""

from __future__ import annotations

import hashlib
import json

import pytest

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.ledger import ChainMismatch, NodeUnavailable, TransactionRejected, VerificationFailed
from cloudmri_kernel.ledger.client import record_leaf
from cloudmri_kernel.ledger.compiler import EVM_VERSION, compile_contract
from cloudmri_kernel.ledger.merkle import MerkleTree
from cloudmri_kernel.ledger.node import AnvilNode
from cloudmri_kernel.ledger.testing import ledger_for


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_batches_of_records_are_anchored_and_verified(admin):
    records = admin.add_many([("series", sha(f"s{i}"), "ds-1", None) for i in range(10)])
    anchored = admin.flush()
    assert [a.count for a in anchored] == [4, 4, 2]  # batch_size 4: three transactions for ten records
    assert len({a.tx_hash for a in anchored}) == 3
    for record in records:
        check = admin.verify(record.object_hash)
        assert check.kind == "series" and check.dataset_id == "ds-1" and check.site == "charite"
        assert check.submitter == admin.address
        assert check.block_number in {a.block_number for a in anchored}
        assert len(check.proof) <= 2  # log2 of a batch of 4
    onchain_count = admin._contract("provenance").functions.batch_count().call()
    assert onchain_count == 3
    assert admin.flush() == []  # nothing left to do


def test_the_contract_checks_proofs_itself_and_rejects_forgeries(admin):
    records = admin.add_many([("label", sha(f"l{i}"), "", None) for i in range(3)])
    admin.flush()
    record = admin.queue.find(records[2].object_hash)[0]
    registry = admin._contract("provenance").functions
    leaf = record_leaf(record.kind, record.object_hash, record.dataset_id)
    batch_id = bytes.fromhex(record.batch_id)
    assert registry.is_included(batch_id, leaf, record.leaf_index, list(record.proof)).call()
    assert not registry.is_included(batch_id, record_leaf("label", sha("forged")), record.leaf_index,
                                    list(record.proof)).call()
    assert not registry.is_included(batch_id, leaf, 0, list(record.proof)).call()
    assert not registry.is_included(batch_id, leaf, record.leaf_index, list(record.proof)[:-1]).call()
    assert not registry.is_included(bytes(32), leaf, record.leaf_index, list(record.proof)).call()


def test_a_forged_local_proof_fails_loudly(admin):
    record = admin.add("model", sha("weights"))
    admin.add_many([("model", sha(f"w{i}"), "", None) for i in range(3)])
    admin.flush()
    stored = admin.queue.find(record.object_hash)[0]
    forged = b"".join(bytes(32) for _ in stored.proof)
    admin.queue._db.execute("UPDATE records SET proof = ? WHERE id = ?", (forged, stored.id))
    with pytest.raises(VerificationFailed, match=f"inclusion proof of sha256 {record.object_hash}"):
        admin.verify(record.object_hash)


def test_a_tampered_file_names_the_hash_that_differs(admin, tmp_path):
    scan = tmp_path / "scan.h5"
    scan.write_bytes(bytes(range(256)) * 64)
    anchored_hash = admin.anchor_files([scan])[0].object_hash
    assert admin.verify_file(scan).object_hash == anchored_hash
    data = bytearray(scan.read_bytes())
    data[1000] ^= 0x01
    scan.write_bytes(bytes(data))
    tampered = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(VerificationFailed) as failure:
        admin.verify_file(scan)
    message = str(failure.value)
    assert "TAMPERED" in message and tampered in message and anchored_hash in message and "block" in message


def test_unregistered_accounts_and_non_admins_are_rejected_by_the_contract(admin, node, tmp_path):
    outsider = ledger_for(tmp_path / "outsider", node.url)
    outsider.attach(admin.deployment["provenance"], admin.deployment["grants"])
    outsider.add("dataset", sha("not mine"))
    with pytest.raises(TransactionRejected, match="the sender is not a registered site account"):
        outsider.flush()
    assert outsider.queue.batches(("pending",))  # kept, to be sent once the account is registered
    with pytest.raises(TransactionRejected, match="only the consortium admin registers sites"):
        outsider.register_site(outsider.address, "rogue")
    admin.register_site(outsider.address, "mhh")
    assert [a.count for a in outsider.flush()] == [1]
    assert outsider.verify(sha("not mine")).site == "mhh"
    with pytest.raises(TransactionRejected, match="already signs for a site"):
        admin.register_site(outsider.address, "other")


def test_the_queue_survives_a_restart_of_the_client(node, admin, tmp_path):
    admin.add_many([("report", sha(f"r{i}"), "ds-9", None) for i in range(3)])
    admin.close()
    reopened = ledger_for(tmp_path / "admin", node.url)
    assert len(reopened.queue.waiting()) == 3
    assert sum(a.count for a in reopened.flush()) == 3
    assert reopened.verify(sha("r1")).dataset_id == "ds-9"
    reopened.close()


def test_node_down_keeps_records_and_a_restarted_node_keeps_the_chain(node, admin):
    admin.add("dataset", sha("before"), "ds-old")
    admin.flush()
    node.stop()  # a clean stop writes anvil's state file
    admin.add("dataset", sha("during"), "ds-new")
    with pytest.raises(NodeUnavailable, match="does not answer"):
        admin.flush()
    assert [b.count for b in admin.queue.batches(("pending",))] == [1]
    node.start()
    assert admin.check_chain().ok
    assert admin.verify(sha("before")).dataset_id == "ds-old"  # anchored before the restart
    assert [a.count for a in admin.flush()] == [1]
    assert admin.verify(sha("during")).dataset_id == "ds-new"


def test_a_replaced_chain_is_detected_and_reanchored(node, admin):
    admin.add_many([("series", sha(f"x{i}"), "ds-2", None) for i in range(5)])
    admin.flush()
    node.kill()
    node.state_file.unlink(missing_ok=True)  # killed within its dump interval: maybe never written
    fresh = AnvilNode(node.directory, node.port)  # a new, empty chain on the same URL
    fresh.start()
    try:
        report = admin.check_chain()
        assert report.replaced and len(report.missing) == 2 and "was replaced" in report.problems[0]
        with pytest.raises(ChainMismatch, match="was the chain replaced"):
            admin.verify(sha("x0"))
        assert sum(a.count for a in admin.reanchor("charite")) == 5
        assert admin.check_chain().ok
        assert admin.verify(sha("x4")).dataset_id == "ds-2"
    finally:
        fresh.kill()


def test_a_batch_closes_at_its_size_or_after_its_delay(node, tmp_path):
    now = [1000.0]
    ledger = ledger_for(tmp_path / "timed", node.url, batch_size=3, batch_delay_s=30, clock=lambda: now[0])
    ledger.deploy("charite")
    ledger.add_many([("label", sha(f"t{i}"), "", None) for i in range(2)])
    assert ledger.flush_due() == []
    now[0] += 29
    assert ledger.flush_due() == []
    now[0] += 1
    assert [a.count for a in ledger.flush_due()] == [2]
    ledger.add_many([("label", sha(f"u{i}"), "", None) for i in range(3)])
    assert [a.count for a in ledger.flush_due()] == [3]  # full: no waiting
    ledger.close()


def test_a_batch_sent_before_a_crash_is_not_anchored_twice(admin):
    admin.add("dataset", sha("crash"))
    admin._make_batches()
    batch = admin.queue.batches(("pending",))[0]
    function = admin._contract("provenance").functions.anchor(bytes.fromhex(batch.batch_id),
                                                              bytes.fromhex(batch.root), batch.count)
    tx_hash = admin._transact(function)
    admin._receipt(tx_hash)
    # the crash: the transaction went out, but the queue still says "pending" with a lost hash
    admin.queue.mark_sent(batch.batch_id, "0x" + "ab" * 32)
    anchored = admin.flush()
    assert anchored == []
    assert admin.queue.batch(batch.batch_id).state == "confirmed"
    assert admin.verify(sha("crash")).tx_hash == tx_hash


def test_history_lists_a_dataset_and_what_was_derived_from_it(admin):
    dataset = sha("raw")
    admin.add("dataset", dataset, "ds-7")
    admin.add("series", sha("recon"), "ds-7")
    admin.add("label", sha("other"), "ds-8")
    admin.flush()
    assert [(r.kind, b.state) for r, b in admin.history("ds-7")] == [("dataset", "confirmed"), ("series", "confirmed")]
    assert [r.kind for r, _ in admin.history(dataset)] == ["dataset", "series"]  # by the dataset's hash
    assert admin.history("ds-none") == []


def test_contracts_are_compiled_for_the_pinned_evm_version_and_cached(tmp_path, admin):
    assert admin.deployment["evm_version"] == EVM_VERSION == "cancun"
    cached = list((admin.directory / "compiled").glob("ProvenanceRegistry-*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["evm_version"] == "cancun"
    assert compile_contract("AccessGrants").bytecode.startswith("0x")
    with pytest.raises(Exception, match="no ledger contract is named"):
        compile_contract("Nope")


def test_bad_input_gives_clear_errors(admin):
    with pytest.raises(UsageError, match="not a SHA-256"):
        admin.add("dataset", "abc")
    with pytest.raises(UsageError, match="not a record kind"):
        admin.add("scan", sha("x"))
    with pytest.raises(VerificationFailed, match="never anchored"):
        admin.verify(sha("unknown"))
    admin.add("dataset", sha("waiting"))
    with pytest.raises(VerificationFailed, match="not yet anchored"):
        admin.verify(sha("waiting"))


def test_merkle_tree_of_a_batch_matches_the_chain_root(admin):
    records = admin.add_many([("series", sha(f"m{i}"), "ds", None) for i in range(4)])
    [anchored] = admin.flush()
    tree = MerkleTree([record_leaf(r.kind, r.object_hash, r.dataset_id) for r in records])
    root = admin._contract("provenance").functions.anchors(bytes.fromhex(anchored.batch_id)).call()[0]
    assert root == tree.root
