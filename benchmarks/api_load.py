"""Load on the API service: metadata queries and image tiles from many concurrent clients, SQLite vs PostgreSQL.

The service runs as users run it (``cloudmri service --local``, one uvicorn process, :class:`ServiceProcess`),
with its catalog on SQLite and then on a throw-away PostgreSQL server. Setup uploads a few phantom datasets and
reconstructs one multi-slice dataset to get a series. Each scenario then lets ``--clients`` concurrent clients
(one ``httpx.AsyncClient`` with a connection per client, on loopback) send requests back to back for
``--duration`` seconds. Every request is audited (one INSERT into ``audit_events`` per request); the script checks
that the audit table grew by exactly the number of answered requests, and exits non-zero if not.

    python benchmarks/api_load.py --duration 20 --clients 50 --markdown docs/benchmarks/api_load.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import func, select

from cloudmri_kernel.catalog import Catalog
from cloudmri_kernel.catalog.models import AuditEvent
from cloudmri_kernel.catalog.testing import PostgresServer
from cloudmri_kernel.client import Client
from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from cloudmri_kernel.service.testing import ServiceProcess, create_token, service_env

API = "/api/v1"
DATASETS = 6
SLICES = 8  # images in the reconstructed series the tile scenarios read
DATABASES = ("sqlite", "postgresql")
READING = "## Reading"
FILTERS = [{"sequence": "cartesian"}, {"field_strength_t": 3.0}, {"text": "phantom"}, {"site": "siteA", "limit": 3},
           {"acquired_from": "2000-01-01T00:00:00Z", "sequence": "cartesian", "limit": 10}]


@dataclass
class Seeded:
    """What the setup stored: dataset IDs, and one series with ``images`` images."""

    dataset_ids: list[str]
    series_id: str
    images: int


Request = tuple[str, dict]
SCENARIOS: dict[str, Callable[[Seeded, random.Random], Request]] = {
    "GET /datasets?filters": lambda seeded, rng: (f"{API}/datasets", rng.choice(FILTERS)),
    "GET /datasets/{id}": lambda seeded, rng: (f"{API}/datasets/{rng.choice(seeded.dataset_ids)}", {}),
    "GET /series/{id}/images/{i}.png": lambda seeded, rng: (
        f"{API}/series/{seeded.series_id}/images/{rng.randrange(seeded.images)}.png", {}),
    "GET /series/{id}/array?index=i": lambda seeded, rng: (
        f"{API}/series/{seeded.series_id}/array", {"index": rng.randrange(seeded.images)}),
}


@dataclass
class Result:
    """One scenario on one database.

    Attributes:
        seconds: from the first request to the last answer.
        latencies: seconds of each answered request.
        errors: what went wrong how often: an HTTP status other than 200, or the exception of a request that got
            no answer.
        service_cpu: CPU seconds the service process used meanwhile.
    """

    seconds: float
    latencies: list[float]
    errors: Counter
    service_cpu: float

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else math.nan


def seed(url: str, token: str, scratch: Path) -> Seeded:
    """Upload phantom datasets (the first with ``SLICES`` slices) and reconstruct the first one."""
    with Client(url, token) as client:
        ids = []
        for n in range(DATASETS):
            spec = PhantomSpec(matrix=128, coils=4, accel=2, calib=16, slices=SLICES if n == 0 else 1, seed=n)
            ids.append(client.upload(write_phantom(scratch / f"phantom{n}.h5", spec))["id"])
        job = client.wait(client.submit(ids[0])["id"], timeout=600)
        shape = client.series(job["series_id"])["shape"]
    return Seeded(ids, job["series_id"], math.prod(shape[:-2]))


async def run_clients(url: str, token: str, make: Callable[[random.Random], Request], clients: int,
                      duration: float) -> tuple[float, list[float], Counter]:
    """``clients`` clients sending requests back to back until ``duration`` s have passed.

    Returns:
        Seconds from the first request to the last answer, latencies of answered requests, and the errors (see
        :class:`Result`).
    """
    latencies, errors = [], Counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"token {token}"}, limits=limits,
                                 timeout=120) as http:
        start = time.perf_counter()
        deadline = start + duration

        async def client(number: int) -> None:
            rng = random.Random(number)
            while time.perf_counter() < deadline:
                path, params = make(rng)
                sent = time.perf_counter()
                try:
                    reply = await http.get(path, params=params)
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                    continue
                latencies.append(time.perf_counter() - sent)
                if reply.status_code != 200:
                    errors[f"HTTP {reply.status_code}"] += 1

        await asyncio.gather(*(client(n) for n in range(clients)))
        return time.perf_counter() - start, latencies, errors


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def audit_rows(catalog: Catalog) -> int:
    with catalog.session() as db:
        return db.scalar(select(func.count()).select_from(AuditEvent))


@contextlib.contextmanager
def catalog_database(database: str, scratch: Path) -> Iterator[str]:
    """The catalog URL of a fresh database: a SQLite file, or a database on a throw-away PostgreSQL server."""
    if database == "sqlite":
        yield f"sqlite:///{scratch / 'catalog.sqlite'}"
        return
    with PostgresServer() as server:
        yield server.create_database("api_load")


def measure(database: str, clients: int, duration: float) -> dict[str, Result]:
    """Start the service on ``database``, seed it, and run every scenario; results by scenario."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp, catalog_database(database, Path(tmp)) as url:
        env = service_env(Path(tmp) / "service", url)
        token = create_token(env, "alice", "siteA", ["researcher"])
        with ServiceProcess(env) as service:
            seeded = seed(service.url, token, Path(tmp))
            catalog = Catalog.open(url, migrate=False)
            try:
                for name, scenario in SCENARIOS.items():
                    def make(rng: random.Random, scenario=scenario) -> Request:
                        return scenario(seeded, rng)

                    # One answered request first, so the image cache holds the series as it would in use.
                    path, params = make(random.Random(0))
                    httpx.get(service.url + path, params=params, headers={"Authorization": f"token {token}"},
                              timeout=120).raise_for_status()
                    audited, cpu = audit_rows(catalog), cpu_seconds(service.pid)
                    seconds, latencies, errors = asyncio.run(run_clients(service.url, token, make, clients, duration))
                    cpu, audited = cpu_seconds(service.pid) - cpu, audit_rows(catalog) - audited
                    if audited != len(latencies):
                        raise SystemExit(f"{database}, {name}: {len(latencies)} requests were answered but "
                                         f"{audited} audit events written")
                    results[name] = Result(seconds, latencies, errors, cpu)
                    print(f"{database:10} {name:34} {results[name].per_second:8.1f} requests/s", flush=True)
            finally:
                catalog.dispose()
    return results


def table(results: dict[str, dict[str, Result]]) -> str:
    lines = ["| scenario | database | requests/s | vs SQLite | p50 ms | p99 ms | errors | requests (all audited) | "
             "service CPU ms/request |", "|---|---|---|---|---|---|---|---|---|"]
    errors = []
    for name in SCENARIOS:
        for database, by_scenario in results.items():
            result = by_scenario[name]
            ratio = result.per_second / results["sqlite"][name].per_second if "sqlite" in results else math.nan
            cpu_ms = 1000 * result.service_cpu / len(result.latencies) if result.latencies else math.nan
            lines.append(f"| {name} | {database} | {result.per_second:.0f} | {ratio:.2f}x | "
                         f"{result.percentile_ms(50):.1f} | {result.percentile_ms(99):.1f} | "
                         f"{sum(result.errors.values())} | {len(result.latencies)} | {cpu_ms:.1f} |")
            errors += [f"{name} on {database}: {kind} x {count}" for kind, count in sorted(result.errors.items())]
    return "\n".join(lines + ([f"\nErrors: {'; '.join(errors)}."] if errors else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per scenario and database")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument("--database", choices=DATABASES, action="append",
                        help="catalog database(s) to measure (default: both; PostgreSQL where it is installed)")
    parser.add_argument("--markdown", type=Path, help="also write the result table here")
    args = parser.parse_args()
    databases = args.database or list(DATABASES)
    if "postgresql" in databases and not PostgresServer.available():
        print("PostgreSQL is not installed (Debian package postgresql): measuring SQLite only")
        databases.remove("postgresql")
    results = {database: measure(database, args.clients, args.duration) for database in databases}
    machine = f"{os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()} {platform.release()})"
    setup = (f"{args.clients} concurrent clients on loopback, {args.duration:g} s per scenario and database; "
             f"{DATASETS} datasets, one series of {SLICES} images (128 x 128). Machine: {machine}; the clients "
             "run on the same cores as the service.")
    report = f"{setup}\n\n{table(results)}"
    print(report)
    if args.markdown:
        # The reading of the numbers, written by people under READING, stays when the table is measured again.
        reading = args.markdown.read_text().partition(READING)[2] if args.markdown.exists() else ""
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(f"# API service under load\n\n`python benchmarks/api_load.py --duration "
                                 f"{args.duration:g} --clients {args.clients}`\n\n{report}\n"
                                 + (f"\n{READING}{reading}" if reading else ""))


if __name__ == "__main__":
    main()
