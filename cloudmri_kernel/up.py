"""``cloudmri up``: the whole workbench on one machine — JupyterHub, its proxy, and the Cloud-MRI API service
(which the hub starts and restarts as a managed service, with its Dask cluster).

The hub runs as a child process with ``hub_config/jupyterhub_config.py``; state stays under the data
directory, so a second ``up`` on the same directory resumes with all users and data. ``--demo`` adds one
account per role at a demo site (passwords generated once, kept in a 0600 file) and uploads phantom scans and,
when ``../shared/data`` is there, the real GRAPPA scan. Ctrl-C stops everything.

The ledger: unless ``CLOUDMRI_LEDGER_RPC_URL`` names a consortium's node, ``up`` starts anvil on 127.0.0.1 with its
chain in ``DATA_DIR/ledger/anvil-state.json`` (so a second ``up`` resumes it), deploys the contracts at the first
start with the site key ``DATA_DIR/ledger/keys/site.key`` (random, made once, mode 0600) as consortium admin and
registers it for the demo site (``--demo``) or ``CLOUDMRI_SITE``, and hands the ledger settings to the API service
through the hub's environment (``CLOUDMRI_LEDGER_*``).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.ledger.node import AnvilNode
from cloudmri_kernel.processes import ProcessGroup, free_port

ROOT = Path(__file__).resolve().parent.parent
HUB_CONFIG = ROOT / "hub_config" / "jupyterhub_config.py"
SHARED_GRAPPA = ROOT.parent / "shared" / "data" / "siemens_ssfp_grappa_r3.h5"
DEMO_SITE = "demo"
DEMO_USERS = {"researcher": "researchers", "radiologist": "radiologists", "instructor": "instructors",
              "admin": "admins"}


@dataclass
class Workbench:
    url: str
    hub: ProcessGroup
    hub_dir: Path
    manager_token: str
    demo_passwords: dict[str, str]
    ledger_node: AnvilNode | None = None

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM the hub (it stops the proxy and the API service it started), then end its whole group; then
        stop the ledger node, which saves its chain."""
        try:
            return self.hub.stop(signal.SIGTERM, timeout)
        finally:
            if self.ledger_node is not None:
                self.ledger_node.stop(timeout)


def _check_writable(data_dir: Path) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        data_dir.chmod(0o700)  # keys, store and hub secrets: no other account (user servers) may look inside
        with tempfile.NamedTemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        raise UsageError(f"the data directory is not writable ({exc.strerror})", data_dir) from None


def _private_text(path: Path, make: Callable[[], str]) -> str:
    """Read a 0600 file, or create it with ``make()``; refuse one that others can read."""
    from cloudmri_kernel.crypto.keyfiles import create_secret, read_secret

    if not path.exists():
        try:
            create_secret(path, make().encode())
        except FileExistsError:
            pass
    return read_secret(path, 1, what="secret file").decode()


def _demo_passwords(hub_dir: Path) -> dict[str, str]:
    text = _private_text(hub_dir / "demo-accounts.json",
                         lambda: json.dumps({name: secrets.token_urlsafe(12) for name in DEMO_USERS}))
    return json.loads(text)


def start(data_dir: Path, port: int = 8000, demo: bool = False, ip: str = "127.0.0.1",
          log: Path | None = None) -> Workbench:
    """Start the hub and wait until it and the API service answer."""
    if not HUB_CONFIG.exists():
        raise UsageError("the hub configuration is missing: run from a checkout of the workbench", HUB_CONFIG)
    _check_writable(data_dir)
    hub_dir = data_dir / "hub"
    hub_dir.mkdir(exist_ok=True, mode=0o700)
    manager_token_file = hub_dir / "manager.token"
    manager_token = _private_text(manager_token_file, lambda: secrets.token_hex(32))
    # the node first: it then holds its port while free ports are chosen for the hub, proxy and service
    node, ledger_env = start_ledger(data_dir, DEMO_SITE if demo else None, avoid_port=port)
    env = {**os.environ, "CLOUDMRI_DATA_DIR": str(data_dir), "CLOUDMRI_HUB_IP": ip, "CLOUDMRI_HUB_PORT": str(port),
           "CLOUDMRI_HUB_INTERNAL_PORT": str(free_port()), "CLOUDMRI_PROXY_API_PORT": str(free_port()),
           "CLOUDMRI_SERVICE_PORT": str(free_port()), "CLOUDMRI_MANAGER_TOKEN_FILE": str(manager_token_file),
           "CLOUDMRI_METRICS_TOKEN_FILE": str(hub_dir / "metrics.token")}
    _private_text(hub_dir / "metrics.token", lambda: secrets.token_hex(32))
    passwords: dict[str, str] = {}
    if demo:
        passwords = _demo_passwords(hub_dir)
        groups = {group: {"users": [name]} for name, group in DEMO_USERS.items()}
        groups[f"site-{DEMO_SITE}"] = {"users": list(DEMO_USERS)}
        groups.update({"students": {"users": []}, "gpu-users": {"users": []}})  # an instructor's class; GPU access
        env.update({"CLOUDMRI_DEMO_ACCOUNTS": str(hub_dir / "demo-accounts.json"),
                    "CLOUDMRI_HUB_GROUPS": json.dumps(groups)})
    env.update(ledger_env)
    hub = ProcessGroup([str(Path(sys.executable).parent / "jupyterhub"), "-f", str(HUB_CONFIG)], env,
                       log or hub_dir / "jupyterhub.log", cwd=hub_dir)
    try:
        hub.start()
    except BaseException:
        if node is not None:
            node.stop()
        raise
    workbench = Workbench(f"http://{ip}:{port}", hub, hub_dir, manager_token, passwords, node)
    try:
        _wait_until_up(workbench)
        if demo:
            _seed_demo(workbench)
    except BaseException:
        workbench.stop()
        raise
    return workbench


def start_ledger(data_dir: Path, site: str | None = None, avoid_port: int | None = None
                 ) -> tuple[AnvilNode | None, dict[str, str]]:
    """Start the local ledger node (unless ``CLOUDMRI_LEDGER_RPC_URL`` names another), deploy the contracts on
    the first start, and return the node and the ``CLOUDMRI_LEDGER_*`` settings for the API service.

    Args:
        data_dir: the workbench's data directory; the ledger's state is in ``DATA_DIR/ledger`` unless
            ``CLOUDMRI_LEDGER_DIR`` says otherwise.
        site: the site the new key anchors for (default ``CLOUDMRI_LEDGER_SITE`` or ``CLOUDMRI_SITE``).
        avoid_port: a port the node must not take (the hub's, not yet bound).

    Raises:
        UsageError: the chain no longer holds what was anchored (its state file was lost): ``cloudmri ledger
            check`` and ``reanchor`` repair it.
    """
    from cloudmri_kernel.ledger.client import Ledger
    from cloudmri_kernel.ledger.config import ledger_settings

    config = ledger_settings()
    updates: dict = {} if "CLOUDMRI_LEDGER_DIR" in os.environ else {"dir": data_dir / "ledger"}
    node = None
    if "CLOUDMRI_LEDGER_RPC_URL" not in os.environ:
        port = config.port
        if "CLOUDMRI_LEDGER_PORT" not in os.environ:
            while (port := free_port()) == avoid_port:
                pass
        node = AnvilNode(updates.get("dir", config.directory), port, config.anvil)
        node.start()
        updates["rpc_url"] = node.url
    config = config.model_copy(update=updates)
    try:
        with Ledger.from_settings(config) as ledger:
            if ledger.deployment is None:
                ledger.deploy(site or config.site_name)
            else:
                report = ledger.check_chain()
                if not report.ok:
                    raise UsageError(f"the ledger chain at {config.rpc_url} lost what was anchored "
                                     f"({report.problems[0]}): run `cloudmri ledger check`, then `cloudmri ledger "
                                     f"reanchor`, with CLOUDMRI_LEDGER_DIR={config.directory}")
    except BaseException:
        if node is not None:
            node.stop()
        raise
    return node, {"CLOUDMRI_LEDGER_DIR": str(config.directory), "CLOUDMRI_LEDGER_RPC_URL": config.rpc_url,
                  "CLOUDMRI_LEDGER_ENABLED": "true"}


def _wait_until_up(workbench: Workbench, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for path in ("/hub/health", "/services/cloudmri/health"):
        while True:
            try:
                if httpx.get(workbench.url + path, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if workbench.hub.exited():
                tail = workbench.hub.log_since_start()[-2000:]
                raise UsageError(f"JupyterHub stopped while starting; the end of its log:\n{tail}")
            if time.monotonic() > deadline:
                raise UsageError(f"the workbench did not answer on {workbench.url}{path} within {timeout:.0f} s; "
                                 f"see {workbench.hub_dir / 'jupyterhub.log'}")
            time.sleep(0.3)


def user_token(workbench: Workbench, user: str, note: str) -> str:
    """A hub API token for ``user`` (with the scopes of their roles), made with the manager service's token."""
    reply = httpx.post(f"{workbench.url}/hub/api/users/{user}/tokens", json={"note": note}, timeout=30,
                       headers={"Authorization": f"token {workbench.manager_token}"})
    if reply.status_code != 201:
        raise UsageError(f"JupyterHub refused a token for {user}: {reply.status_code} {reply.text[:200]}")
    return reply.json()["token"]


def _seed_demo(workbench: Workbench) -> None:
    """Phantom scans (and the real GRAPPA scan) in the demo site, uploaded once by the demo researcher, each
    reconstructed with its default recipe (the jobs run on the service's cluster while the hub is already up)
    and put on the demo radiologist's worklist by the demo admin, most accelerated first."""
    from cloudmri_kernel.client import Client
    from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom

    token = user_token(workbench, "researcher", "cloudmri up --demo")
    with Client(f"{workbench.url}/services/cloudmri", token) as client:
        if client.datasets(limit=1):
            return
        uploaded = []
        with tempfile.TemporaryDirectory() as scratch:
            for name, spec in (("phantom_full.h5", PhantomSpec(matrix=128, coils=8)),
                               ("phantom_grappa_r4.h5", PhantomSpec(matrix=128, coils=8, accel=4, calib=24)),
                               ("phantom_cs_r4.h5", PhantomSpec(matrix=128, coils=8, accel=4, pattern="poisson"))):
                uploaded.append(client.upload(write_phantom(Path(scratch) / name, spec)))
        if SHARED_GRAPPA.exists():
            uploaded.append(client.upload(SHARED_GRAPPA))
        for dataset in uploaded:
            client.submit(dataset["id"])
    admin = user_token(workbench, "admin", "cloudmri up --demo")
    with Client(f"{workbench.url}/services/cloudmri", admin) as client:
        for priority, dataset in zip((5, 5, 3, 1), reversed(uploaded), strict=False):
            client.assign(dataset["id"], "radiologist", priority=priority)
