"""Alembic environment of the catalog: migrations run on a connection the caller holds.

:func:`cloudmri_kernel.catalog.db.migrate` passes its connection (inside the transaction that holds the migration
lock) in ``config.attributes["connection"]``. Other commands without one open the configured catalog, e.g. to
write the next revision after changing ``models.py``::

    python -c "from alembic import command; from cloudmri_kernel.catalog.db import alembic_config; \\
        command.revision(alembic_config(), autogenerate=True, rev_id='0002', message='add series notes')"

then review the generated file and add what autogenerate cannot see (triggers, data steps).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from cloudmri_kernel.catalog.db import connect, make_engine
from cloudmri_kernel.catalog.models import Base, UTCDateTime


def render_item(kind: str, item, _autogen_context) -> str | bool:
    # Revisions must not import models.py, which changes after them: a UTC timestamp is a timestamptz column.
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations(connection: Connection) -> None:
    # Batch operations let one revision run on SQLite (which cannot ALTER constraints) and PostgreSQL alike.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                      render_item=render_item)
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is not None:
    run_migrations(given)
else:
    engine = make_engine()
    try:
        with connect(engine) as connection:
            run_migrations(connection)
    finally:
        engine.dispose()
