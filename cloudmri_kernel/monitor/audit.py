"""The audit trail: one append-only event per read, write, grant, export and refused request.

Each event is a row of the catalog's ``audit_events`` table (whose database triggers refuse UPDATE and DELETE)
and a JSON line in Elastic Common Schema field names, so any SIEM can ingest the file as it is.

References:
    Elastic Common Schema (ECS) reference, version 8.11: fields ``@timestamp``, ``event.*``, ``user.name``,
    ``source.ip``, ``url.path``, ``http.*``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select

from cloudmri_kernel.catalog.models import AuditEvent, Dataset, utcnow

ECS_VERSION = "8.11.0"
log = logging.getLogger(__name__)


def to_ecs(event: AuditEvent) -> dict[str, Any]:
    """The event in Elastic Common Schema field names (nested objects, as Filebeat ships them)."""
    document: dict[str, Any] = {
        "@timestamp": event.timestamp.isoformat().replace("+00:00", "Z"),
        "ecs": {"version": ECS_VERSION},
        "event": {"kind": "event", "action": event.action, "category": [event.category], "outcome": event.outcome,
                  "sequence": event.id},
        "user": {"name": event.user} if event.user else {},
        "organization": {"name": event.site} if event.site else {},
        "service": {"name": "cloudmri-api"},
    }
    if event.source_ip:
        document["source"] = {"ip": event.source_ip}
    if event.path:
        document["url"] = {"path": event.path}
    if event.http_method:
        document["http"] = {"request": {"method": event.http_method},
                            "response": {"status_code": event.status_code}}
    if event.reason:
        document["event"]["reason"] = event.reason
    cloudmri = {key: value for key, value in (("dataset_id", event.dataset_id), ("object_id", event.object_id))
                if value}
    if event.details:
        cloudmri["details"] = event.details
    if cloudmri:
        document["cloudmri"] = cloudmri
    return document


@dataclass
class AuditLog:
    """Writes audit events to the catalog and to an ECS JSON-lines file.

    Args:
        catalog: the catalog (``cloudmri_kernel.catalog.Catalog``) whose ``audit_events`` table is the record.
        jsonl_path: the JSON-lines file (mode 0600, appended, one line per event).
    """

    catalog: Any
    jsonl_path: Path
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, action: str, category: str, outcome: str, user: str | None = None, *,
               site: str | None = None, source_ip: str | None = None, http_method: str | None = None,
               path: str | None = None,
               status_code: int | None = None, dataset_id: str | None = None, object_id: str | None = None,
               reason: str = "", details: dict | None = None, timestamp: datetime | None = None) -> AuditEvent:
        event = AuditEvent(timestamp=timestamp or utcnow(), user=user, site=site, action=action, category=category,
                           outcome=outcome, source_ip=source_ip, http_method=http_method, path=path,
                           status_code=status_code, dataset_id=dataset_id, object_id=object_id, reason=reason,
                           details=details or {})
        with self.catalog.session() as session:
            session.add(event)
            session.flush()
            session.expunge(event)
        self._append(to_ecs(event))
        return event

    def _append(self, document: dict) -> None:
        line = (json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self.jsonl_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.jsonl_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def query(self, user: str | None = None, action: str | None = None, outcome: str | None = None,
              dataset_id: str | None = None, since: datetime | None = None, limit: int = 100,
              before_id: int | None = None, site: str | None = None) -> list[AuditEvent]:
        """Newest first. ``site``: only what a site's admin may see: its users' events, every event on its
        datasets (other sites' attempts included), and requests no one could be identified for."""
        statement = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if site is not None:
            statement = statement.where(or_(AuditEvent.site == site, AuditEvent.site.is_(None),
                                            AuditEvent.dataset_id.in_(select(Dataset.id).where(
                                                Dataset.site == site))))
        for column, value in ((AuditEvent.user, user), (AuditEvent.action, action),
                              (AuditEvent.outcome, outcome), (AuditEvent.dataset_id, dataset_id)):
            if value is not None:
                statement = statement.where(column == value)
        if since is not None:
            statement = statement.where(AuditEvent.timestamp >= since)
        if before_id is not None:
            statement = statement.where(AuditEvent.id < before_id)
        with self.catalog.session() as session:
            return list(session.scalars(statement))
