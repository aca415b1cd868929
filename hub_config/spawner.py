"""The single-machine spawner: every user's Jupyter server runs as that user's own system account.

When the hub runs as root, a hub user ``alice`` gets a locked system account ``cm-alice`` (created on first
start, no password, no login shell, home ``HOMES/cm-alice`` with mode 0700) and her server runs as it, so her
kernels cannot read the data directory, the site keys or the object store (root-owned, 0700), nor other
users' homes. Without root there is nobody to switch to: servers run as the hub's own account, and the hub log
says so once (a single-person laptop set-up, not a shared one).

The user picks a profile (:mod:`hub_config.profiles`) on the spawn page or with ``user_options={"profile":
slug}`` through the API; GPU profiles are offered and accepted only for GPU groups, and the choice is enforced:
the CPU profile's server sees no GPU (``CUDA_VISIBLE_DEVICES`` empty) and only its share of cores (CPU
affinity and the thread-pool variables); a GPU profile sees one GPU.

Every server starts with the Cloud-MRI server extension (``JUPYTER_CONFIG_PATH``), the Cloud-MRI kernel
(installed into the venv by the set-up), ``CLOUDMRI_SERVICE_URL`` pointing at the API service through the hub,
and a server token that carries the user's Cloud-MRI scopes. Radiologists get the reading mode
(:mod:`cloudmri_jupyter.reading`): Voilà dashboards from ``notebooks/apps`` and no way to run code of their own.

``start`` returns once the new server answers HTTP, checked every 50 ms. The hub then checks it once and
redirects the user; left to itself, the hub polls with exponential backoff and full jitter (waits of up to 0.2,
0.4, 0.8, 1.6 s …, ``jupyterhub.utils.exponential_backoff``), which adds up to about the server's own start time
again before the user sees anything.

References:
    JupyterHub documentation, "Spawners" (LocalProcessSpawner, ``Spawner.options_form``,
    ``Spawner.server_token_scopes``); JupyterHub security overview (one system user per server).
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import os
import pwd
import re
import shutil
import subprocess
import time
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Unicode, default

from hub_config.profiles import PROFILES, Profile, local_gpus, profiles_for, server_args

ROOT = Path(__file__).resolve().parent.parent
READERS_GROUP = "radiologists"
READING_APP = "/voila/render/reading.ipynb"
VALID = re.compile(r"[a-z_][a-z0-9_-]*")


def system_name(hub_name: str, prefix: str = "cm-") -> str:
    """The system account of a hub user: ``prefix`` + the name where that is a valid account name (≤ 32
    chars), else a readable part and a hash, so that two hub names never share an account."""
    if VALID.fullmatch(hub_name) and len(prefix + hub_name) <= 32:
        return prefix + hub_name
    readable = re.sub(r"[^a-z0-9_-]", "-", hub_name.lower())[:12].strip("-") or "user"
    return f"{prefix}{readable}-{hashlib.sha256(hub_name.encode()).hexdigest()[:10]}"


def ensure_system_user(name: str, homes: Path) -> pwd.struct_passwd:
    """The account ``name``, created locked with a private home under ``homes`` if it does not exist."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    homes.mkdir(parents=True, exist_ok=True)
    os.chmod(homes, 0o755)
    created = subprocess.run(["useradd", "--system", "--create-home", "--home-dir", str(homes / name), "--shell",
                              "/usr/sbin/nologin", "--user-group", "--comment", "Cloud-MRI workbench user", name],
                             capture_output=True, text=True)
    try:
        account = pwd.getpwnam(name)  # made by us, or by a spawn of the same user that won the race
    except KeyError:
        raise RuntimeError(f"could not create the system account {name}: {created.stderr.strip()}") from None
    os.chmod(account.pw_dir, 0o700)
    return account


class CloudMRISpawner(LocalProcessSpawner):
    homes_dir = Unicode("/home", config=True,
                        help="Where the system accounts' home directories are created (mode 0755; each home 0700).")
    system_prefix = Unicode("cm-", config=True, help="Prefix of the system account names.")
    service_url = Unicode("", config=True, help="The Cloud-MRI API service as the user's kernels reach it.")

    @property
    def isolated(self) -> bool:
        """Servers run as their own system accounts (the hub runs as root)."""
        return os.geteuid() == 0

    @property
    def account(self) -> str:
        return (system_name(self.user.name, self.system_prefix) if self.isolated
                else pwd.getpwuid(os.geteuid()).pw_name)

    @property
    def reader(self) -> bool:
        return READERS_GROUP in {group.name for group in self.user.groups} and not self.user.admin

    @default("oauth_access_scopes")
    def _access_scopes(self) -> list[str]:
        """Who may use this server: its owner, and holders of an ``access:servers!group=G`` scope for one of the
        owner's groups (an instructor for the ``students`` group): the single-user server's token check does not
        resolve group filters to users by itself (``jupyterhub.services.auth.check_scopes``)."""
        return [f"access:servers!server={self.user.name}/{self.name}", f"access:servers!user={self.user.name}",
                *(f"access:servers!group={group.name}" for group in self.user.groups)]

    def _profiles(self) -> list[Profile]:
        return profiles_for({group.name for group in self.user.groups}, gpus_available=local_gpus() > 0)

    def _options_form(self, spawner) -> str:
        """Radio buttons of the profiles this user may start; none when there is only one to choose."""
        profiles = self._profiles()
        if len(profiles) < 2 or self.reader:
            return ""
        rows = [f'<label class="cloudmri-profile"><input type="radio" name="profile" value="{p.slug}"'
                f'{" checked" if n == 0 else ""}> <strong>{html.escape(p.display_name)}</strong> — '
                f'{html.escape(p.description)}</label><br>' for n, p in enumerate(profiles)]
        return "\n".join(rows)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.options_form = self._options_form

    def options_from_form(self, formdata: dict) -> dict:
        options = {"profile": formdata.get("profile", [PROFILES[0].slug])[0]}
        self.profile(options)
        return options

    def profile(self, options: dict | None = None) -> Profile:
        """The chosen profile; an HTTP 400 (shown on the spawn page, returned by the API) for one this user may
        not start."""
        chosen = self.user_options if options is None else options
        slug = (chosen or {}).get("profile", PROFILES[0].slug)
        allowed = {profile.slug: profile for profile in self._profiles()}
        if slug not in allowed:
            known = {profile.slug for profile in PROFILES}
            reason = "is not a profile" if slug not in known else "is not available to your groups on this hub"
            error = web.HTTPError(400, f"Profile '{slug}' {reason}; choose one of: {', '.join(sorted(allowed))}")
            error.jupyterhub_message = error.log_message
            raise error
        return allowed[slug]

    def _home(self) -> Path:
        if self.isolated:
            return Path(ensure_system_user(self.account, Path(self.homes_dir)).pw_dir)
        home = Path(self.homes_dir) / system_name(self.user.name, self.system_prefix)
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        return home

    async def start(self):
        profile = self.profile()
        try:
            home = self._home()
        except (OSError, RuntimeError) as exc:
            error = web.HTTPError(503, f"Your server could not be prepared: {exc}")
            error.jupyterhub_message = error.log_message
            raise error from exc
        self._profile = profile
        self.notebook_dir = str(home)
        if self.reader:
            from cloudmri_jupyter.reading import reading_mode_args

            self.args = reading_mode_args(ROOT / "notebooks" / "apps")
            self.default_url = READING_APP
        else:
            self._copy_apps(home)
            self.args = server_args(profile)
        self.log.info("Starting %s's server as %s with profile %s", self.user.name, self.account, profile.slug)
        ip, port = await super().start()
        await self._answering(f"http://{ip or '127.0.0.1'}:{port}{self.server.base_url}api")
        return ip, port

    async def _answering(self, url: str, step: float = 0.05) -> None:
        """Wait until the server at ``url`` gives any non-5xx answer, its process ends, or ``http_timeout``
        passes (the hub's own check then decides and reports)."""
        client = AsyncHTTPClient()
        deadline = time.monotonic() + self.http_timeout
        while time.monotonic() < deadline and await self.poll() is None:
            try:
                await client.fetch(url, follow_redirects=False, request_timeout=step * 20)
                return
            except HTTPClientError as error:
                if error.code < 500:
                    return
            except OSError:
                pass
            await asyncio.sleep(step)

    def _copy_apps(self, home: Path) -> None:
        """The dashboards of notebooks/apps into the user's home (refreshed at each start), owned by the user."""
        source, target = ROOT / "notebooks" / "apps", home / "apps"
        if not source.is_dir():
            return
        shutil.copytree(source, target, dirs_exist_ok=True)
        if self.isolated:
            account = pwd.getpwnam(self.account)
            for path in [target, *target.rglob("*")]:
                os.chown(path, account.pw_uid, account.pw_gid)

    def make_preexec_fn(self, name):
        cores = self._cores()
        switch = set_user_setuid(self.account) if self.isolated else None

        def preexec():
            if switch is not None:
                switch()
            os.sched_setaffinity(0, cores)

        return preexec

    def _cores(self) -> set[int]:
        usable = sorted(os.sched_getaffinity(0))
        return set(usable[:max(1, min(self._profile.cpus, len(usable)))])

    def user_env(self, env: dict) -> dict:
        env.update({"USER": self.account, "LOGNAME": self.account, "HOME": str(self._home()), "SHELL": "/bin/bash"})
        return env

    def get_env(self) -> dict:
        env = super().get_env()
        profile = getattr(self, "_profile", PROFILES[0])
        threads = str(min(profile.cpus, len(os.sched_getaffinity(0))))
        env.update({
            "CLOUDMRI_SERVICE_URL": self.service_url,
            "CLOUDMRI_PROFILE": profile.slug,
            "CUDA_VISIBLE_DEVICES": ",".join(str(n) for n in range(profile.gpus)),
            "JUPYTER_CONFIG_PATH": str(ROOT / "extensions" / "jupyter-config"),
            "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
            "PATH": f"{Path(self.cmd[0]).parent}:/usr/local/bin:/usr/bin:/bin",
        })
        return env
