"""The ledger client: anchors record hashes in Merkle batches, verifies them, and manages access grants.

A record is (kind, SHA-256 of an object, dataset ID). Its leaf in the batch tree is the RFC 6962 leaf hash of
``kind code (1 byte) || object SHA-256 (32) || SHA-256(dataset ID) (32, zero without one)``, so a proof binds
the object both to its kind and to its dataset; only these hashes reach the chain, never names or patient data
(file names stay in the local queue, to explain a failed verification). Batches are closed after
``batch_size`` records or ``batch_delay_s`` seconds, whichever comes first, and anchored with one transaction
each (EIP-1559 fees, filled in by web3), so throughput is bounded by hashing, not by transactions per second.
Verification is local and O(log n): the record's audit path must lead to the root stored on chain for its batch.

References:
    Merkle RC. A Digital Signature Based on a Conventional Encryption Function. CRYPTO 1987.
    RFC 6962, section 2.1 (tree and leaf/node domain separation); RFC 9162, section 2.1.3.2 (proof checking).
    EIP-1559: Fee market change for ETH 1.0 chain (https://eips.ethereum.org/EIPS/eip-1559).
    Zhou et al. Cloud-MRI, arXiv 2310.11641 (hashes of MRI data anchored on a blockchain).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests
from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3
from web3.exceptions import BadFunctionCallOutput, ContractLogicError, TimeExhausted, TransactionNotFound

from cloudmri_kernel.digest import file_sha256
from cloudmri_kernel.errors import CloudMRIError, InvalidDataError, UsageError
from cloudmri_kernel.ledger.compiler import EVM_VERSION, compile_contract
from cloudmri_kernel.ledger.files import write_json_atomic
from cloudmri_kernel.ledger.merkle import MerkleTree, leaf_hash, verify_inclusion
from cloudmri_kernel.ledger.queue import KINDS, AnchorQueue, Batch, Record

DEPLOYMENT_FILE = "addresses.json"
QUEUE_FILE = "queue.sqlite"
_SHA256 = re.compile(r"(?:0x)?([0-9a-fA-F]{64})")
_SCOPE = re.compile(r"[a-z0-9][a-z0-9:._-]{0,31}")
ANVIL_FUNDING_WEI = 10**21  # 1000 ether of the local test chain, set with anvil_setBalance


class LedgerError(CloudMRIError):
    """The ledger could not do what was asked (exit code 1)."""


class NodeUnavailable(LedgerError):
    """The JSON-RPC node did not answer; queued records stay queued and are sent at the next flush."""


class TransactionRejected(LedgerError):
    """A contract refused a call; the message carries its revert reason."""


class VerificationFailed(InvalidDataError):
    """An object does not match what the ledger anchored, or its anchor is not on chain."""


class ChainMismatch(LedgerError):
    """The chain no longer holds what this ledger anchored (replaced or reorganized)."""


def normalize_hash(value: str, what: str = "hash") -> str:
    """A SHA-256 as 64 lower-case hex digits; ``0x`` prefix and upper case accepted."""
    match = _SHA256.fullmatch(value.strip())
    if match is None:
        raise UsageError(f"{value!r} is not a SHA-256 {what}: expected 64 hex digits")
    return match.group(1).lower()


def record_leaf(kind: str, object_hash: str, dataset_id: str = "") -> bytes:
    """The RFC 6962 leaf hash of a record (see the module docstring for the encoding)."""
    ref = hashlib.sha256(dataset_id.encode()).digest() if dataset_id else bytes(32)
    return leaf_hash(bytes([KINDS[kind]]) + bytes.fromhex(object_hash) + ref)


def scope_bytes(scope: str) -> bytes:
    """A grant scope as the contract stores it: ASCII, right-padded with zeros to 32 bytes."""
    if not _SCOPE.fullmatch(scope):
        raise UsageError(f"{scope!r} is not a scope: 1-32 characters of a-z, 0-9 and :._- (e.g. read-raw)")
    return scope.encode().ljust(32, b"\0")


@dataclass(frozen=True)
class Anchored:
    """A batch whose root is confirmed on chain."""

    batch_id: str
    root: str
    count: int
    tx_hash: str
    block_number: int
    timestamp: int


@dataclass(frozen=True)
class Verification:
    """Proof that an object was anchored: where, when, by which site, and the audit path that was checked."""

    object_hash: str
    kind: str
    dataset_id: str
    batch_id: str
    leaf_index: int
    batch_size: int
    proof: tuple[str, ...]
    root: str
    tx_hash: str
    block_number: int
    timestamp: int
    site: str
    submitter: str

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, UTC)


@dataclass(frozen=True)
class GrantInfo:
    dataset: str
    grantee: str
    scope: str
    expiry: int
    grantor: str
    revoked: bool
    active: bool


@dataclass(frozen=True)
class GrantEvent:
    """One change of the ``AccessGrants`` contract's grant table: issued (with its expiry) or revoked."""

    dataset: str
    grantee: str
    scope: str
    expiry: int | None
    revoked: bool
    block_number: int
    log_index: int


@dataclass(frozen=True)
class BlockRef:
    """A block by number, hash and time (Unix seconds, the ``block.timestamp`` contracts see)."""

    number: int
    hash: str
    timestamp: int


@dataclass
class ChainReport:
    """What :meth:`Ledger.check_chain` found; ``replaced`` means the contracts are gone, so everything must be
    anchored again; ``missing`` lists batches whose anchor is absent or different on chain."""

    problems: list[str] = field(default_factory=list)
    replaced: bool = False
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class Ledger:
    """A site's view of the ledger: its queue and contract addresses in ``directory``, a node at ``rpc_url``.

    Args:
        directory: local state (queue, ``addresses.json``, compiled contracts).
        rpc_url: Ethereum JSON-RPC URL.
        account: the site's signing account.
        batch_size: close a batch at this many records.
        batch_delay_s: or when its oldest record has waited this long.
        confirmations: blocks (the including one counted) before an anchor is confirmed.
        tx_timeout_s: how long to wait for a transaction to be mined.
        clock: the time source of the batching delay (tests pass a fake one).
    """

    def __init__(self, directory: str | Path, rpc_url: str, account: LocalAccount, *, batch_size: int = 1024,
                 batch_delay_s: float = 10.0, confirmations: int = 1, tx_timeout_s: float = 120.0,
                 clock: Callable[[], float] = time.time):
        self.directory = Path(directory)
        self.rpc_url = rpc_url
        self.account = account
        self.batch_size, self.batch_delay_s = batch_size, batch_delay_s
        self.confirmations, self.tx_timeout_s = confirmations, tx_timeout_s
        self.clock = clock
        self.queue = AnchorQueue(self.directory / QUEUE_FILE)
        self.w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": 30}, exception_retry_configuration=None))
        # Validation asks the node for its chain ID before every call, and names are never ENS names here: both
        # middlewares would double the requests of a verification. Transactions carry the chain ID themselves.
        self.w3.middleware_onion.remove("validation")
        self.w3.middleware_onion.remove("ens_name_to_address")
        self._chain_id: int | None = None
        self._sites: dict[str, str] = {}
        self._send_lock = threading.Lock()
        self._funded = False
        self._contracts: dict | None = None

    @classmethod
    def from_settings(cls, config=None, **overrides) -> Ledger:
        """The ledger configured by ``CLOUDMRI_LEDGER_*`` (:class:`~cloudmri_kernel.ledger.config.LedgerSettings`)."""
        from cloudmri_kernel.ledger.config import ledger_settings
        from cloudmri_kernel.ledger.keys import load_account, load_or_create_account

        config = config or ledger_settings()
        directory = config.directory
        if config.key_file is not None:
            account = load_account(config.key_file, config.key_password)
        else:
            account = load_or_create_account(directory / "keys" / "site.key")
        options = dict(batch_size=config.batch_size, batch_delay_s=config.batch_delay_s,
                       confirmations=config.confirmations, tx_timeout_s=config.tx_timeout_s)
        options.update(overrides)
        return cls(directory, config.rpc_url, account, **options)

    def close(self) -> None:
        self.queue.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def address(self) -> str:
        return self.account.address

    # -- node and contracts ------------------------------------------------------------------------------------

    def _rpc(self, call: Callable, *args):
        """Run a web3 call, turning an unreachable node into :class:`NodeUnavailable`."""
        try:
            return call(*args)
        except (requests.RequestException, OSError) as exc:
            raise NodeUnavailable(f"the ledger node at {self.rpc_url} does not answer ({type(exc).__name__}); "
                                  "queued records stay queued: start it (`cloudmri ledger node`) and flush") from None

    @property
    def deployment_file(self) -> Path:
        return self.directory / DEPLOYMENT_FILE

    @property
    def deployment(self) -> dict | None:
        if not self.deployment_file.exists():
            return None
        return json.loads(self.deployment_file.read_text())

    def _contract(self, name: str):
        if self._contracts is None:
            deployment = self.deployment
            if deployment is None:
                raise UsageError(f"the ledger contracts are not deployed for {self.directory}: run `cloudmri ledger "
                                 "deploy` (consortium admin) or `cloudmri ledger attach` with the consortium's "
                                 "addresses")
            self._contracts = {
                key: self.w3.eth.contract(address=deployment[key], abi=compile_contract(contract, self._cache).abi)
                for key, contract in (("provenance", "ProvenanceRegistry"), ("grants", "AccessGrants"))}
        return self._contracts[name]

    @property
    def _cache(self) -> Path:
        return self.directory / "compiled"

    def _ensure_funds(self) -> None:
        """On an anvil node, give a new account ether with ``anvil_setBalance``; elsewhere the consortium funds it."""
        if self._funded:
            return
        if self._rpc(self.w3.eth.get_balance, self.address) == 0:
            version = self._rpc(lambda: self.w3.client_version)
            if not version.startswith("anvil/"):
                raise LedgerError(f"account {self.address} has no ether on chain {self.chain_id}: ask the "
                                  "consortium to fund it")
            self._rpc(self.w3.provider.make_request, "anvil_setBalance", [self.address, hex(ANVIL_FUNDING_WEI)])
        self._funded = True

    def _transact(self, function, nonce: int | None = None) -> str:
        """Sign and send a contract call; its transaction hash. A revert is reported with its reason."""
        self._ensure_funds()
        try:
            transaction = self._rpc(function.build_transaction, {
                "from": self.address, "chainId": self.chain_id,
                "nonce": nonce if nonce is not None else
                self._rpc(self.w3.eth.get_transaction_count, self.address, "pending")})
        except ContractLogicError as exc:
            raise TransactionRejected(f"{function.fn_name} was refused by the contract: {_reason(exc)}") from None
        signed = self.account.sign_transaction(transaction)
        return "0x" + self._rpc(self.w3.eth.send_raw_transaction, signed.raw_transaction).hex().removeprefix("0x")

    def _receipt(self, tx_hash: str):
        try:
            receipt = self._rpc(self.w3.eth.wait_for_transaction_receipt, tx_hash, self.tx_timeout_s, 0.01)
        except TimeExhausted:
            raise LedgerError(f"transaction {tx_hash} was not mined within {self.tx_timeout_s:g} s; "
                              "it stays recorded and is checked again at the next flush") from None
        if self.confirmations > 1:
            deadline = time.monotonic() + self.tx_timeout_s
            while self._rpc(lambda: self.w3.eth.block_number) < receipt.blockNumber + self.confirmations - 1:
                if time.monotonic() > deadline:
                    raise LedgerError(f"transaction {tx_hash} has fewer than {self.confirmations} confirmations")
                time.sleep(0.2)
        return receipt

    def _call_and_wait(self, function) -> str:
        with self._send_lock:
            tx_hash = self._transact(function)
        receipt = self._receipt(tx_hash)
        if receipt.status != 1:
            raise TransactionRejected(f"{function.fn_name} reverted in transaction {tx_hash}")
        return tx_hash

    def deploy(self, site: str | None = None) -> dict:
        """Deploy both contracts with this account as consortium admin, register this account for ``site``
        (if given) and write ``addresses.json``.

        Raises:
            UsageError: contracts are already deployed for this directory and still on chain.
        """
        existing = self.deployment
        if existing is not None and self._rpc(self.w3.eth.get_code, existing["provenance"]):
            raise UsageError(f"the ledger contracts are already deployed at {existing['provenance']} on this chain",
                             self.deployment_file)
        self._ensure_funds()
        addresses = {}
        for key, name, args in (("provenance", "ProvenanceRegistry", ()), ("grants", "AccessGrants", None)):
            compiled = compile_contract(name, self._cache)
            factory = self.w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
            with self._send_lock:
                tx_hash = self._transact(factory.constructor(*(args if args is not None
                                                               else (addresses["provenance"],))))
            receipt = self._receipt(tx_hash)
            if receipt.status != 1 or not receipt.contractAddress:
                raise LedgerError(f"deploying {name} failed in transaction {tx_hash}")
            addresses[key] = receipt.contractAddress
            addresses[f"{key}_source_sha256"] = compiled.source_sha256
            addresses.setdefault("deploy_block", receipt.blockNumber)
        genesis = self._rpc(self.w3.eth.get_block, 0)
        deployment = {**addresses, "chain_id": self._rpc(lambda: self.w3.eth.chain_id),
                      "genesis_hash": genesis.hash.to_0x_hex(), "admin": self.address, "evm_version": EVM_VERSION}
        write_json_atomic(self.deployment_file, deployment)
        self._contracts = None
        if site:
            self.register_site(self.address, site)
        return deployment

    def attach(self, provenance: str, grants: str) -> dict:
        """Use contracts that the consortium deployed; checks that they are there and writes ``addresses.json``."""
        for name, address in (("provenance registry", provenance), ("access-grant registry", grants)):
            if not Web3.is_address(address):
                raise UsageError(f"{address!r} is not an Ethereum address (the {name})")
            if not self._rpc(self.w3.eth.get_code, Web3.to_checksum_address(address)):
                raise UsageError(f"there is no contract at {address} on {self.rpc_url} (the {name})")
        provenance_contract = self.w3.eth.contract(address=Web3.to_checksum_address(provenance),
                                                   abi=compile_contract("ProvenanceRegistry", self._cache).abi)
        deployment = {"provenance": Web3.to_checksum_address(provenance), "grants": Web3.to_checksum_address(grants),
                      "chain_id": self._rpc(lambda: self.w3.eth.chain_id),
                      "genesis_hash": self._rpc(self.w3.eth.get_block, 0).hash.to_0x_hex(),
                      "admin": self._rpc(provenance_contract.functions.admin().call), "deploy_block": 0,
                      "evm_version": EVM_VERSION}
        write_json_atomic(self.deployment_file, deployment)
        self._contracts = None
        return deployment

    def register_site(self, account: str, site: str) -> str:
        """Let ``account`` anchor for ``site`` (consortium admin only); the transaction hash."""
        if not Web3.is_address(account):
            raise UsageError(f"{account!r} is not an Ethereum address")
        if not 0 < len(site.encode()) <= 64:
            raise UsageError(f"the site name {site!r} must have 1 to 64 bytes")
        function = self._contract("provenance").functions.register_site(Web3.to_checksum_address(account), site)
        return self._call_and_wait(function)

    def site_accounts(self, site: str) -> list[str]:
        """The accounts registered for ``site`` now (read from the ``SiteRegistered`` events, each checked against
        the registry, since an account can be removed or moved to another site)."""
        provenance = self._contract("provenance")
        logs = self._rpc(lambda: provenance.events.SiteRegistered().get_logs(
            from_block=self.deployment.get("deploy_block", 0)))
        candidates = dict.fromkeys(log.args.account for log in logs if log.args.site == site)
        return [account for account in candidates if self.site_of(account) == site]

    def site_of(self, account: str) -> str:
        return self._rpc(self._contract("provenance").functions.site_of(Web3.to_checksum_address(account)).call)

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = self._rpc(lambda: self.w3.eth.chain_id)
        return self._chain_id

    def _site_name(self, account: str) -> str:
        """The site of an anchoring account, asked once per account (it signed its past anchors for that site)."""
        if account not in self._sites:
            self._sites[account] = self.site_of(account)
        return self._sites[account]

    # -- anchoring ---------------------------------------------------------------------------------------------

    def add(self, kind: str, object_hash: str, dataset_id: str | None = None, name: str | None = None) -> Record:
        """Queue one record for anchoring (durably); it is anchored by :meth:`flush` or :meth:`flush_due`."""
        return self.add_many([(kind, object_hash, dataset_id, name)])[0]

    def add_many(self, entries: Iterable[tuple[str, str, str | None, str | None]]) -> list[Record]:
        """Queue ``(kind, object_hash, dataset_id, name)`` records in one transaction of the queue."""
        checked = []
        for kind, object_hash, dataset_id, name in entries:
            if kind not in KINDS:
                raise UsageError(f"{kind!r} is not a record kind; choose one of {', '.join(KINDS)}")
            checked.append((kind, normalize_hash(object_hash, "object hash"), dataset_id or "", name))
        return self.queue.add(checked, now=self.clock())

    def anchor_files(self, paths: Sequence[str | Path], kind: str = "dataset",
                     dataset_id: str | None = None) -> list[Record]:
        """Hash files (SHA-256, as the object store addresses them), queue them and flush; their records."""
        missing = [str(p) for p in paths if not Path(p).is_file()]
        if missing:
            raise UsageError(f"not a file: {', '.join(missing)}")
        records = self.add_many((kind, file_sha256(p), dataset_id, str(Path(p).resolve())) for p in paths)
        self.flush()
        return [self.queue.find(r.object_hash)[0] for r in records]

    def flush_due(self) -> list[Anchored]:
        """Flush if ``batch_size`` records wait or the oldest has waited ``batch_delay_s``; else do nothing."""
        count, oldest = self.queue.waiting_summary()
        unsent = self.queue.batches(("pending", "sent"))
        if unsent or count >= self.batch_size or (count and self.clock() - oldest >= self.batch_delay_s):
            return self.flush()
        return []

    def run_flusher(self, stop: threading.Event, poll_s: float = 1.0,
                    on_error: Callable[[Exception], None] | None = None,
                    on_success: Callable[[list[Anchored]], None] | None = None) -> None:
        """Call :meth:`flush_due` until ``stop`` is set; a node outage is reported to ``on_error`` and retried
        with exponential backoff (up to a minute), the records staying queued; each flush that did not fail is
        reported to ``on_success`` with the batches it confirmed (often none)."""
        backoff = poll_s
        while not stop.is_set():
            try:
                anchored = self.flush_due()
                backoff = poll_s
                if on_success is not None:
                    on_success(anchored)
            except LedgerError as exc:
                if on_error is not None:
                    on_error(exc)
                backoff = min(backoff * 2, 60.0)
            stop.wait(backoff)

    def _make_batches(self) -> None:
        while waiting := self.queue.waiting(self.batch_size):
            tree = MerkleTree([record_leaf(r.kind, r.object_hash, r.dataset_id) for r in waiting])
            members = [(r.id, i, b"".join(tree.proof(i))) for i, r in enumerate(waiting)]
            self.queue.create_batch(secrets.token_hex(32), tree.root.hex(), members, now=self.clock())

    def flush(self) -> list[Anchored]:
        """Batch every waiting record and anchor every unconfirmed batch; the batches confirmed by this call.

        Raises:
            NodeUnavailable: the node did not answer; everything stays queued for the next flush.
        """
        self._make_batches()
        provenance = self._contract("provenance")
        with self._send_lock:
            sent = []
            for batch in self.queue.batches(("sent",)):
                if self._confirmed_elsewhere(batch):
                    continue
                sent.append(batch)
            pending = self.queue.batches(("pending",))
            if pending:
                self._ensure_funds()
                nonce = self._rpc(self.w3.eth.get_transaction_count, self.address, "pending")
                for batch in pending:
                    function = provenance.functions.anchor(bytes.fromhex(batch.batch_id), bytes.fromhex(batch.root),
                                                           batch.count)
                    tx_hash = self._transact(function, nonce)
                    self.queue.mark_sent(batch.batch_id, tx_hash)
                    sent.append(self.queue.batch(batch.batch_id))
                    nonce += 1
        confirmed = []
        for batch in sent:
            receipt = self._receipt(batch.tx_hash)
            if receipt.status != 1:
                raise TransactionRejected(f"anchoring batch {batch.batch_id} reverted in {batch.tx_hash}")
            confirmed.append(self._confirm(batch, batch.tx_hash, receipt.blockNumber, receipt.blockHash.to_0x_hex()))
        return confirmed

    def _confirm(self, batch: Batch, tx_hash: str, block_number: int, block_hash: str) -> Anchored:
        timestamp = self._rpc(self.w3.eth.get_block, block_number).timestamp
        self.queue.mark_confirmed(batch.batch_id, tx_hash, block_number, block_hash, timestamp)
        return Anchored(batch.batch_id, batch.root, batch.count, tx_hash, block_number, timestamp)

    def _confirmed_elsewhere(self, batch: Batch) -> bool:
        """For a batch sent before a crash or outage: True when its transaction is already known to the node
        (it is then awaited like a new one); else it is resent, unless its anchor is on chain already."""
        try:
            self._rpc(self.w3.eth.get_transaction, batch.tx_hash)
            return False
        except TransactionNotFound:
            pass
        anchored = self._onchain_anchor(batch.batch_id)
        if anchored is not None and anchored[0].hex() == batch.root:
            logs = self._contract("provenance").events.BatchAnchored().get_logs(
                from_block=anchored[3], to_block=anchored[3],
                argument_filters={"batch_id": bytes.fromhex(batch.batch_id)})
            tx_hash = logs[0].transactionHash.to_0x_hex() if logs else batch.tx_hash
            block = self._rpc(self.w3.eth.get_block, anchored[3])
            self._confirm(batch, tx_hash, anchored[3], block.hash.to_0x_hex())
            return True
        self.queue.mark_pending([batch.batch_id])
        return True

    def _onchain_anchor(self, batch_id: str):
        """(root, count, submitter, block number, timestamp) on chain, or None when the batch is not there."""
        try:
            anchored = self._rpc(self._contract("provenance").functions.anchors(bytes.fromhex(batch_id)).call)
        except BadFunctionCallOutput:  # no contract at the address: a replaced chain
            return None
        return None if anchored[1] == 0 else anchored

    # -- verification ------------------------------------------------------------------------------------------

    def verify(self, object_hash: str) -> Verification:
        """Check that an object's record is anchored: its audit path must lead to the root stored on chain.

        Raises:
            VerificationFailed: never queued, not yet anchored, or the proof or anchor does not match the chain.
        """
        object_hash = normalize_hash(object_hash, "object hash")
        records = self.queue.find(object_hash)
        if not records:
            raise VerificationFailed(f"sha256 {object_hash} was never anchored by this ledger ({self.directory})")
        anchored = [r for r in records if r.batch_id and self.queue.batch(r.batch_id).state == "confirmed"]
        if not anchored:
            raise VerificationFailed(f"sha256 {object_hash} is queued but not yet anchored: run `cloudmri ledger "
                                     "flush` (is the node running?)")
        return self.verify_record(anchored[0])

    def verify_record(self, record: Record) -> Verification:
        batch = self.queue.batch(record.batch_id)
        onchain = self._onchain_anchor(record.batch_id)
        if onchain is None:
            raise ChainMismatch(f"batch {record.batch_id} of sha256 {record.object_hash} is not on the chain at "
                                f"{self.rpc_url}: was the chain replaced? `cloudmri ledger check` tells")
        root, count, submitter, block_number, timestamp = onchain
        if root.hex() != batch.root:
            raise VerificationFailed(f"batch {record.batch_id}: the chain holds root {root.hex()} but this ledger "
                                     f"anchored {batch.root}")
        leaf = record_leaf(record.kind, record.object_hash, record.dataset_id)
        if not verify_inclusion(leaf, record.leaf_index, count, record.proof, root):
            raise VerificationFailed(f"the inclusion proof of sha256 {record.object_hash} (leaf {record.leaf_index} "
                                     f"of {count}) does not lead to the on-chain root {root.hex()} of batch "
                                     f"{record.batch_id}")
        receipt = self._rpc(self.w3.eth.get_transaction_receipt, batch.tx_hash)
        if receipt.status != 1 or receipt.blockNumber != block_number:
            raise ChainMismatch(f"transaction {batch.tx_hash} does not hold the anchor of batch {record.batch_id}")
        return Verification(record.object_hash, record.kind, record.dataset_id, record.batch_id, record.leaf_index,
                            count, tuple(p.hex() for p in record.proof), root.hex(), batch.tx_hash, block_number,
                            timestamp, self._site_name(submitter), submitter)

    def verify_file(self, path: str | Path) -> Verification:
        """Hash a file and verify it; when it changed after anchoring, say which hash was anchored for it."""
        path = Path(path)
        if not path.is_file():
            raise UsageError("not a file", path)
        actual = file_sha256(path)
        if self.queue.find(actual):
            return self.verify(actual)
        earlier = [r for r in self.queue.find_by_name(str(path.resolve())) if r.object_hash != actual]
        if earlier:
            record = earlier[-1]
            batch = self.queue.batch(record.batch_id) if record.batch_id else None
            where = (f" in block {batch.block_number}, transaction {batch.tx_hash}"
                     if batch is not None and batch.state == "confirmed" else " (still queued)")
            raise VerificationFailed(f"TAMPERED: its sha256 is {actual}, but the ledger anchored {record.object_hash} "
                                     f"for this file{where}: the file changed after it was anchored", path)
        raise VerificationFailed(f"its sha256 {actual} was never anchored by this ledger ({self.directory})", path)

    def history(self, dataset_id: str) -> list[tuple[Record, Batch | None]]:
        """Every record of a dataset (given by ID or by its hash) with its batch, oldest first."""
        return [(r, self.queue.batch(r.batch_id) if r.batch_id else None) for r in self.queue.history(dataset_id)]

    # -- grants ------------------------------------------------------------------------------------------------

    def _claim_if_needed(self, dataset: str) -> None:
        grants = self._contract("grants")
        if self.address == self._rpc(self._contract("provenance").functions.admin().call):
            return
        if self._rpc(grants.functions.owner_site(bytes.fromhex(dataset)).call):
            return
        candidates = [r for r in self.queue.find(dataset) if r.kind == "dataset" and r.batch_id
                      and self.queue.batch(r.batch_id).state == "confirmed"]
        if not candidates:
            raise UsageError(f"dataset {dataset} is not anchored by this site, so it cannot claim it: anchor it "
                             "first (`cloudmri ledger anchor FILE`)")
        record = candidates[0]
        ref = hashlib.sha256(record.dataset_id.encode()).digest() if record.dataset_id else bytes(32)
        self._call_and_wait(grants.functions.claim_dataset(bytes.fromhex(dataset), ref, bytes.fromhex(record.batch_id),
                                                           record.leaf_index, list(record.proof)))

    def grant(self, dataset: str, grantee: str, scope: str, expiry: datetime | int) -> str:
        """Let ``grantee`` use ``dataset`` (its SHA-256) within ``scope`` until ``expiry``; the transaction hash.
        A site's first grant on a dataset first claims it on chain with the dataset record's inclusion proof."""
        dataset = normalize_hash(dataset, "dataset hash")
        grantee = _address(grantee)
        expiry_s = int(expiry.timestamp()) if isinstance(expiry, datetime) else int(expiry)
        self._claim_if_needed(dataset)
        function = self._contract("grants").functions.grant(bytes.fromhex(dataset), grantee, scope_bytes(scope),
                                                            expiry_s)
        return self._call_and_wait(function)

    def revoke(self, dataset: str, grantee: str, scope: str) -> str:
        """End a grant now; the transaction hash."""
        function = self._contract("grants").functions.revoke(bytes.fromhex(normalize_hash(dataset, "dataset hash")),
                                                             _address(grantee), scope_bytes(scope))
        return self._call_and_wait(function)

    def is_granted(self, dataset: str, grantee: str, scope: str) -> bool:
        function = self._contract("grants").functions.is_granted(
            bytes.fromhex(normalize_hash(dataset, "dataset hash")), _address(grantee), scope_bytes(scope))
        return self._rpc(function.call)

    def grants(self, dataset: str | None = None) -> list[GrantInfo]:
        """Every grant ever issued (on ``dataset``, if given), with its current state, read from the events."""
        contract = self._contract("grants")
        filters = {"dataset": bytes.fromhex(normalize_hash(dataset, "dataset hash"))} if dataset else {}
        logs = self._rpc(lambda: contract.events.GrantIssued().get_logs(
            from_block=self.deployment.get("deploy_block", 0), argument_filters=filters))
        keys = list(dict.fromkeys((log.args.dataset, log.args.grantee, log.args.scope) for log in logs))
        now = self._rpc(self.w3.eth.get_block, "latest").timestamp
        found = []
        for key in keys:
            expiry, grantor, revoked = self._rpc(contract.functions.grants(*key).call)
            found.append(GrantInfo(key[0].hex(), key[1], key[2].rstrip(b"\0").decode(), expiry, grantor, revoked,
                                   expiry > now and not revoked))
        return found

    def grant_events(self, from_block: int, to_block: int, span: int = 10_000) -> list[GrantEvent]:
        """Every ``GrantIssued`` and ``GrantRevoked`` event in blocks ``from_block`` to ``to_block`` (both
        included), in chain order, read ``span`` blocks per request (nodes cap the range of one ``eth_getLogs``).
        Replaying them in order rebuilds the contract's grant table: an issue sets the expiry and clears a
        revocation, a revocation sets it."""
        contract = self._contract("grants")
        events = []
        for start in range(max(from_block, 0), to_block + 1, span):
            window = dict(from_block=start, to_block=min(start + span - 1, to_block))
            issued = self._rpc(lambda w=window: contract.events.GrantIssued().get_logs(**w))
            revoked = self._rpc(lambda w=window: contract.events.GrantRevoked().get_logs(**w))
            events += [GrantEvent(log.args.dataset.hex(), log.args.grantee, _scope_text(log.args.scope),
                                  log.args.expiry, False, log.blockNumber, log.logIndex) for log in issued]
            events += [GrantEvent(log.args.dataset.hex(), log.args.grantee, _scope_text(log.args.scope), None, True,
                                  log.blockNumber, log.logIndex) for log in revoked]
        return sorted(events, key=lambda e: (e.block_number, e.log_index))

    def block(self, number: int | str = "latest") -> BlockRef:
        """A block's number, hash and time (``latest``: the head of the chain)."""
        block = self._rpc(self.w3.eth.get_block, number)
        return BlockRef(block.number, block.hash.to_0x_hex(), block.timestamp)

    # -- chain consistency -------------------------------------------------------------------------------------

    def check_chain(self) -> ChainReport:
        """Compare what this ledger anchored with the chain: contracts present, same genesis, every confirmed
        batch's root on chain in the block it was confirmed in."""
        report = ChainReport()
        deployment = self.deployment
        if deployment is None:
            report.problems.append("the ledger contracts are not deployed for this directory")
            return report
        chain_id = self._rpc(lambda: self.w3.eth.chain_id)
        genesis = self._rpc(self.w3.eth.get_block, 0).hash.to_0x_hex()
        if (chain_id != deployment["chain_id"] or genesis != deployment["genesis_hash"]
                or not self._rpc(self.w3.eth.get_code, deployment["provenance"])):
            report.replaced = True
            report.problems.append(f"the chain at {self.rpc_url} was replaced: genesis {genesis} (chain {chain_id}) "
                                   f"instead of {deployment['genesis_hash']} (chain {deployment['chain_id']}), or "
                                   f"no contract at {deployment['provenance']}")
            report.missing = [b.batch_id for b in self.queue.batches(("confirmed", "sent"))]
            return report
        for batch in self.queue.batches(("confirmed",)):
            onchain = self._onchain_anchor(batch.batch_id)
            block = self._rpc(self.w3.eth.get_block, batch.block_number) \
                if batch.block_number <= self._rpc(lambda: self.w3.eth.block_number) else None
            if onchain is None or onchain[0].hex() != batch.root:
                report.missing.append(batch.batch_id)
                report.problems.append(f"batch {batch.batch_id} (root {batch.root}) is not on chain")
            elif block is None or block.hash.to_0x_hex() != batch.block_hash:
                report.missing.append(batch.batch_id)
                report.problems.append(f"block {batch.block_number} of batch {batch.batch_id} changed (reorg)")
        return report

    def reanchor(self, site: str | None = None) -> list[Anchored]:
        """Anchor again every batch the chain lost; after a chain replacement, redeploy first (as admin)."""
        report = self.check_chain()
        if report.ok:
            return []
        if report.replaced:
            self.deployment_file.unlink()
            self._contracts, self._chain_id, self._funded = None, None, False
            self._sites.clear()
            self.deploy(site)
        self.queue.mark_pending(report.missing)
        return self.flush()


def _address(value: str) -> str:
    if not Web3.is_address(value):
        raise UsageError(f"{value!r} is not an Ethereum address (0x and 40 hex digits)")
    return Web3.to_checksum_address(value)


def _scope_text(scope: bytes) -> str:
    """A scope as the contract stores it (zero-padded bytes32) back to text; bytes that are no text stay visible."""
    return scope.rstrip(b"\0").decode("ascii", errors="backslashreplace")


def _reason(exc: ContractLogicError) -> str:
    message = str(exc.message or exc)
    return message.removeprefix("execution reverted: ").removeprefix("execution reverted") or "no reason given"


__all__ = ["Anchored", "BlockRef", "ChainMismatch", "ChainReport", "GrantEvent", "GrantInfo", "Ledger", "LedgerError",
           "NodeUnavailable", "TransactionRejected", "Verification", "VerificationFailed", "normalize_hash",
           "record_leaf", "scope_bytes"]
