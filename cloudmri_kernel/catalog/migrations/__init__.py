"""Alembic migrations of the catalog schema (a package so that they ship with the wheel)."""
