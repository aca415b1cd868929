"""Request dependencies: the service state, the caller's identity, a database session, catalog lookups."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Annotated, TypeVar

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from cloudmri_kernel.catalog.models import Base
from cloudmri_kernel.service.browser_login import SESSION_COOKIE
from cloudmri_kernel.service.identity import HubTokens, Identity, token_from_header
from cloudmri_kernel.service.state import ServiceState

T = TypeVar("T", bound=Base)
_ID = re.compile(r"[0-9a-f]{32}")
authorization_header = APIKeyHeader(name="Authorization", auto_error=False,
                                    description="'token YOUR_JUPYTERHUB_TOKEN' (or 'Bearer …')")


class NotFound(Exception):
    """The answer is 404."""


def state(request: Request) -> ServiceState:
    return request.app.state.service


def identity(request: Request, authorization: Annotated[str | None, Security(authorization_header)],
             service: Annotated[ServiceState, Depends(state)]) -> Identity:
    """The caller, from the Authorization header or, for GET/HEAD from a signed-in browser, its session cookie."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if authorization is None and cookie and request.method in ("GET", "HEAD") and isinstance(service.tokens,
                                                                                              HubTokens):
        who = service.tokens.identify(cookie)
    else:
        who = service.tokens.identify(token_from_header(authorization))
    request.state.user, request.state.site = who.user, who.site
    return who


def session(service: Annotated[ServiceState, Depends(state)]) -> Iterator[Session]:
    with service.catalog.session() as db:
        # access checks (policy.check_dataset) find the service here: its ledger's grants and its audit log
        db.info["service"] = service
        yield db


def prefetched(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Decrypt the first chunk before answering, so a damaged object is a clean error, not a 200 cut short.

    Damage further in breaks the response off, which the client sees as an incomplete body (Content-Length).
    """
    first = next(chunks, b"")
    return itertools.chain([first], chunks)


def fetch(db: Session, model: type[T], object_id: str, request: Request | None = None) -> T:
    """The row with this ID, or 404 (malformed IDs are 404 too: they name nothing)."""
    row = db.get(model, object_id) if _ID.fullmatch(object_id) else None
    if row is None:
        raise NotFound(f"no {model.__name__.lower()} with ID '{object_id[:64]}'")
    if request is not None:
        dataset_id = getattr(row, "dataset_id", None) or (object_id if model.__tablename__ == "datasets" else None)
        request.state.dataset_id = dataset_id
        request.state.object_id = object_id
    return row


Caller = Annotated[Identity, Depends(identity)]
# scope="function": the session commits before the response is sent, so a 2xx means the change is durable.
DB = Annotated[Session, Depends(session, scope="function")]
Service = Annotated[ServiceState, Depends(state)]
