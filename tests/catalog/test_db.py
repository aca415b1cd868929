"""Connecting to the catalog: URLs, engine settings, sessions, errors and concurrent writers."""

from __future__ import annotations

import multiprocessing
import os
import re
import sqlite3
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from cloudmri_kernel.catalog import Catalog, catalog_url, make_engine, migrate
from cloudmri_kernel.catalog.db import connect
from cloudmri_kernel.catalog.models import AuditEvent, Site
from cloudmri_kernel.config import Settings
from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.processes import free_port


def test_catalog_url_defaults_to_sqlite_in_the_data_dir(tmp_path):
    assert catalog_url() == f"sqlite:///{tmp_path / 'state' / 'catalog.sqlite'}"
    assert make_engine().url.database == str(tmp_path / "state" / "catalog.sqlite")


def test_catalog_url_comes_from_the_settings(monkeypatch):
    monkeypatch.setenv("CLOUDMRI_CATALOG_URL", "postgresql+psycopg://cloudmri@db.example.org/cloudmri")
    assert catalog_url() == "postgresql+psycopg://cloudmri@db.example.org/cloudmri"
    assert catalog_url(Settings(catalog_url="sqlite:////srv/c.sqlite")) == "sqlite:////srv/c.sqlite"


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'new' / 'dir' / 'catalog.sqlite'}")
    with engine.connect() as connection:
        pragmas = {name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                   for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")}
    engine.dispose()
    assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "synchronous": 1, "busy_timeout": 30000}
    assert stat.S_IMODE((tmp_path / "new" / "dir").stat().st_mode) == 0o700


def test_sqlite_catalog_file_is_in_wal_mode(tmp_path):
    path = tmp_path / "catalog.sqlite"
    Catalog.open(f"sqlite:///{path}").dispose()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def open_fresh_catalogs(directory: Path, rounds: int, barrier, results) -> None:
    """Open a new SQLite catalog per round, at the same moment as the other processes; report each outcome."""
    outcomes = []
    for round_ in range(rounds):
        engine = make_engine(f"sqlite:///{directory / str(round_) / 'catalog.sqlite'}")
        barrier.wait(timeout=60)
        try:
            with connect(engine) as connection, connection.begin():
                outcomes.append(connection.exec_driver_sql("PRAGMA journal_mode").scalar())
                connection.exec_driver_sql("CREATE TABLE IF NOT EXISTS opened (pid INTEGER)")
                connection.exec_driver_sql(f"INSERT INTO opened VALUES ({os.getpid()})")
        except Exception as exc:  # reported to the test, which shows it
            outcomes.append(f"{type(exc).__name__}: {exc}")
        engine.dispose()
    results.put(outcomes)


def test_processes_opening_a_new_sqlite_catalog_at_once_all_get_wal(tmp_path):
    # Switching a new file to WAL bypasses SQLite's busy handler: a few in a hundred such opens used to fail.
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    processes = [context.Process(target=open_fresh_catalogs, args=(tmp_path, 50, barrier, results))
                 for _ in range(4)]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=120) for _ in processes]
    finally:
        for process in processes:
            process.join(10)
            process.kill()
    assert outcomes == [["wal"] * 50] * 4


def test_plain_postgresql_urls_use_psycopg_3():
    engine = make_engine("postgresql://cloudmri@db.example.org/cloudmri")
    assert engine.url.drivername == "postgresql+psycopg"
    assert engine.dialect.driver == "psycopg"


def test_session_commits_when_the_block_ends(catalog):
    with catalog.session() as session:
        site = Site(name="charite", display_name="Charité Berlin")
        session.add(site)
    # expire_on_commit=False: the object stays readable after the commit.
    assert site.display_name == "Charité Berlin"
    with catalog.session() as session:
        assert session.scalars(select(Site.display_name)).all() == ["Charité Berlin"]


def test_session_rolls_back_when_the_block_raises(catalog):
    with pytest.raises(RuntimeError, match="upload failed"), catalog.session() as session:
        session.add(Site(name="charite"))
        session.flush()
        raise RuntimeError("upload failed")
    with catalog.session() as session:
        assert session.scalars(select(Site)).all() == []


def test_four_threads_write_at_once_without_database_is_locked(catalog):
    def write(thread: int) -> list[int]:
        seen = []
        for step in range(25):
            with catalog.session() as session:
                # Read, then write in the same transaction: the pattern that deadlocks a naive SQLite setup.
                mine = session.scalar(select(func.count()).where(AuditEvent.user == f"user{thread}"))
                seen.append(mine)
                session.add(AuditEvent(user=f"user{thread}", action="dataset.read", category="access",
                                       outcome="success", details={"step": step}))
        return seen

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(write, range(4)))
    assert results == [list(range(25))] * 4
    with catalog.session() as session:
        assert session.scalar(select(func.count(AuditEvent.id))) == 100


@pytest.mark.parametrize(("url", "problem"), [
    ("not a url", "not a database URL"),
    ("mysql://ana:s3cret@db.example.org/catalog", "unsupported catalog database 'mysql'"),
    ("oracle+oracledb://ana:s3cret@db.example.org/catalog", "unsupported catalog database 'oracle+oracledb'"),
    ("sqlite://", "in-memory SQLite catalog"),
    ("sqlite:///:memory:", "in-memory SQLite catalog"),
])
def test_bad_urls_are_usage_errors(url, problem):
    with pytest.raises(UsageError, match=re.escape(problem)) as error:
        Catalog.open(url)
    assert "s3cret" not in str(error.value)
    if "ana" in url:
        assert "ana:***@db.example.org" in str(error.value)


def test_unparsable_url_is_reported_with_its_password_masked():
    with pytest.raises(UsageError) as error:
        make_engine("postgresql+psycopg://ana:s3cret@db.example.org:port/catalog")
    assert str(error.value).startswith("postgresql+psycopg://ana:***@db.example.org:port/catalog: not a database URL")


@pytest.mark.parametrize("migrate_it", [True, False], ids=["migrate", "no-migrate"])
def test_unreachable_postgresql_is_a_usage_error_with_the_password_masked(migrate_it):
    port = free_port()
    url = f"postgresql+psycopg://ana:s3cret@127.0.0.1:{port}/catalog"
    with pytest.raises(UsageError, match="cannot connect to the catalog database") as error:
        Catalog.open(url, migrate=migrate_it)
    message = str(error.value)
    assert message.startswith(f"postgresql+psycopg://ana:***@127.0.0.1:{port}/catalog: ")
    assert "Connection refused" in message
    assert "s3cret" not in message


def test_missing_postgresql_database_is_a_usage_error(postgres_server):
    with pytest.raises(UsageError, match='database "no_such_catalog" does not exist'):
        Catalog.open(postgres_server.database_url("no_such_catalog"))


def test_sqlite_directory_that_cannot_be_created_is_a_usage_error(tmp_path):
    (tmp_path / "plain-file").write_text("")
    with pytest.raises(UsageError, match="cannot create the catalog's directory") as error:
        make_engine(f"sqlite:///{tmp_path / 'plain-file' / 'catalog.sqlite'}")
    assert error.value.path == str(tmp_path / "plain-file")


def test_sqlite_file_that_cannot_be_opened_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot connect to the catalog database .unable to open database file"):
        Catalog.open(f"sqlite:///{tmp_path}")


def test_catalog_migrated_by_a_newer_workbench_is_a_usage_error(catalog):
    with catalog.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(UsageError, match="created by a newer version of the workbench"):
        migrate(catalog.engine)


def test_postgresql_pool_survives_a_server_side_disconnect(postgres_server):
    url = postgres_server.create_database("test_pre_ping")
    catalog = Catalog.open(url)
    try:
        with catalog.session() as session:
            session.add(Site(name="charite"))
        admin = make_engine(postgres_server.url)
        with admin.connect() as connection:
            killed = connection.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                             "WHERE datname = 'test_pre_ping'")).scalar()
        admin.dispose()
        assert killed == 1
        with catalog.session() as session:
            assert session.scalars(select(Site.name)).all() == ["charite"]
    finally:
        catalog.dispose()
        postgres_server.drop_database("test_pre_ping")
