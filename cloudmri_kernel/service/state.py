"""Everything the API service holds, behind the trust boundary: catalog, store, keys, audit, tokens, jobs.

The service's data directory is private to the service's system user (mode 0700): user servers and kernels run
as other users and reach data only through the API.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from cloudmri_kernel.catalog import Catalog
from cloudmri_kernel.catalog.models import Upload, utcnow
from cloudmri_kernel.config import Settings, settings
from cloudmri_kernel.monitor.audit import AuditLog
from cloudmri_kernel.service.identity import HubTokens, LocalTokens
from cloudmri_kernel.service.images import ImageCache
from cloudmri_kernel.service.ledger import ServiceLedger
from cloudmri_kernel.service.staging import UploadStaging
from cloudmri_kernel.store import ObjectStore


@dataclass
class ServiceState:
    config: Settings
    catalog: Catalog
    store: ObjectStore
    audit: AuditLog
    tokens: LocalTokens | HubTokens
    staging: UploadStaging
    images: ImageCache
    work_dir: Path
    max_chunk_bytes: int
    ledger: ServiceLedger | None = None

    @classmethod
    def open(cls, config: Settings | None = None, hub_mode: bool | None = None) -> ServiceState:
        """Open (and migrate) the catalog, the store and the service's private directories.

        ``hub_mode`` None: JupyterHub tokens when the hub's API URL is known (CLOUDMRI_HUB_API_URL or, when the
        hub runs this service, JUPYTERHUB_API_URL), else local tokens.
        """
        config = config or settings()
        service_dir = config.data_dir / "service"
        service_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(config.data_dir, 0o700)
        hub_url = config.hub_api_url or os.environ.get("JUPYTERHUB_API_URL")
        use_hub = bool(hub_url) if hub_mode is None else hub_mode
        tokens = HubTokens(hub_url) if use_hub and hub_url else local_tokens(config)
        catalog = Catalog.open(config.catalog_url)
        work_dir = service_dir / "work"
        work_dir.mkdir(exist_ok=True, mode=0o700)
        staging = UploadStaging(service_dir / "staging")
        expire_stale_uploads(catalog, staging, timedelta(hours=config.upload_expiry_hours))
        audit = AuditLog(catalog, config.data_dir / "audit" / "audit.jsonl")
        ledger = ServiceLedger.from_settings(audit)
        if ledger is not None:
            ledger.queue_catalogued(catalog)
        return cls(config=config, catalog=catalog, store=ObjectStore.from_settings(config), audit=audit,
                   tokens=tokens, staging=staging, images=ImageCache(), work_dir=work_dir,
                   max_chunk_bytes=config.upload_chunk_mb << 20, ledger=ledger)

    def cuda_available(self) -> bool:
        import torch

        return torch.cuda.is_available()

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.stop()
        self.catalog.dispose()


def expire_stale_uploads(catalog: Catalog, staging: UploadStaging, expiry: timedelta) -> list[str]:
    """Give up uploads that have not moved for ``expiry`` and delete staged bytes no open upload owns, so that
    plaintext does not linger in the staging area."""
    cutoff = utcnow() - expiry
    expired = []
    with catalog.session() as session:
        for upload in session.scalars(select(Upload).where(Upload.status == "open")):
            written = staging.last_write(upload.id)
            last = max(upload.updated_at, datetime.fromtimestamp(written, UTC)) if written else upload.updated_at
            if last < cutoff:
                upload.status, upload.error = "failed", {"detail": f"no bytes arrived for {expiry}: expired"}
                expired.append(upload.id)
        still_open = set(session.scalars(select(Upload.id).where(Upload.status == "open")))
    staging.remove_all_but(still_open)
    return expired


def local_tokens(config: Settings | None = None) -> LocalTokens:
    config = config or settings()
    return LocalTokens(config.data_dir / "service" / "tokens.json")
