"""Ledger throughput: records anchored per second end to end, batched in Merkle trees vs one transaction each.

End to end means: hash each object (SHA-256 of a 4 KiB payload) → queue the record durably (SQLite, WAL) →
build the batch's RFC 6962 tree and every record's inclusion proof → send one ``anchor`` transaction per batch
→ wait until it is mined (confirmed). The peer anchors every record with its own transaction, through the same
code path (a batch size of 1), measured in the same run against the same node; fewer records are enough for it,
so both are reported per record. Verification is ``Ledger.verify``: look the record up, check its proof
against the root read from the contract (``eth_call``) and check the transaction's receipt.

The node is a real anvil process (``@foundry-rs/anvil`` from npm), mining each transaction as it arrives.

    python benchmarks/ledger_throughput.py --records 10000 --markdown docs/benchmarks/ledger_throughput.md
    python benchmarks/ledger_throughput.py --quick --markdown /tmp/ledger.md

References:
    Merkle RC. CRYPTO 1987; RFC 6962 section 2.1 (the batch trees).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cloudmri_kernel.ledger.testing import ledger_for, start_node  # noqa: E402

PAYLOAD_BYTES = 4096


def anchor_run(ledger, count: int, seed: int) -> tuple[float, list[str], int]:
    """Seconds to hash, queue and anchor ``count`` records until confirmed; their hashes; transactions sent."""
    payloads = [random.Random(seed + i).randbytes(PAYLOAD_BYTES) for i in range(count)]
    start = time.perf_counter()
    hashes = [hashlib.sha256(p).hexdigest() for p in payloads]
    ledger.add_many(("series", h, f"ds-{i % 100}", None) for i, h in enumerate(hashes))
    anchored = ledger.flush()
    elapsed = time.perf_counter() - start
    assert sum(a.count for a in anchored) == count
    return elapsed, hashes, len(anchored)


def verify_run(ledger, hashes: list[str], sample: int) -> tuple[list[float], int]:
    """Per-record verification times (s) of a random sample, and the longest proof seen (hashes)."""
    times, longest = [], 0
    for h in random.Random(1).sample(hashes, min(sample, len(hashes))):
        start = time.perf_counter()
        check = ledger.verify(h)
        times.append(time.perf_counter() - start)
        longest = max(longest, len(check.proof))
    return times, longest


def run(records: int, peer_records: int, batch_size: int, verify_sample: int) -> dict:
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        node = start_node(work / "node")
        try:
            batched = ledger_for(work / "batched", node.url, batch_size=batch_size)
            batched.deploy("bench")
            single = ledger_for(work / "single", node.url, batch_size=1)
            single.attach(batched.deployment["provenance"], batched.deployment["grants"])
            batched.register_site(single.address, "bench-single")
            anchor_run(batched, min(records, 64), seed=10**9)  # warm-up: connections, compiled ABI, caches
            batched_s, hashes, batched_tx = anchor_run(batched, records, seed=0)
            single_s, _, single_tx = anchor_run(single, peer_records, seed=records)
            verify_times, longest_proof = verify_run(batched, hashes, verify_sample)
            all_verified = len(verify_times) == min(verify_sample, len(hashes))
            batched.close()
            single.close()
        finally:
            node.stop()
    batched_rate, single_rate = records / batched_s, peer_records / single_s
    return {
        "records": records, "batch_size": batch_size, "batched_transactions": batched_tx,
        "batched_seconds": batched_s, "batched_records_per_s": batched_rate,
        "peer_records": peer_records, "peer_transactions": single_tx, "peer_seconds": single_s,
        "peer_records_per_s": single_rate, "speedup": batched_rate / single_rate,
        "verified": len(verify_times), "all_verified": all_verified,
        "verify_ms_mean": 1000 * statistics.fmean(verify_times),
        "verify_ms_p95": 1000 * sorted(verify_times)[int(0.95 * (len(verify_times) - 1))],
        "longest_proof": longest_proof,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}",
    }


def row(*cells) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def markdown(result: dict) -> str:
    r = result
    anchoring = [
        row("anchoring", "records", "transactions", "seconds", "records/s", "ratio to peer"),
        row("---", "---:", "---:", "---:", "---:", "---:"),
        row(f"Merkle batches of {r['batch_size']}", r["records"], r["batched_transactions"],
            f"{r['batched_seconds']:.2f}", f"{r['batched_records_per_s']:.0f}", f"{r['speedup']:.1f}x"),
        row("peer: one transaction per record", r["peer_records"], r["peer_transactions"],
            f"{r['peer_seconds']:.2f}", f"{r['peer_records_per_s']:.0f}", "1.0x"),
    ]
    verification = [
        row("verification (`Ledger.verify`)", "records", "mean ms/record", "p95 ms/record", "longest proof (hashes)"),
        row("---", "---:", "---:", "---:", "---:"),
        row("proof checked against the on-chain root, receipt checked", r["verified"], f"{r['verify_ms_mean']:.2f}",
            f"{r['verify_ms_p95']:.2f}", r["longest_proof"]),
    ]
    return f"""# Ledger throughput

Produced by `python benchmarks/ledger_throughput.py --records {r['records']}` on {r['machine']}, against a real
anvil node on 127.0.0.1 (each transaction mined on arrival). End to end = SHA-256 of a {PAYLOAD_BYTES}-byte
object, durable queueing, Merkle tree and proofs, one transaction per batch, receipt. The peer sends one
transaction per record through the same code, in the same run. Target (issue 7): at least 1,000 records/s
anchored and under 10 ms verification per record.

""" + "\n".join(anchoring) + "\n\n" + "\n".join(verification) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000, help="records anchored in batches")
    parser.add_argument("--peer-records", type=int, default=500, help="records anchored one transaction each")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--verify-sample", type=int, default=1000, help="records verified")
    parser.add_argument("--quick", action="store_true", help="a small run for tests (200 / 20 / 50 records)")
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.peer_records, args.batch_size, args.verify_sample = 200, 20, 64, 50
    result = run(args.records, args.peer_records, args.batch_size, args.verify_sample)
    print(json.dumps(result, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown(result))
    return 0 if result["all_verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
