"""The workbench's authenticator: NativeAuthenticator with the workbench's password and lockout rules.

Sign-up needs an admin's approval; passwords need 10 characters and must not be among the common passwords
NativeAuthenticator ships; after 3 failed logins an account waits 10 minutes. Every sign-in attempt, accepted or
refused (with why: unknown user, not approved, locked, wrong password), is an audit event in the catalog and
the ECS audit file, beside the API service's own events. ``demo_accounts_file`` (used by
``cloudmri up --demo`` only) names a 0600 JSON file of ``{"user": "password"}`` whose accounts are created
approved at start.

References:
    jupyterhub-nativeauthenticator documentation (sign-up, authorization, login attempts), version 1.3.
"""

from __future__ import annotations

import asyncio
import json
from functools import cached_property
from pathlib import Path

import bcrypt
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.orm import UserInfo
from traitlets import Unicode


class CloudMRIAuthenticator(NativeAuthenticator):
    demo_accounts_file = Unicode(
        "", config=True,
        help="JSON file (mode 0600) of demo accounts {name: password}, created approved at start; empty: none. "
        "Set by `cloudmri up --demo`, e.g. /srv/cloudmri/hub/demo-accounts.json.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.demo_accounts_file:
            self._create_demo_accounts(Path(self.demo_accounts_file))

    def _create_demo_accounts(self, path: Path) -> None:
        if path.stat().st_mode & 0o077:
            raise ValueError(f"{path}: demo account passwords are readable by others: chmod 600 it")
        for name, password in json.loads(path.read_text()).items():
            if self.user_exists(name):
                continue
            if not self.is_password_strong(password):
                raise ValueError(f"demo account {name}: the password breaks the password rules")
            self.db.add(UserInfo(username=name, password=bcrypt.hashpw(password.encode(), bcrypt.gensalt()),
                                 is_authorized=True))
        self.db.commit()

    @cached_property
    def audit(self):
        from cloudmri_kernel.catalog import Catalog
        from cloudmri_kernel.config import settings
        from cloudmri_kernel.monitor.audit import AuditLog

        config = settings()
        return AuditLog(Catalog.open(config.catalog_url), config.data_dir / "audit" / "audit.jsonl")

    async def authenticate(self, handler, data):
        name = self.normalize_username(data.get("username", ""))
        known = self.get_user(name)
        locked = bool(known and self.allowed_failed_logins and self.is_blocked(name))
        accepted = await super().authenticate(handler, data)
        if accepted:
            outcome, reason = "success", ""
        elif known is None:
            outcome, reason = "failure", "unknown user"
        elif locked:
            outcome, reason = "failure", "account locked after repeated failed sign-ins"
        elif not known.is_authorized:
            outcome, reason = "failure", "account not yet approved by an admin"
        else:
            outcome, reason = "failure", "wrong password"
        await asyncio.to_thread(self.audit.record, "hub.login", "authentication", outcome, name or None,
                                source_ip=handler.request.remote_ip, path=handler.request.path,
                                http_method="POST", reason=reason)
        return accepted
