"""A real federated deployment: Flower's SuperLink (the aggregator), one SuperNode per hospital, and runs.

The three commands are Flower's own executables, started with the settings a hospital consortium needs:

* ``cloudmri fl superlink`` → ``flower-superlink`` on 127.0.0.1 (``--host`` to open it), with TLS from
  certificate files (or ``--insecure`` for loopback tests), optional SuperNode authentication and a state
  database, and runtime dependency installation off.
* ``cloudmri fl site --site NAME`` → ``flower-supernode`` for one site; its node config (:class:`SiteConfig`)
  says where the site's data are (its own store, ``--data-dir``), and only this process reads them.
* ``cloudmri fl site-key`` makes a site's key pair for SuperNode authentication, and ``cloudmri fl register-site
  KEY.pub`` registers its public key with a SuperLink started with ``--node-auth`` (Flower's ``flwr supernode
  register`` over the Control API); only registered sites are then let in.
* ``cloudmri fl run EXPERIMENT.yaml`` → ``flwr run`` of the bundled Flower App (``app/pyproject.toml``: the
  ServerApp :mod:`.server` and ClientApp :mod:`.site` of the installed package) against the SuperLink, with the
  experiment's settings as run config. The connection is written to a private ``FLWR_HOME``.

Flower's telemetry, update check and runtime dependency installation are off in every process
(:data:`cloudmri_kernel.federated.FLOWER_ENV`).

References:
    Flower documentation: "Run Flower with the Deployment Runtime", "Enable TLS connections",
    "Authenticate SuperNodes" (flower.ai/docs/framework, 1.42).
"""

from __future__ import annotations

import base64
import json
import os
import sys
from dataclasses import asdict, fields
from pathlib import Path

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.federated import FLOWER_ENV
from cloudmri_kernel.federated.experiment import ExperimentConfig
from cloudmri_kernel.federated.sites import SiteConfig

APP_DIR = Path(__file__).parent / "app"
DEFAULT_SUPERLINK_PORT = 9093
DEFAULT_SUPERNODE_PORT = 9094


def executable(name: str) -> str:
    """A Flower executable of this environment (beside this Python), so the venv's Flower is the one run."""
    path = Path(sys.executable).parent / name
    if not path.is_file():
        raise UsageError(f"{name} is not installed in this environment (pip install flwr==1.42.0)")
    return str(path)


def flower_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for Flower's processes: Flower's switches off, and this environment's executables first on
    PATH (the SuperLink and SuperNodes start ``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp`` by
    name, and the environment may not be activated)."""
    env = {**(os.environ if base is None else base), **FLOWER_ENV}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    return env


def _check_files(*paths: Path | None) -> None:
    for path in paths:
        if path is not None and not Path(path).is_file():
            raise UsageError("no such file", path)


def superlink_command(port: int = DEFAULT_SUPERLINK_PORT, host: str = "127.0.0.1", *, insecure: bool = False,
                      certfile: Path | None = None, keyfile: Path | None = None, ca_certfile: Path | None = None,
                      database: Path | None = None, node_auth: bool = False) -> list[str]:
    """The SuperLink's command line: TLS unless ``insecure`` (then all three certificate files are needed)."""
    command = [executable("flower-superlink"), "--host", host, "--port", str(port),
               "--disable-runtime-dependency-installation"]
    if insecure:
        command.append("--insecure")
    else:
        if None in (certfile, keyfile, ca_certfile):
            raise UsageError("TLS needs --ssl-certfile, --ssl-keyfile and --ssl-ca-certfile (or --insecure on a "
                             "loopback test)")
        _check_files(certfile, keyfile, ca_certfile)
        command += ["--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile), "--ssl-ca-certfile",
                    str(ca_certfile)]
    if database is not None:
        command += ["--database", str(database)]
    if node_auth:
        if insecure:
            raise UsageError("SuperNode authentication needs TLS: give the certificate files instead of --insecure")
        command.append("--enable-supernode-auth")
    return command


def make_site_key(folder: Path, site: str) -> tuple[Path, Path]:
    """A site's key pair for SuperNode authentication: EC P-384 in OpenSSH format, as Flower reads them.

    ``SITE.key`` (mode 0600, given to the site's ``--auth-private-key``) and ``SITE.pub`` (registered with the
    SuperLink). An existing key is never overwritten.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = Path(folder)
    private, public = folder / f"{site}.key", folder / f"{site}.pub"
    for path in (private, public):
        if path.exists():
            raise UsageError("a key of this site exists already: use it, or move it away first", path)
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    descriptor = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH) + f" {site}\n".encode())
    return private, public


def register_command(public_key: Path, name: str | None = None) -> list[str]:
    """``flwr supernode register`` of a site's public key at the SuperLink ``FLWR_HOME`` names (see
    :func:`write_connection`)."""
    _check_files(public_key)
    return [executable("flwr"), "supernode", "register", str(public_key), "cloudmri",
            *(["--name", name] if name else [])]


def site_from_settings(name: str, settings: list[str], data_dir: Path | None = None) -> SiteConfig:
    """A SiteConfig from ``KEY=VALUE`` settings (types from SiteConfig's fields); ``data_dir`` means its store."""
    known = {f.name: f.type for f in fields(SiteConfig)}
    values: dict = {"name": name}
    for item in settings:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known or key in ("name", "data_dir", "source"):
            raise UsageError(f"bad site setting {item!r}: KEY=VALUE with KEY one of "
                             f"{', '.join(k for k in known if k not in ('name', 'data_dir', 'source'))}")
        kind = {"int": int, "float": float}.get(str(known[key]), str)
        try:
            values[key] = kind(text)
        except ValueError:
            raise UsageError(f"bad site setting {item!r}: {key} is a number") from None
    if data_dir is not None:
        values.update(source="store", data_dir=str(Path(data_dir).resolve()))
    return SiteConfig(**values)


def node_config(site: SiteConfig) -> str:
    """Flower's ``--node-config`` text for a site: space-separated key=value, strings quoted as TOML."""
    parts = []
    for key, value in asdict(site).items():
        parts.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    return " ".join(parts)


def supernode_command(site: SiteConfig, superlink: str, port: int = DEFAULT_SUPERNODE_PORT, *,
                      insecure: bool = False, root_certificates: Path | None = None,
                      auth_private_key: Path | None = None) -> list[str]:
    """A site's SuperNode command line (the ClientApp runs in a subprocess of it, on this site's data)."""
    command = [executable("flower-supernode"), "--superlink", superlink, "--host", "127.0.0.1", "--port",
               str(port), "--node-config", node_config(site)]
    if insecure:
        command.append("--insecure")
    elif root_certificates is not None:
        _check_files(root_certificates)
        command += ["--root-certificates", str(root_certificates)]
    if auth_private_key is not None:
        _check_files(auth_private_key)
        if insecure:
            raise UsageError("SuperNode authentication needs TLS: give --root-certificates instead of --insecure")
        if Path(auth_private_key).stat().st_mode & 0o077:
            raise UsageError("the private key is readable by others: chmod 600 it", auth_private_key)
        command += ["--auth-supernode-private-key", str(auth_private_key)]
    return command


def write_connection(flwr_home: Path, superlink: str, *, insecure: bool = False,
                     root_certificates: Path | None = None) -> Path:
    """A Flower Configuration (``FLWR_HOME/config.toml``) with one connection, ``cloudmri``, to the SuperLink."""
    flwr_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = ["[superlink]", 'default = "cloudmri"', "", "[superlink.cloudmri]", f"address = {json.dumps(superlink)}"]
    if insecure:
        lines.append("insecure = true")
    elif root_certificates is not None:
        _check_files(root_certificates)
        lines.append(f"root-certificates = {json.dumps(str(Path(root_certificates).resolve()))}")
    path = flwr_home / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_command(config: ExperimentConfig, out_dir: Path, *, created_by: str = "federated", record: bool = True,
                stream: bool = True) -> list[str]:
    """``flwr run`` of the bundled app with the experiment as run config (``FLWR_HOME`` names the SuperLink).

    The experiment travels as base64 of its JSON: Flower's run config holds flat scalars, and its parser takes
    no quotes inside strings.
    """
    experiment = base64.urlsafe_b64encode(json.dumps(asdict(config)).encode()).decode()
    overrides = (f"experiment={json.dumps(experiment)} out-dir={json.dumps(str(Path(out_dir).resolve()))} "
                 f"created-by={json.dumps(created_by)} record={'true' if record else 'false'}")
    command = [executable("flwr"), "run", str(APP_DIR), "cloudmri", "--run-config", overrides]
    if stream:
        command.append("--stream")
    return command
