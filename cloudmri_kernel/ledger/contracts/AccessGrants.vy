# pragma version 0.4.3
"""
@title Cloud-MRI access-grant registry
@notice A dataset (named by the SHA-256 of its MRD file) belongs to the site that anchored it; that site's
        accounts or the consortium admin grant a grantee a scope until an expiry time, and may revoke it.
        Anyone may ask `is_granted`. Every change is an event, so the grant history is public and auditable.
@dev A site claims a dataset by proving, against its own anchored batch root, the inclusion of the dataset
     record's leaf sha256(0x00 || 0x01 || dataset || ref) (RFC 6962 leaf hash), so no site can claim
     another's data. References: RFC 6962 section 2.1; Vyper 0.4 documentation, interfaces and events.
"""

MAX_PROOF: constant(uint256) = 64
KIND_DATASET: constant(bytes1) = 0x01

interface Provenance:
    def admin() -> address: view
    def site_of(account: address) -> String[64]: view
    def submitter_of(batch_id: bytes32) -> address: view
    def is_included(batch_id: bytes32, leaf_hash: bytes32, index: uint256,
                    path: DynArray[bytes32, MAX_PROOF]) -> bool: view

event DatasetClaimed:
    dataset: indexed(bytes32)
    account: indexed(address)
    site: String[64]

event GrantIssued:
    dataset: indexed(bytes32)
    grantee: indexed(address)
    scope: bytes32
    expiry: uint256
    grantor: address

event GrantRevoked:
    dataset: indexed(bytes32)
    grantee: indexed(address)
    scope: bytes32
    revoker: address

struct Grant:
    expiry: uint256
    grantor: address
    revoked: bool

provenance: public(immutable(Provenance))
owner_site: public(HashMap[bytes32, String[64]])
grants: public(HashMap[bytes32, HashMap[address, HashMap[bytes32, Grant]]])


@deploy
def __init__(registry: address):
    provenance = Provenance(registry)


@external
def claim_dataset(dataset: bytes32, ref: bytes32, batch_id: bytes32, index: uint256,
                  path: DynArray[bytes32, MAX_PROOF]):
    """
    @notice Record the sender's site as the owner of `dataset`, proven by its anchored dataset record.
    """
    site: String[64] = staticcall provenance.site_of(msg.sender)
    assert len(site) > 0, "the sender is not a registered site account"
    assert len(self.owner_site[dataset]) == 0, "the dataset is already claimed by a site"
    leaf: bytes32 = sha256(concat(b"\x00", KIND_DATASET, dataset, ref))
    assert staticcall provenance.is_included(batch_id, leaf, index, path), "no anchored dataset record proves this claim"
    anchored_by: String[64] = staticcall provenance.site_of(staticcall provenance.submitter_of(batch_id))
    assert keccak256(anchored_by) == keccak256(site), "the dataset was anchored by another site"
    self.owner_site[dataset] = site
    log DatasetClaimed(dataset=dataset, account=msg.sender, site=site)


@view
@internal
def _may_grant(dataset: bytes32, account: address) -> bool:
    if account == staticcall provenance.admin():
        return True
    owner: String[64] = self.owner_site[dataset]
    if len(owner) == 0:
        return False
    return keccak256(staticcall provenance.site_of(account)) == keccak256(owner)


@external
def grant(dataset: bytes32, grantee: address, scope: bytes32, expiry: uint256):
    """
    @notice Let `grantee` use `dataset` within `scope` until `expiry` (Unix seconds); replaces an earlier grant.
    """
    assert self._may_grant(dataset, msg.sender), "only the dataset's site or the consortium admin may grant access"
    assert grantee != empty(address), "the grantee is the zero address"
    assert scope != empty(bytes32), "the scope is empty"
    assert expiry > block.timestamp, "the expiry is not in the future"
    self.grants[dataset][grantee][scope] = Grant(expiry=expiry, grantor=msg.sender, revoked=False)
    log GrantIssued(dataset=dataset, grantee=grantee, scope=scope, expiry=expiry, grantor=msg.sender)


@external
def revoke(dataset: bytes32, grantee: address, scope: bytes32):
    """
    @notice End a grant now.
    """
    assert self._may_grant(dataset, msg.sender), "only the dataset's site or the consortium admin may revoke access"
    current: Grant = self.grants[dataset][grantee][scope]
    assert current.expiry != 0 and not current.revoked, "there is no such grant to revoke"
    self.grants[dataset][grantee][scope].revoked = True
    log GrantRevoked(dataset=dataset, grantee=grantee, scope=scope, revoker=msg.sender)


@view
@external
def is_granted(dataset: bytes32, grantee: address, scope: bytes32) -> bool:
    current: Grant = self.grants[dataset][grantee][scope]
    return current.expiry > block.timestamp and not current.revoked
