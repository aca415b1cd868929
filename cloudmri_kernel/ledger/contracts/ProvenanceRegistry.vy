# pragma version 0.4.3
"""
@title Cloud-MRI provenance registry
@notice A consortium admin registers the signing accounts of sites (hospitals, edge nodes). A registered site
        anchors the Merkle root of a batch of record hashes (RFC 6962 tree: leaves hashed with a 0x00 prefix,
        inner nodes with 0x01), so one transaction covers the whole batch and any record is proven by an
        inclusion proof of O(log n) hashes. Only hashes go on chain, never patient data.
@dev References: R. C. Merkle, "A Digital Signature Based on a Conventional Encryption Function", CRYPTO 1987;
     RFC 6962 section 2.1 (tree hash) and RFC 9162 section 2.1.3.2 (verifying an inclusion proof);
     Vyper 0.4 documentation (https://docs.vyperlang.org/en/v0.4.3/).
"""

MAX_PROOF: constant(uint256) = 64

event SiteRegistered:
    account: indexed(address)
    site: String[64]

event SiteAccountRemoved:
    account: indexed(address)
    site: String[64]

event BatchAnchored:
    batch_id: indexed(bytes32)
    submitter: indexed(address)
    root: bytes32
    count: uint256
    site: String[64]

struct Anchor:
    root: bytes32
    count: uint256
    submitter: address
    block_number: uint256
    timestamp: uint256

admin: public(address)
site_of: public(HashMap[address, String[64]])
anchors: public(HashMap[bytes32, Anchor])
batch_count: public(uint256)


@deploy
def __init__():
    self.admin = msg.sender


@external
def register_site(account: address, site: String[64]):
    """
    @notice Let `account` sign anchors for `site`. Only the consortium admin may do this.
    """
    assert msg.sender == self.admin, "only the consortium admin registers sites"
    assert account != empty(address), "the site account is the zero address"
    assert len(site) > 0, "the site name is empty"
    assert len(self.site_of[account]) == 0, "this account already signs for a site"
    self.site_of[account] = site
    log SiteRegistered(account=account, site=site)


@external
def remove_site_account(account: address):
    """
    @notice Stop `account` from anchoring (a lost or retired key). Its past anchors stay valid.
    """
    assert msg.sender == self.admin, "only the consortium admin removes site accounts"
    site: String[64] = self.site_of[account]
    assert len(site) > 0, "this account signs for no site"
    self.site_of[account] = ""
    log SiteAccountRemoved(account=account, site=site)


@external
def anchor(batch_id: bytes32, root: bytes32, count: uint256):
    """
    @notice Anchor the Merkle root of a batch of `count` records under a fresh `batch_id`.
    """
    site: String[64] = self.site_of[msg.sender]
    assert len(site) > 0, "the sender is not a registered site account"
    assert count > 0, "a batch has at least one record"
    assert self.anchors[batch_id].count == 0, "this batch id is already anchored"
    self.anchors[batch_id] = Anchor(root=root, count=count, submitter=msg.sender, block_number=block.number,
                                    timestamp=block.timestamp)
    self.batch_count += 1
    log BatchAnchored(batch_id=batch_id, submitter=msg.sender, root=root, count=count, site=site)


@view
@external
def submitter_of(batch_id: bytes32) -> address:
    return self.anchors[batch_id].submitter


@view
@internal
def _root_from_path(leaf: bytes32, index: uint256, size: uint256, path: DynArray[bytes32, MAX_PROOF]) -> bytes32:
    # RFC 9162 section 2.1.3.2; an empty result means the path does not fit the tree size.
    fn: uint256 = index
    sn: uint256 = size - 1
    r: bytes32 = leaf
    for p: bytes32 in path:
        if sn == 0:
            return empty(bytes32)
        if fn & 1 == 1 or fn == sn:
            r = sha256(concat(b"\x01", p, r))
            if fn & 1 == 0:
                for _: uint256 in range(MAX_PROOF):
                    if fn & 1 != 0 or fn == 0:
                        break
                    fn = fn >> 1
                    sn = sn >> 1
        else:
            r = sha256(concat(b"\x01", r, p))
        fn = fn >> 1
        sn = sn >> 1
    if sn != 0:
        return empty(bytes32)
    return r


@view
@external
def is_included(batch_id: bytes32, leaf_hash: bytes32, index: uint256, path: DynArray[bytes32, MAX_PROOF]) -> bool:
    """
    @notice Whether `leaf_hash` is leaf `index` of the anchored batch `batch_id`, by its audit path.
    """
    anchored: Anchor = self.anchors[batch_id]
    if anchored.count == 0 or index >= anchored.count:
        return False
    return self._root_from_path(leaf_hash, index, anchored.count, path) == anchored.root
