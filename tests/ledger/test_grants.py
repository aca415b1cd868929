"""Access grants on chain: who may grant, expiry, revocation, and the listing from events."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from eth_account import Account

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.ledger import TransactionRejected
from cloudmri_kernel.ledger.testing import ledger_for


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def in_days(days: float) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


def test_a_site_grants_and_revokes_access_to_its_own_dataset(admin, site):
    dataset = sha("uke raw")
    site.add("dataset", dataset, "ds-uke")
    site.flush()
    reader = Account.create().address
    site.grant(dataset, reader, "read-raw", in_days(30))
    assert site.is_granted(dataset, reader, "read-raw")
    assert not site.is_granted(dataset, reader, "read-images")
    owner = site._contract("grants").functions.owner_site(bytes.fromhex(dataset)).call()
    assert owner == "uke"  # claimed with the dataset record's inclusion proof
    [listed] = site.grants(dataset)
    assert (listed.grantee, listed.scope, listed.grantor, listed.active) == (reader, "read-raw", site.address, True)
    site.revoke(dataset, reader, "read-raw")
    assert not admin.is_granted(dataset, reader, "read-raw")
    [listed] = admin.grants()
    assert listed.revoked and not listed.active
    with pytest.raises(TransactionRejected, match="there is no such grant to revoke"):
        site.revoke(dataset, reader, "read-raw")


def test_another_site_cannot_grant_or_claim_a_dataset_it_did_not_anchor(admin, site, node, tmp_path):
    dataset = sha("uke only")
    site.add("dataset", dataset)
    site.flush()
    site.grant(dataset, Account.create().address, "read-raw", in_days(1))
    other = ledger_for(tmp_path / "mhh", node.url)
    other.attach(admin.deployment["provenance"], admin.deployment["grants"])
    admin.register_site(other.address, "mhh")
    with pytest.raises(TransactionRejected, match="only the dataset's site or the consortium admin may grant"):
        other.grant(dataset, other.address, "read-raw", in_days(1))
    # replaying uke's own proof does not help: the batch was anchored by another site
    record = site.queue.find(dataset)[0]
    claim = other._contract("grants").functions.claim_dataset(bytes.fromhex(dataset), bytes(32),
                                                              bytes.fromhex(record.batch_id), record.leaf_index,
                                                              list(record.proof))
    with pytest.raises(TransactionRejected, match="already claimed"):
        other._call_and_wait(claim)
    unclaimed = sha("never claimed")
    site.add("dataset", unclaimed)
    site.flush()
    record = site.queue.find(unclaimed)[0]
    claim = other._contract("grants").functions.claim_dataset(bytes.fromhex(unclaimed), bytes(32),
                                                              bytes.fromhex(record.batch_id), record.leaf_index,
                                                              list(record.proof))
    with pytest.raises(TransactionRejected, match="anchored by another site"):
        other._call_and_wait(claim)
    with pytest.raises(UsageError, match="not anchored by this site"):
        other.grant(sha("nothing"), other.address, "read-raw", in_days(1))
    other.close()


def test_the_admin_may_grant_and_bad_grants_are_refused(admin):
    dataset = sha("any")
    grantee = Account.create().address
    admin.grant(dataset, grantee, "read-images", in_days(7))
    assert admin.is_granted(dataset, grantee, "read-images")
    with pytest.raises(TransactionRejected, match="the expiry is not in the future"):
        admin.grant(dataset, grantee, "read-images", in_days(-1))
    with pytest.raises(UsageError, match="is not a scope"):
        admin.grant(dataset, grantee, "Read Raw!", in_days(1))
    with pytest.raises(UsageError, match="not an Ethereum address"):
        admin.grant(dataset, "bob", "read-raw", in_days(1))


def test_a_grant_expires_with_chain_time(admin):
    dataset = sha("short")
    grantee = Account.create().address
    admin.grant(dataset, grantee, "read-raw", in_days(1))
    admin.w3.provider.make_request("evm_increaseTime", [2 * 86400])
    admin.w3.provider.make_request("evm_mine", [])
    assert not admin.is_granted(dataset, grantee, "read-raw")
    assert not admin.grants(dataset)[0].active
