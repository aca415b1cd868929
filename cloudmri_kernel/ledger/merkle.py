"""Merkle hash trees of record hashes, with inclusion proofs, after Merkle (1987) in the form of RFC 6962.

A batch of records is anchored on chain by one root. The tree is RFC 6962's (section 2.1): a leaf hashes
``0x00 || data`` and an inner node ``0x01 || left || right`` with SHA-256, the prefixes separating the two
domains so that no inner node can pass for a leaf (the second-preimage attack on unprefixed trees). For
``n > 1`` leaves the left subtree holds the largest power of two smaller than ``n``; equivalently, built level by
level, a last node without a sibling moves up unchanged. An inclusion proof (audit path) lists the sibling
hashes from the leaf up, at most ``ceil(log2 n)`` of them, and is checked by RFC 9162 section 2.1.3.2, which
also rejects a path of the wrong length for the tree size.

.. math::

    \\mathrm{MTH}(D_n) = \\mathrm{SHA256}(\\mathtt{0x01} \\,\\|\\, \\mathrm{MTH}(D_{0:k}) \\,\\|\\,
    \\mathrm{MTH}(D_{k:n})), \\quad k = 2^{\\lceil \\log_2 n \\rceil - 1}

References:
    Merkle RC. A Digital Signature Based on a Conventional Encryption Function. CRYPTO 1987, LNCS 293.
    Laurie B, Langley A, Kasper E. Certificate Transparency. RFC 6962, 2013, section 2.1.
    Laurie B, Messeri E, Stradling R. Certificate Transparency Version 2.0. RFC 9162, 2021, section 2.1.3.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 inner node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


class MerkleTree:
    """The tree over given leaf hashes, kept level by level so that every proof is read off in O(log n).

    Args:
        leaves: the leaf hashes (32 bytes each, already :func:`leaf_hash`-ed), at least one.
    """

    def __init__(self, leaves: Sequence[bytes]):
        if not leaves:
            raise ValueError("a Merkle tree needs at least one leaf")
        if any(len(leaf) != 32 for leaf in leaves):
            raise ValueError("leaf hashes are 32 bytes")
        self.levels: list[list[bytes]] = [list(leaves)]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            above = [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            if len(below) % 2:
                above.append(below[-1])
            self.levels.append(above)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def proof(self, index: int) -> list[bytes]:
        """The audit path of leaf ``index``: sibling hashes from the bottom up."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf {index} is outside a tree of {self.size} leaves")
        path = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            index >>= 1
        return path


def root_from_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes | None:
    """The root that ``proof`` implies for leaf hash ``leaf`` at ``index`` of a tree of ``size`` leaves, or None
    when the proof cannot belong to such a tree (RFC 9162 section 2.1.3.2)."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0 or len(p) != 32:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Whether ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree of ``size`` leaves with ``root``."""
    return root_from_proof(leaf, index, size, proof) == root
