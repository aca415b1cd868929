"""Connecting to the catalog database and keeping its schema current.

Two databases are supported: SQLite (the default, a file under ``DATA_DIR``; WAL mode so that readers never wait
for a writer) and PostgreSQL through psycopg 3 (for a hub with several service replicas). The schema is owned by
the Alembic migrations shipped in ``cloudmri_kernel/catalog/migrations``; :func:`migrate` brings a database to
the newest revision and is safe to call at every service start, from several processes at once.

Example:
    >>> catalog = Catalog.open("sqlite:////tmp/demo/catalog.sqlite")  # doctest: +SKIP
    >>> with catalog.session() as session:  # doctest: +SKIP
    ...     session.add(Site(name="charite"))
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from cloudmri_kernel.config import Settings, settings
from cloudmri_kernel.errors import UsageError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
POSTGRES_CONNECT_TIMEOUT_S = 10
# Key of the PostgreSQL advisory lock that serializes migrations (any constant shared by all service versions).
MIGRATION_LOCK_KEY = 0x636C6F75644D5249
SUPPORTED_URLS = "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"


def catalog_url(config: Settings | None = None) -> str:
    """The catalog's SQLAlchemy URL: ``catalog_url`` from the settings, else SQLite under ``data_dir``.

    Args:
        config: settings to read; default: the effective settings (environment and config file).

    Returns:
        A SQLAlchemy URL, e.g. ``sqlite:////home/ana/.local/share/cloudmri/catalog.sqlite``.
    """
    config = config or settings()
    if config.catalog_url:
        return config.catalog_url
    return f"sqlite:///{config.data_dir.expanduser() / 'catalog.sqlite'}"


def mask_password(url: str | URL) -> str:
    """The URL as text with its password replaced by ``***``, for messages and logs."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _parse_url(url: str) -> URL:
    """Parse and check a catalog URL; ``postgresql://`` means the psycopg 3 driver the workbench installs."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise UsageError(f"not a database URL: use {SUPPORTED_URLS} (CLOUDMRI_CATALOG_URL)",
                         mask_password(url)) from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise UsageError(f"unsupported catalog database {parsed.drivername!r}: use {SUPPORTED_URLS} "
                         "(CLOUDMRI_CATALOG_URL)", mask_password(parsed))
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise UsageError("an in-memory SQLite catalog is not shared between connections and vanishes with the "
                         "process: name a file, e.g. sqlite:////srv/cloudmri/catalog.sqlite", mask_password(parsed))
    return parsed


def _configure_sqlite_connection(dbapi_connection, _connection_record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError as exc:
            # Switching a new file to WAL takes its lock without SQLite's busy handler (processes opening the same
            # fresh catalog at once fail with "database is locked"): wait for it here as the busy handler would.
            if "database is locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def make_engine(url: str | None = None) -> Engine:
    """Create the engine for a catalog URL, configured for the service's thread pool.

    SQLite: the parent directory is created (mode 0700) and every connection gets WAL mode,
    ``synchronous=NORMAL``, enforced foreign keys and a 30 s busy timeout, so concurrent writers wait for each
    other instead of failing with "database is locked". PostgreSQL: pooled connections are checked before use
    (``pool_pre_ping``), so a restarted server costs one reconnect, not a failed request.

    Nothing is connected yet; :meth:`Catalog.open` connects and reports an unreachable database.

    Args:
        url: a SQLAlchemy URL; default: :func:`catalog_url`.

    Returns:
        The engine.

    Raises:
        UsageError: the URL is malformed, names an unsupported database, or its directory cannot be created.
    """
    parsed = _parse_url(url or catalog_url())
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise UsageError(f"cannot create the catalog's directory ({exc.strerror})", path.parent) from None
        engine = create_engine(parsed.set(database=str(path)), connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _configure_sqlite_connection)
        return engine
    connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S}
    return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)


def connect(engine: Engine) -> Connection:
    """Open a connection, turning an unreachable database into an error that says what to check.

    Raises:
        UsageError: the server is down, refuses the credentials, has no such database, or the SQLite file
            cannot be opened; the message names the URL with its password masked.
    """
    try:
        return engine.connect()
    except DBAPIError as exc:
        reason = " ".join(str(exc.orig).split())
        if engine.url.password:
            reason = reason.replace(str(engine.url.password), "***")
        raise UsageError(f"cannot connect to the catalog database ({reason}): is the server running and the URL "
                         "right? (CLOUDMRI_CATALOG_URL)", mask_password(engine.url)) from None


def alembic_config() -> Config:
    """Alembic's configuration for the catalog, made in code (there is no ``alembic.ini``).

    Commands run against the connection in ``config.attributes["connection"]`` when one is set, else against
    the configured catalog (see ``migrations/env.py``).
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    return config


def migrate(engine: Engine) -> None:
    """Bring the catalog's schema to the newest revision (``alembic upgrade head``); a no-op when it is there.

    Safe at every service start and from several processes at once: the upgrade holds a PostgreSQL advisory
    lock, or SQLite's write lock (``BEGIN IMMEDIATE``), so a second process waits and then finds nothing to do.

    Args:
        engine: an engine from :func:`make_engine`.

    Raises:
        UsageError: the database is unreachable, or it was migrated by a newer version of the workbench.
    """
    config = alembic_config()
    with connect(engine) as connection, connection.begin():
        if connection.dialect.name == "postgresql":
            # A transaction-level lock: released by the commit that publishes the new schema.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        config.attributes["connection"] = connection
        try:
            command.upgrade(config, "head")
        except CommandError as exc:
            raise UsageError(f"cannot migrate the catalog ({exc}): was it created by a newer version of the "
                             "workbench? Upgrade cloudmri-workbench", mask_password(engine.url)) from None


# Catalog.open's ``migrate`` flag shadows the function there.
_migrate = migrate


class Catalog:
    """The catalog database: an engine and the sessions made from it.

    Args:
        engine: an engine from :func:`make_engine`.

    Example:
        >>> catalog = Catalog.open()  # doctest: +SKIP
        >>> with catalog.session() as session:  # doctest: +SKIP
        ...     sites = session.scalars(select(Site)).all()
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str | None = None, migrate: bool = True) -> Catalog:
        """Connect to the catalog and, unless told not to, bring its schema up to date.

        Args:
            url: a SQLAlchemy URL; default: :func:`catalog_url` (the settings, else SQLite under ``data_dir``).
            migrate: run :func:`migrate` first (the service does at every start).

        Raises:
            UsageError: a bad URL, an unreachable database, or a schema newer than this workbench.
        """
        engine = make_engine(url)
        try:
            if migrate:
                _migrate(engine)
            else:
                connect(engine).close()
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back if it raises.

        Objects stay readable after the block (``expire_on_commit=False``), e.g. to return them from an
        endpoint.
        """
        with self._sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        """Close the pooled connections (the catalog can still be used; it reconnects on demand)."""
        self.engine.dispose()

