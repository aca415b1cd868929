"""The throw-away PostgreSQL server: it starts, serves databases, and leaves no process or file behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import text

from cloudmri_kernel.catalog import make_engine
from cloudmri_kernel.catalog.testing import PostgresServer

pytestmark = pytest.mark.skipif(
    not PostgresServer.available(),
    reason="PostgreSQL is not installed (Debian package postgresql): the PostgreSQL leg runs where it is, as in CI")


def server_processes(pid: int) -> set[int]:
    """The postmaster and its children (checkpointer, WAL writer, backends...)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.add(int(stat.parent.name))
    return children | {pid}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_server_serves_databases_and_leaves_nothing_behind():
    with PostgresServer() as server:
        directory, processes = server.directory, server_processes(server.process.pid)
        url = server.create_database("test_lifecycle")
        assert url == f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/test_lifecycle"
        engine = make_engine(url)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT current_database(), current_setting('fsync'), "
                                           "current_setting('listen_addresses')")).one() \
                == ("test_lifecycle", "off", "127.0.0.1")
        engine.dispose()
        server.drop_database("test_lifecycle")
        engine = make_engine(server.url)
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT count(*) FROM pg_database WHERE datname = 'test_lifecycle'")) == 0
        engine.dispose()
    assert len(processes) > 1
    assert [pid for pid in processes if alive(pid)] == []
    assert not directory.exists()
    assert (server.process, server.directory, server.port) == (None, None, None)


def test_server_stops_when_the_block_raises_even_with_open_connections():
    with pytest.raises(RuntimeError, match="test failed"), PostgresServer() as server:
        directory, pid = server.directory, server.process.pid
        engine = make_engine(server.url)
        connection = engine.connect()
        connection.execute(text("SELECT 1"))
        processes = server_processes(pid)
        raise RuntimeError("test failed")
    # Closed here, not by the garbage collector: the server has gone, so only the client side is left.
    connection.invalidate()
    connection.close()
    engine.dispose()
    assert [pid for pid in processes if alive(pid)] == []
    assert not directory.exists()


def test_database_names_are_checked():
    server = PostgresServer()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url
    with pytest.raises(ValueError, match="use lower-case letters, digits and underscores"):
        server.create_database('x"; DROP DATABASE postgres; --')
