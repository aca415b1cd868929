"""The Cloud-MRI ledger: hashes of MRI data anchored on an Ethereum chain in Merkle batches, and access grants.

Only hashes and grants go on chain, never patient data. See ``docs/ledger.md`` for the trust model and commands.

- :mod:`~cloudmri_kernel.ledger.merkle`: RFC 6962 trees and inclusion proofs.
- :mod:`~cloudmri_kernel.ledger.compiler`: the Vyper contracts, compiled offline for a pinned EVM version.
- :mod:`~cloudmri_kernel.ledger.node`: the default node, anvil, with its state kept across restarts.
- :mod:`~cloudmri_kernel.ledger.client`: :class:`Ledger`, anchoring, verification, history and grants.
"""

from cloudmri_kernel.ledger.client import (
    Anchored,
    ChainMismatch,
    ChainReport,
    GrantInfo,
    Ledger,
    LedgerError,
    NodeUnavailable,
    TransactionRejected,
    Verification,
    VerificationFailed,
)

__all__ = ["Anchored", "ChainMismatch", "ChainReport", "GrantInfo", "Ledger", "LedgerError", "NodeUnavailable",
           "TransactionRejected", "Verification", "VerificationFailed"]
