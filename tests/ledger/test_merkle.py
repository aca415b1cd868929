"""The RFC 6962 tree: its root matches the recursive definition, proofs verify, forged ones do not."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudmri_kernel.ledger.merkle import MerkleTree, leaf_hash, node_hash, root_from_proof, verify_inclusion


def reference_root(leaves: list[bytes]) -> bytes:
    """MTH of RFC 6962 section 2.1, written as the recursion in the RFC."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


def leaves_of(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def test_domain_separation_and_known_values():
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    # RFC 6962's empty-leaf hash, as published in the Certificate Transparency test vectors
    assert leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    # A tree of one leaf is that leaf; of two, their node
    a, b = leaves_of(2)
    assert MerkleTree([a]).root == a and MerkleTree([a]).proof(0) == []
    assert MerkleTree([a, b]).root == node_hash(a, b)


def test_an_inner_node_does_not_pass_for_a_leaf():
    a, b, c, d = leaves_of(4)
    tree = MerkleTree([a, b, c, d])
    forged_leaf = leaf_hash(a + b)  # the concatenation, hashed as a leaf, differs from the node
    assert forged_leaf != node_hash(a, b)
    assert not verify_inclusion(forged_leaf, 0, 2, [node_hash(c, d)], tree.root)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), data=st.data())
def test_root_matches_rfc_and_every_proof_verifies(n, data):
    leaves = leaves_of(n)
    tree = MerkleTree(leaves)
    assert tree.root == reference_root(leaves)
    index = data.draw(st.integers(0, n - 1))
    proof = tree.proof(index)
    assert len(proof) <= max(0, (n - 1).bit_length())
    assert verify_inclusion(leaves[index], index, n, proof, tree.root)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(2, 200), data=st.data())
def test_forged_proofs_are_rejected(n, data):
    leaves = leaves_of(n)
    tree = MerkleTree(leaves)
    index = data.draw(st.integers(0, n - 1))
    proof = tree.proof(index)
    other = data.draw(st.integers(0, n - 1).filter(lambda i: i != index))
    # The tree size is not a forgery target: the verifier takes it from the chain, anchored with the root.
    forgery = data.draw(st.sampled_from(["leaf", "index", "flip", "drop", "extra"]))
    leaf, at, path = leaves[index], index, list(proof)
    if forgery == "leaf":
        leaf = leaf_hash(b"tampered")
    elif forgery == "index":
        at = other
    elif forgery == "flip" and path:
        step = data.draw(st.integers(0, len(path) - 1))
        path[step] = bytes([path[step][0] ^ 1]) + path[step][1:]
    elif forgery == "drop" and path:
        path.pop()
    else:
        path.append(leaves[other])
    if (leaf, at, path) == (leaves[index], index, proof):
        return  # the draw produced no change (e.g. "flip" on an empty path)
    assert not verify_inclusion(leaf, at, n, path, tree.root)


def test_size_change_may_keep_the_root_only_with_a_different_path():
    # RFC 9162's check binds the path to the size: the same path under a larger size fails
    leaves = leaves_of(5)
    tree = MerkleTree(leaves)
    assert root_from_proof(leaves[4], 4, 5, tree.proof(4)) == tree.root
    assert root_from_proof(leaves[4], 4, 8, tree.proof(4)) is None


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least one leaf"):
        MerkleTree([])
    with pytest.raises(ValueError, match="32 bytes"):
        MerkleTree([b"short"])
    with pytest.raises(IndexError, match="outside a tree of 3"):
        MerkleTree(leaves_of(3)).proof(3)
    assert root_from_proof(b"\0" * 32, 5, 3, []) is None
