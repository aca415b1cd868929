"""Ingest throughput of the encrypted object store against one core's limits, measured in the same run.

``ObjectStore.put`` hashes (SHA-256), encrypts (AES-256-GCM) and durably writes (fsync) a file in one pass on
one core; ``open`` decrypts, authenticates and re-hashes. Both are compared with what one core can do at all,
measured on the same machine just before: ``openssl speed`` for AES-256-GCM and SHA-256, the AES-GCM of the
``cryptography`` package (which bundles its own OpenSSL), ``sha256sum`` over the same file, and a plain copy
of the file with fsync (the disk's durable write rate). Hashing and encrypting the same bytes on one core
cannot beat 1 / (1/aes + 1/sha).

``openssl speed`` divides by user CPU time, so the hash and cipher limits are rates per user-CPU second (for
``sha256sum`` too), and the store's rate per user-CPU second is the like-for-like comparison; it hardly
changes when other programs share the machine. The store also spends system time on reading and writing the
file (page-cache copies, file system, writeback), which the limits do not include: the rate per CPU second
(user + system) shows it. The wall-clock rate is what a user waits for, and is compared with the durable
write. Each put and
get runs in a fresh process, so that its peak resident memory can be read; memory is reported for two file
sizes to show that it does not grow with the file. Rates are in MB/s (10^6 bytes per second), sizes in MiB.

    python benchmarks/ingest_throughput.py --size-mb 1024 --repeats 3 --markdown docs/benchmarks/ingest_throughput.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SITE = "bench"


def make_file(path: Path, size_mb: int) -> None:
    """Random content, written in 1 MiB blocks."""
    with open(path, "wb") as out:
        for _ in range(size_mb):
            out.write(os.urandom(1 << 20))


def openssl_speed(algorithm: str, seconds: int) -> tuple[float, str]:
    """MB/s of ``openssl speed -evp`` on 1 MiB buffers, or on its largest standard one (16 KiB) if -bytes is
    not supported; returns the rate and the buffer size used."""
    for extra, label in ((["-bytes", "1048576"], "1 MiB"), ([], "16 KiB")):
        result = subprocess.run(["openssl", "speed", "-evp", algorithm, "-seconds", str(seconds), *extra],
                                capture_output=True, text=True)
        rows = [line.split() for line in result.stdout.splitlines() if line.lower().startswith(algorithm)]
        if result.returncode == 0 and rows and rows[-1][-1].endswith("k"):  # the last column: 1 MiB or 16 KiB
            return float(rows[-1][-1][:-1]) * 1000 / 1e6, label
    raise SystemExit(f"cannot parse `openssl speed -evp {algorithm}`:\n{result.stdout}{result.stderr}")


def library_aes_speed(seconds: float) -> float:
    """MB per user-CPU second of AES-256-GCM as the store calls it: the ``cryptography`` package (which bundles its
    own OpenSSL)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    cipher, block = AESGCM(AESGCM.generate_key(256)), os.urandom(1 << 20)
    count, start = 0, user_seconds()
    while user_seconds() - start < seconds:
        cipher.encrypt(count.to_bytes(12, "big"), block, b"")
        count += 1
    return count * len(block) / (user_seconds() - start) / 1e6


def openssl_versions() -> tuple[str, str]:
    """The OpenSSL of the `openssl` command and the one bundled with the ``cryptography`` package."""
    from cryptography.hazmat.backends.openssl.backend import backend

    command = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.split()[1]
    return command, backend.openssl_version_text().split()[1]


def time_sha256sum(path: Path) -> tuple[float, str]:
    """User CPU seconds of ``sha256sum FILE``, and the hash it prints."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    result = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before, result.stdout.split()[0]


def time_durable_copy(path: Path, target: Path) -> float:
    """Copy in 1 MiB blocks and fsync: what any durable write of this file costs."""
    start = time.perf_counter()
    with open(path, "rb") as source, open(target, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    seconds = time.perf_counter() - start
    target.unlink()
    return seconds


def user_seconds() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def measure(operation: str, store_dir: str, argument: str, chunk_mb: int) -> None:
    """Child process: put FILE or get SHA256; prints wall, user and system seconds, peak extra RSS, address, size."""
    from cloudmri_kernel.crypto import KeyRing
    from cloudmri_kernel.store import ObjectStore

    store = ObjectStore(Path(store_dir) / "store", KeyRing(Path(store_dir) / "kek"), chunk_size=chunk_mb << 20)
    store.keyring.current(SITE)
    baseline = rss_kib()
    start, cpu_start = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    if operation == "put":
        stored = store.put(argument, SITE)
        sha256, size = stored.sha256, stored.size
    else:
        # open() raises IntegrityError unless the plaintext hashes to the address: no second hash here.
        sha256, size = argument, sum(len(piece) for piece in store.open(SITE, argument))
    seconds, cpu_end = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": seconds, "user_seconds": cpu_end.ru_utime - cpu_start.ru_utime,
                      "cpu_seconds": cpu_end.ru_utime + cpu_end.ru_stime - cpu_start.ru_utime - cpu_start.ru_stime,
                      "extra_bytes": (cpu_end.ru_maxrss - baseline) * 1024, "sha256": sha256, "size": size}))


def run_child(operation: str, store_dir: Path, argument: str, chunk_mb: int) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", operation, str(store_dir), argument,
                             str(chunk_mb)], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"the {operation} child failed:\n{result.stderr}")
    return json.loads(result.stdout)


def put_and_get(path: Path, workdir: Path, chunk_mb: int) -> tuple[dict, dict]:
    """One put into a fresh store, then one get of it; the store is removed afterwards."""
    store_dir = Path(tempfile.mkdtemp(dir=workdir))
    try:
        put = run_child("put", store_dir, str(path), chunk_mb)
        get = run_child("get", store_dir, put["sha256"], chunk_mb)
    finally:
        shutil.rmtree(store_dir)
    if not get["size"] == put["size"] == path.stat().st_size:
        raise SystemExit(f"put stored {put['size']} bytes and get returned {get['size']} of {path.stat().st_size}")
    return put, get


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="size of the test file in MiB")
    parser.add_argument("--small-mb", type=int, help="second, smaller size for the memory comparison "
                        "(default: size / 8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-mb", type=int, default=1, help="the store's encryption chunk size in MiB")
    parser.add_argument("--speed-seconds", type=int, default=3, help="duration of each `openssl speed` test")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the test files and stores go (needs about 3x the size free)")
    parser.add_argument("--markdown", type=Path, help="also write the result tables here")
    parser.add_argument("--child", nargs=4, metavar=("OPERATION", "STORE", "ARGUMENT", "CHUNK_MB"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        operation, store_dir, argument, chunk_mb = args.child
        measure(operation, store_dir, argument, int(chunk_mb))
        return
    small_mb = args.small_mb or max(1, args.size_mb // 8)
    mb = args.size_mb * 2**20 / 1e6
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        workdir = Path(tmp)
        path, small = workdir / "scan.dat", workdir / "small.dat"
        make_file(path, args.size_mb)
        make_file(small, small_mb)
        aes, aes_buffer = openssl_speed("aes-256-gcm", args.speed_seconds)
        aes_library = library_aes_speed(args.speed_seconds)
        sha_openssl, sha_buffer = openssl_speed("sha256", args.speed_seconds)
        sums = [time_sha256sum(path) for _ in range(args.repeats)]
        copies = [time_durable_copy(path, workdir / "copy.dat") for _ in range(args.repeats)]
        runs = [put_and_get(path, workdir, args.chunk_mb) for _ in range(args.repeats)]
        small_runs = [put_and_get(small, workdir, args.chunk_mb) for _ in range(args.repeats)]
    load_after = os.getloadavg()[0]
    if {put["sha256"] for put, _ in runs} != {sums[0][1]}:
        raise SystemExit(f"the store's address differs from sha256sum's: {runs[0][0]['sha256']} != {sums[0][1]}")
    sha_sum = mb / statistics.median(seconds for seconds, _ in sums)
    durable = mb / statistics.median(copies)

    def rate(which: int, key: str) -> float:
        return mb / statistics.median(pair[which][key] for pair in runs)

    def operation_row(name: str, which: int) -> str:
        wall, user, cpu = rate(which, "seconds"), rate(which, "user_seconds"), rate(which, "cpu_seconds")
        versus_durable = f"{wall / durable:.0%}" if which == 0 else ""
        return (f"| {name} | {wall:.0f} | {user:.0f} | {cpu:.0f} | {user / limit_brief:.0%} | {user / limit_best:.0%} "
                f"| {cpu / limit_best:.0%} | {versus_durable} |")
    limit_brief = 1 / (1 / aes + 1 / sha_sum)
    limit_best = 1 / (1 / max(aes, aes_library) + 1 / max(sha_sum, sha_openssl))
    system_ssl, bundled_ssl = openssl_versions()

    def peak_mib(results: list[tuple[dict, dict]], which: int) -> float:
        return statistics.median(pair[which]["extra_bytes"] for pair in results) / 2**20

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    lines = [
        f"File: {args.size_mb} MiB of random bytes; store chunk size {args.chunk_mb} MiB; median of {args.repeats} "
        f"runs, each put and get in a fresh process, warm page cache. CPU: {cpu}; {os.cpu_count()} cores; "
        f"work directory on `{_filesystem(args.workdir)}`. Load average (1 min) before and after the run: "
        f"{load_before:.1f}, {load_after:.1f}.",
        "",
        "| one-core limit, measured in this run | MB per user-CPU s (C: MB/s) |",
        "|---|---|",
        f"| AES-256-GCM, `openssl speed -evp aes-256-gcm` (OpenSSL {system_ssl}, {aes_buffer} buffers) | {aes:.0f} |",
        f"| AES-256-GCM, `cryptography` AESGCM as the store calls it (bundled OpenSSL {bundled_ssl}, 1 MiB) | "
        f"{aes_library:.0f} |",
        f"| SHA-256, `sha256sum` of the file | {sha_sum:.0f} |",
        f"| SHA-256, `openssl speed -evp sha256` (OpenSSL {system_ssl}, which hashlib uses; {sha_buffer} buffers) | "
        f"{sha_openssl:.0f} |",
        f"| A: hash + encrypt, 1 / (1/`openssl speed` AES + 1/`sha256sum`) | {limit_brief:.0f} |",
        f"| B: hash + encrypt, 1 / (1/fastest AES + 1/fastest SHA-256) | {limit_best:.0f} |",
        f"| C: durable write, copy the file and fsync | {durable:.0f} |",
        "",
        "| store operation | MB/s, wall clock | MB per user-CPU s | MB per CPU s (user + system) | user rate / A "
        "| user rate / B | CPU rate / B | wall rate / C |",
        "|---|---|---|---|---|---|---|---|",
        operation_row("put: hash + encrypt + write + fsync", 0),
        operation_row("get: decrypt + authenticate + re-hash", 1),
        "",
        "| file size | put: peak extra RSS | get: peak extra RSS |",
        "|---|---|---|",
        f"| {small_mb} MiB | {peak_mib(small_runs, 0):.1f} MiB | {peak_mib(small_runs, 1):.1f} MiB |",
        f"| {args.size_mb} MiB | {peak_mib(runs, 0):.1f} MiB | {peak_mib(runs, 1):.1f} MiB |",
    ]
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(f"# Ingest throughput of the encrypted object store\n\n`python "
                                 f"benchmarks/ingest_throughput.py --size-mb {args.size_mb} --repeats {args.repeats}`"
                                 f"\n\n{table}\n")


def _filesystem(path: Path) -> str:
    """File system type and device of ``path``, from /proc/mounts (longest matching mount point)."""
    resolved = str(path.resolve())
    best = ("", "unknown", "unknown")
    for line in Path("/proc/mounts").read_text().splitlines():
        device, mount, kind = line.split()[:3]
        if (resolved == mount or resolved.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best[0]):
            best = (mount, kind, device)
    return f"{best[1]} ({best[2]})"


if __name__ == "__main__":
    main()
