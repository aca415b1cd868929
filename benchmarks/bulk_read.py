"""Bulk reading of an MRD file versus the ``ismrmrd`` package's per-acquisition loop.

Both sides produce the same thing, a sorted (slice, coil, ky, kx) complex64 k-space array, from the same
file with a warm page cache. Each method runs in a fresh process so that its peak resident memory can be
measured; memory is reported as (peak RSS - RSS after imports) / size of the k-space array.

    python benchmarks/bulk_read.py --gib 1.0 --repeats 3 --markdown docs/benchmarks/bulk_read.md
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COILS, SAMPLES, LINES = 32, 512, 128


def make_file(path: Path, gib: float) -> tuple[int, int]:
    """Write a multi-slice Cartesian file of about ``gib`` GiB of samples; returns (slices, acquisitions)."""
    from cloudmri_kernel.mrd.build import Geometry, cartesian_acquisitions, make_header
    from cloudmri_kernel.mrd.writer import MRDWriter

    bytes_per_slice = COILS * SAMPLES * LINES * 8
    slices = max(1, round(gib * 2**30 / bytes_per_slice))
    header = make_header(Geometry((SAMPLES, LINES, 1), (SAMPLES // 2, LINES, 1), (440, 220, 3), (220, 220, 3),
                                  COILS, slices=slices))
    rng = np.random.default_rng(0)
    with MRDWriter(path, header) as out:
        for s in range(slices):
            kspace = rng.standard_normal((1, COILS, 1, LINES, 2 * SAMPLES), np.float32).view(np.complex64)
            heads, data = cartesian_acquisitions(kspace)
            heads["idx"]["slice"] = s
            out.append_acquisitions(heads, data)
    return slices, slices * LINES


def read_with_ismrmrd(path: str) -> np.ndarray:
    """What a user of the ismrmrd package writes: one Acquisition object per line."""
    import ismrmrd

    dataset = ismrmrd.Dataset(path, "dataset", create_if_needed=False)
    header = ismrmrd.xsd.CreateFromDocument(dataset.read_xml_header())
    enc = header.encoding[0]
    slices = enc.encodingLimits.slice.maximum + 1
    kspace = np.zeros((slices, COILS, enc.encodedSpace.matrixSize.y, enc.encodedSpace.matrixSize.x), np.complex64)
    for i in range(dataset.number_of_acquisitions()):
        acq = dataset.read_acquisition(i)
        kspace[acq.idx.slice, :, acq.idx.kspace_encode_step_1, :] = acq.data
    dataset.close()
    return kspace


def read_with_cloudmri(path: str) -> np.ndarray:
    from cloudmri_kernel.mrd.kspace import read_cartesian
    from cloudmri_kernel.mrd.reader import MRDFile

    with MRDFile(path) as mrd:
        return read_cartesian(mrd).kspace[:, :, 0]


METHODS = {"ismrmrd": read_with_ismrmrd, "cloudmri": read_with_cloudmri}


def measure(method: str, path: str) -> None:
    """Child process: import, note RSS, read, print seconds, peak extra RSS and a checksum as JSON."""
    import ismrmrd  # noqa: F401 - imports are not part of the measurement

    import cloudmri_kernel.mrd.kspace  # noqa: F401

    def rss_kib() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    baseline = rss_kib()
    start = time.perf_counter()
    kspace = METHODS[method](path)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "extra_bytes": (peak - baseline) * 1024, "array_bytes": kspace.nbytes,
                      "checksum": float(np.abs(kspace[:, :, ::7, ::13]).sum())}))


def run_child(method: str, path: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", method, str(path)], capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of the test file's samples in GiB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", type=Path, help="also write the result table here")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bulk.h5"
        slices, acquisitions = make_file(path, args.gib)
        runs = {m: [run_child(m, path) for _ in range(args.repeats)] for m in METHODS}
    checksums = {m: runs[m][0]["checksum"] for m in METHODS}
    if len(set(checksums.values())) != 1:
        raise SystemExit(f"the methods disagree on the k-space: {checksums}")
    seconds = {m: statistics.median(r["seconds"] for r in runs[m]) for m in METHODS}
    memory = {m: statistics.median(r["extra_bytes"] / r["array_bytes"] for r in runs[m]) for m in METHODS}
    array_gib = runs["cloudmri"][0]["array_bytes"] / 2**30
    lines = [
        f"File: {acquisitions} acquisitions ({slices} slices x {LINES} lines), {COILS} coils x {SAMPLES} samples; "
        f"k-space array {array_gib:.2f} GiB. Median of {args.repeats} runs, each in a fresh process, warm page cache.",
        "",
        "| method | seconds (median) | speed-up vs ismrmrd | peak extra memory / k-space array |",
        "|---|---|---|---|",
    ]
    for m in METHODS:
        lines.append(f"| {m} | {seconds[m]:.2f} | {seconds['ismrmrd'] / seconds[m]:.1f}x | {memory[m]:.2f} |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(f"# Bulk read of MRD k-space\n\n`python benchmarks/bulk_read.py --gib {args.gib} "
                                 f"--repeats {args.repeats}`\n\n{table}\n")


if __name__ == "__main__":
    main()
