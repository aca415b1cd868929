"""A real deployment on loopback: `cloudmri fl superlink`, one `cloudmri fl site` process per hospital reading
its own encrypted store, and `cloudmri fl run`; the aggregator's processes are watched by an audit hook that
logs every file they open, which proves that none of them opens a site's store."""

import datetime
import ipaddress
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from cloudmri_kernel.catalog.db import Catalog
from cloudmri_kernel.catalog.models import Experiment, Model
from cloudmri_kernel.crypto import KeyRing
from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from cloudmri_kernel.processes import ProcessGroup, free_port
from cloudmri_kernel.recon.model_files import load_model
from cloudmri_kernel.store.objects import ObjectStore

pytestmark = pytest.mark.slow
AUDIT_DIR = Path(__file__).parent / "open_audit"
EXPERIMENT = """
name: loopback
strategy: fedavg
rounds: 2
min_sites: 2
architecture: {unrolls: 1, cg_iterations: 2, features: 8, depth: 3}
"""


def _site_store(data_dir: Path, site: str, coils: int, seed: int) -> None:
    """A site's platform data dir whose store holds fully sampled raw files (phantom slices)."""
    data_dir.mkdir(parents=True)
    store = ObjectStore(data_dir / "store", KeyRing(data_dir / "keys" / "kek"))
    for index in range(2):
        path = write_phantom(data_dir / f"scan{index}.h5", PhantomSpec(matrix=32, coils=coils, slices=3,
                                                                     noise=0.01 * (index + 1), seed=seed + index))
        store.put(path, site=site)
        path.unlink()


def _wait_for(predicate, timeout: float, what: str, processes) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for process in processes:
            if process.started and process.exited():
                pytest.fail(f"{what}: a process ended early:\n{process.log_since_start()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: timed out:\n" + "\n".join(p.log_since_start()[-2000:] for p in processes))
        time.sleep(0.5)


CLOUDMRI = [sys.executable, "-m", "cloudmri_kernel"]
SITES = {"charite": (4, 0), "ruijin": (8, 10)}  # site: (coils, seed) of its stored phantom scans


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls(folder: Path, name: str = "consortium") -> TlsFiles:
    """A CA and a server certificate for 127.0.0.1 and localhost signed by it (PEM; the key 0600)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key, issuer: str, issuer_key, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    server_key = ec.generate_private_key(ec.SECP256R1())
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    files.ca.write_bytes(certificate(f"{name} CA", ca_key, f"{name} CA", ca_key, True)
                         .public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(certificate("127.0.0.1", server_key, f"{name} CA", ca_key, False)
                           .public_bytes(serialization.Encoding.PEM))
    files.key.touch(mode=0o600)
    files.key.write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    return files


def loopback_deployment(tmp_path: Path, aggregator_env: dict, site_env, tls: TlsFiles | None = None,
                        site_keys: Path | None = None) -> tuple[int, list[ProcessGroup]]:
    """A SuperLink (data directory ``tmp_path/aggregator``, environment ``aggregator_env``) and one ``cloudmri fl
    site`` per site of :data:`SITES` over its own encrypted store (environment ``site_env(site)``), not started;
    the SuperLink's port and the processes, SuperLink first. With ``tls`` the SuperLink serves that certificate
    and the sites trust that CA; else both run ``--insecure``. With ``site_keys`` (a folder of ``SITE.key``) the
    SuperLink lets in registered sites only and each site signs with its key."""
    for site, (coils, seed) in SITES.items():
        _site_store(tmp_path / site, site, coils, seed)
    port = free_port()
    (tmp_path / "aggregator").mkdir()
    served = (["--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key), "--ssl-ca-certfile", str(tls.ca)]
              if tls else ["--insecure"])
    superlink = ProcessGroup([*CLOUDMRI, "fl", "superlink", *served, "--port", str(port),
                              *(["--node-auth"] if site_keys else [])],
                             {**aggregator_env, "CLOUDMRI_DATA_DIR": str(tmp_path / "aggregator")},
                             tmp_path / "superlink.log")
    nodes = [site_process(tmp_path, site, port, site_env(site),
                          (["--root-certificates", str(tls.ca)] if tls else ["--insecure"])
                          + (["--auth-private-key", str(site_keys / f"{site}.key")] if site_keys else []))
             for site in SITES]
    return port, [superlink, *nodes]


def site_process(tmp_path: Path, site: str, port: int, env: dict, security: list[str]) -> ProcessGroup:
    """``cloudmri fl site`` for ``site`` over ``tmp_path/site``'s store, connecting to the SuperLink's port."""
    return ProcessGroup([*CLOUDMRI, "fl", "site", "--site", site, "--superlink", f"127.0.0.1:{port}", *security,
                         "--port", str(free_port()), "--data-dir", str(tmp_path / site), "--set", "calib=8",
                         "--set", "test_count=2"], env, tmp_path / f"{site}.log")


def start_deployment(processes: list[ProcessGroup]) -> None:
    """Start the SuperLink, then the sites, and wait until both sites are connected."""
    superlink, *nodes = processes
    superlink.start()
    _wait_for(lambda: "Uvicorn running" in superlink.log_since_start(), 60, "SuperLink start", processes)
    for node in nodes:
        node.start()
    _wait_for(lambda: superlink.log_since_start().count("Activated node_id") >= 2, 60, "sites connect", processes)


def _opened(prefix: Path) -> set[str]:
    paths = set()
    for log in prefix.parent.glob(prefix.name + ".*"):
        paths.update(log.read_text().splitlines())
    return paths


def test_loopback_deployment_trains_across_sites_and_the_aggregator_never_opens_a_site_store(tmp_path):
    base = {**os.environ, "PYTHONPATH": str(AUDIT_DIR)}
    aggregator_dir = tmp_path / "aggregator"
    port, processes = loopback_deployment(
        tmp_path, {**base, "CLOUDMRI_OPEN_LOG": str(tmp_path / "open-aggregator")},
        lambda site: {**base, "CLOUDMRI_OPEN_LOG": str(tmp_path / f"open-{site}")})
    try:
        start_deployment(processes)
        (tmp_path / "exp.yaml").write_text(EXPERIMENT)
        run = subprocess.run([*CLOUDMRI, "fl", "run", str(tmp_path / "exp.yaml"), "--superlink",
                              f"127.0.0.1:{port}", "--insecure", "--out", str(tmp_path / "models")],
                             capture_output=True, text=True, timeout=600, env=base)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        _wait_for(lambda: (tmp_path / "models" / "round-2.json").is_file(), 120, "final model", processes)
    finally:
        for process in processes:
            process.stop()

    catalog = Catalog.open(f"sqlite:///{aggregator_dir / 'catalog.sqlite'}", migrate=False)
    with catalog.session() as session:
        experiment = session.scalars(select(Experiment)).one()
        assert experiment.status == "finished" and experiment.sites == ["charite", "ruijin"]
        assert [(r["trained"], r["failed"], r["complete"]) for r in experiment.metrics] == \
            [(["charite", "ruijin"], {}, True)] * 2
        for round_metrics in experiment.metrics:
            assert set(round_metrics["evaluate"]) == {"charite", "ruijin"}
            assert all(0 < m["ssim"] <= 1 for m in round_metrics["evaluate"].values())
        final = session.scalars(select(Model).where(Model.round == 2)).one()
    catalog.engine.dispose()
    _, card = load_model(tmp_path / "models" / "round-2.pt", expected_sha256=final.sha256)
    assert card["round"] == 2

    stores = [str(tmp_path / site / "store") for site in SITES]
    aggregator_opened = _opened(tmp_path / "open-aggregator")
    assert any("flwr" in path for path in aggregator_opened), "the audit hook did not run in the aggregator"
    assert not [p for p in aggregator_opened if any(p.startswith(store) for store in stores)]
    for site in SITES:
        site_opened = _opened(tmp_path / f"open-{site}")
        own = [p for p in site_opened if p.startswith(str(tmp_path / site / "store"))]
        other = [p for s in SITES if s != site for p in site_opened if p.startswith(str(tmp_path / s / "store"))]
        assert own, f"{site} never read its own store"
        assert not other, f"{site} opened another site's store"


def test_over_tls_sites_that_trust_the_consortium_ca_train_and_one_that_does_not_is_kept_out(tmp_path):
    """The SuperLink serves a certificate of the consortium's CA; both sites verify it and train; a third process
    that trusts another CA fails the TLS handshake and never joins; `fl run` verifies the SuperLink too."""
    tls, stranger = make_tls(tmp_path / "tls"), make_tls(tmp_path / "other-tls", "another")
    port, processes = loopback_deployment(tmp_path, dict(os.environ), lambda site: dict(os.environ), tls=tls)
    _site_store(tmp_path / "intruder", "intruder", 4, 20)
    intruder = site_process(tmp_path, "intruder", port, dict(os.environ), ["--root-certificates", str(stranger.ca)])
    try:
        start_deployment(processes)
        intruder.start()
        (tmp_path / "exp.yaml").write_text(EXPERIMENT.replace("rounds: 2", "rounds: 1"))
        run = subprocess.run([*CLOUDMRI, "fl", "run", str(tmp_path / "exp.yaml"), "--superlink",
                              f"127.0.0.1:{port}", "--root-certificates", str(tls.ca), "--out",
                              str(tmp_path / "models")], capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        _wait_for(lambda: (tmp_path / "models" / "round-1.json").is_file(), 120, "final model", processes)
        untrusting = subprocess.run([*CLOUDMRI, "fl", "run", str(tmp_path / "exp.yaml"), "--superlink",
                                     f"127.0.0.1:{port}", "--root-certificates", str(stranger.ca), "--out",
                                     str(tmp_path / "other-models")], capture_output=True, text=True, timeout=120)
        superlink_log, intruder_log = processes[0].log_since_start(), intruder.log_since_start()
    finally:
        for process in [intruder, *processes]:
            process.stop()
    assert superlink_log.count("Activated node_id") == 2, superlink_log[-3000:]
    assert "CERTIFICATE_VERIFY_FAILED" in intruder_log or "certificate verify failed" in intruder_log.lower(), \
        intruder_log[-3000:]
    assert untrusting.returncode != 0 and not (tmp_path / "other-models").exists()
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'aggregator' / 'catalog.sqlite'}", migrate=False)
    with catalog.session() as session:
        experiment = session.scalars(select(Experiment)).one()
        assert experiment.status == "finished" and experiment.sites == ["charite", "ruijin"]
    catalog.engine.dispose()


def test_with_node_auth_only_sites_whose_keys_are_registered_are_let_in(tmp_path):
    """`fl site-key` makes each site's key pair; the SuperLink runs with --node-auth over TLS; `fl register-site`
    registers charite's public key only: charite is activated, ruijin (a valid key, never registered) is not."""
    tls = make_tls(tmp_path / "tls")
    for site in SITES:
        made = subprocess.run([*CLOUDMRI, "fl", "site-key", "--site", site, "--out", str(tmp_path / "keys")],
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        assert (tmp_path / "keys" / f"{site}.key").stat().st_mode & 0o777 == 0o600
    again = subprocess.run([*CLOUDMRI, "fl", "site-key", "--site", "charite", "--out", str(tmp_path / "keys")],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "a key of this site exists already" in again.stderr
    port, (superlink, *nodes) = loopback_deployment(tmp_path, dict(os.environ), lambda site: dict(os.environ),
                                                    tls=tls, site_keys=tmp_path / "keys")
    try:
        superlink.start()
        _wait_for(lambda: "Uvicorn running" in superlink.log_since_start(), 60, "SuperLink start", [superlink])
        no_tls = subprocess.run([*CLOUDMRI, "fl", "register-site", str(tmp_path / "keys" / "charite.pub"),
                                 "--superlink", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
        assert no_tls.returncode == 2 and "registering a site needs TLS" in no_tls.stderr
        registered = subprocess.run([*CLOUDMRI, "fl", "register-site", str(tmp_path / "keys" / "charite.pub"),
                                     "--superlink", f"127.0.0.1:{port}", "--root-certificates", str(tls.ca),
                                     "--name", "charite"], capture_output=True, text=True, timeout=60)
        assert registered.returncode == 0, registered.stdout + registered.stderr
        assert "registered successfully" in registered.stdout
        for node in nodes:
            node.start()
        _wait_for(lambda: "Activated node_id" in superlink.log_since_start(), 60, "charite connects",
                  [superlink, *nodes])
        _wait_for(lambda: "SuperNode ID" in nodes[0].log_since_start(), 30, "charite's node id", nodes)
        time.sleep(10)  # ruijin has been trying all along
        superlink_log, (charite_log, ruijin_log) = superlink.log_since_start(), [n.log_since_start() for n in nodes]
    finally:
        for process in [*nodes, superlink]:
            process.stop()
    assert superlink_log.count("Activated node_id") == 1, superlink_log[-3000:]
    charite_id = charite_log.split("SuperNode ID:")[1].split()[0]
    assert f"Activated node_id={charite_id}" in superlink_log
    assert "SuperNode ID" not in ruijin_log, ruijin_log[-3000:]
    assert '"POST /v1/fleet/activate-node HTTP/1.1" 412' in superlink_log  # ruijin's key is not registered
