"""The ledger's Vyper contracts, compiled in Python at first use and cached by source hash.

Vyper is a pure-Python compiler, so nothing is downloaded. The target EVM version is pinned (:data:`EVM_VERSION`)
rather than left to the compiler's default, because a consortium's node may run an older hard fork than the
newest one the compiler knows; ``cancun`` (EIP-1153, EIP-4844, EIP-5656, EIP-6780, EIP-7516) is supported by
anvil, geth and Besu alike. The cache file is named by the SHA-256 of the source, the compiler version and the
EVM version, and written atomically, so a changed contract is never served from a stale cache.

References:
    Vyper 0.4.3 documentation, "Compiling a contract" and "EVM version"
    (https://docs.vyperlang.org/en/v0.4.3/compiling-a-contract.html).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cloudmri_kernel.errors import CloudMRIError

EVM_VERSION = "cancun"
CONTRACTS_DIR = Path(__file__).parent / "contracts"
CONTRACT_NAMES = ("ProvenanceRegistry", "AccessGrants")
_compiled: dict[str, CompiledContract] = {}  # by cache key, for this process


@dataclass(frozen=True)
class CompiledContract:
    """A contract's ABI and creation bytecode (hex, ``0x``-prefixed), and the hash of its source."""

    name: str
    abi: list
    bytecode: str
    source_sha256: str


def _source(name: str) -> str:
    if name not in CONTRACT_NAMES:
        raise CloudMRIError(f"no ledger contract is named {name!r}; known: {', '.join(CONTRACT_NAMES)}")
    return (CONTRACTS_DIR / f"{name}.vy").read_text()


def compile_contract(name: str, cache_dir: str | Path | None = None) -> CompiledContract:
    """Compile one of :data:`CONTRACT_NAMES` for :data:`EVM_VERSION`, reusing a cached result when the source,
    compiler and EVM version are unchanged."""
    import vyper

    source = _source(name)
    key = hashlib.sha256(f"{vyper.__version__}\0{EVM_VERSION}\0{source}".encode()).hexdigest()
    source_sha = hashlib.sha256(source.encode()).hexdigest()
    cached = Path(cache_dir) / f"{name}-{key[:16]}.json" if cache_dir is not None else None
    if key in _compiled and (cached is None or cached.exists()):
        return _compiled[key]
    if cached is not None and cached.exists():
        data = json.loads(cached.read_text())
        _compiled[key] = CompiledContract(name, data["abi"], data["bytecode"], source_sha)
        return _compiled[key]
    if key not in _compiled:
        from vyper.compiler.settings import Settings

        output = vyper.compile_code(source, contract_path=f"{name}.vy", output_formats=["abi", "bytecode"],
                                    settings=Settings(evm_version=EVM_VERSION))
        _compiled[key] = CompiledContract(name, output["abi"], output["bytecode"], source_sha)
    compiled = _compiled[key]
    if cached is not None:
        from cloudmri_kernel.ledger.files import write_json_atomic

        write_json_atomic(cached, {"abi": compiled.abi, "bytecode": compiled.bytecode, "evm_version": EVM_VERSION,
                                   "vyper": vyper.__version__})
    return compiled
