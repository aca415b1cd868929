"""Blinded reader studies: ``reader_studies`` and each reader's cases with their scores (``reader_study_cases``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reader_studies",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=True),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("seed", sa.String(length=64), nullable=False),
        sa.Column("criteria", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('open', 'closed')", name=op.f("ck_reader_studies_status")),
        sa.ForeignKeyConstraint(["site"], ["sites.name"], name=op.f("fk_reader_studies_site_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reader_studies")),
    )
    op.create_index(op.f("ix_reader_studies_created_by"), "reader_studies", ["created_by"])
    op.create_table(
        "reader_study_cases",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("study_id", sa.String(length=32), nullable=False),
        sa.Column("reader", sa.String(length=255), nullable=False),
        sa.Column("case_code", sa.String(length=32), nullable=False),
        sa.Column("series_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("version >= 0", name=op.f("ck_reader_study_cases_version")),
        sa.ForeignKeyConstraint(["series_id"], ["series.id"], name=op.f("fk_reader_study_cases_series_id_series")),
        sa.ForeignKeyConstraint(["study_id"], ["reader_studies.id"],
                                name=op.f("fk_reader_study_cases_study_id_reader_studies")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reader_study_cases")),
        sa.UniqueConstraint("study_id", "reader", "case_code",
                            name=op.f("uq_reader_study_cases_study_id_reader_case_code")),
        sa.UniqueConstraint("study_id", "reader", "position",
                            name=op.f("uq_reader_study_cases_study_id_reader_position")),
        sa.UniqueConstraint("study_id", "reader", "series_id",
                            name=op.f("uq_reader_study_cases_study_id_reader_series_id")),
    )
    op.create_index(op.f("ix_reader_study_cases_study_id"), "reader_study_cases", ["study_id"])


def downgrade() -> None:
    op.drop_table("reader_study_cases")
    op.drop_table("reader_studies")
