"""The catalog: the database of sites, subjects, datasets, series, labels, reports, grants and audit events.

:class:`Catalog` opens it (SQLite by default, PostgreSQL for several service replicas) and keeps its schema
current; the tables are declared in :mod:`cloudmri_kernel.catalog.models`, and
:mod:`cloudmri_kernel.catalog.testing` starts a throw-away PostgreSQL server for tests and benchmarks.
"""

from cloudmri_kernel.catalog.db import Catalog, catalog_url, make_engine, migrate

__all__ = ["Catalog", "catalog_url", "make_engine", "migrate"]
