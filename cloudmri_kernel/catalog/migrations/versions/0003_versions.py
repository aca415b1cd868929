"""Optimistic concurrency for reports and label sets: a ``version`` that every save names and increments; and the
label set's content hash (``labels.sha256``), anchored on the ledger like a signed report's.

Two tabs (or two readers' scripts) saving the same report or label set must not overwrite each other silently:
a save names the version it started from and the service refuses it (409) when the stored one has moved on.
Existing rows start at version 1, with no hash until their next save.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("reports", "labels")


def upgrade() -> None:
    for table in TABLES:  # batch mode: SQLite cannot add a constraint to a table in place
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
            batch.create_check_constraint(op.f(f"ck_{table}_version"), "version >= 1")
    with op.batch_alter_table("labels") as batch:
        batch.add_column(sa.Column("sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("labels") as batch:
        batch.drop_column("sha256")
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(op.f(f"ck_{table}_version"), type_="check")
            batch.drop_column("version")
