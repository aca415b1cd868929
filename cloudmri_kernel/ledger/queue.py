"""The durable anchoring queue: records wait here (SQLite in WAL mode) until their batch root is confirmed.

A record is committed to the queue before the caller is told it is queued, a batch (its Merkle root and every
record's inclusion proof) is committed before its transaction is sent, and the transaction hash before the
receipt is awaited. So a crash or a node outage at any point loses nothing: at the next flush, unbatched records
are batched, unsent batches are sent, and sent ones are looked up on chain before being sent again.

References:
    SQLite, Write-Ahead Logging (https://sqlite.org/wal.html).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cloudmri_kernel.crypto.keyfiles import make_private_dirs

KINDS = {"dataset": 1, "series": 2, "label": 3, "report": 4, "model": 5}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    root TEXT NOT NULL,
    count INTEGER NOT NULL,
    created_at REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'confirmed')),
    tx_hash TEXT,
    block_number INTEGER,
    block_hash TEXT,
    timestamp INTEGER
);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    object_hash TEXT NOT NULL,
    dataset_id TEXT NOT NULL DEFAULT '',
    name TEXT,
    queued_at REAL NOT NULL,
    batch_id TEXT REFERENCES batches (batch_id),
    leaf_index INTEGER,
    proof BLOB,
    UNIQUE (kind, object_hash, dataset_id)
);
CREATE INDEX IF NOT EXISTS records_by_hash ON records (object_hash);
CREATE INDEX IF NOT EXISTS records_by_dataset ON records (dataset_id);
CREATE INDEX IF NOT EXISTS records_by_name ON records (name);
CREATE INDEX IF NOT EXISTS records_waiting ON records (queued_at) WHERE batch_id IS NULL;
"""


@dataclass(frozen=True)
class Record:
    """One queued or anchored record; ``proof`` is the audit path (32-byte hashes, bottom up) once batched."""

    id: int
    kind: str
    object_hash: str
    dataset_id: str
    name: str | None
    queued_at: float
    batch_id: str | None
    leaf_index: int | None
    proof: tuple[bytes, ...]


@dataclass(frozen=True)
class Batch:
    batch_id: str
    root: str
    count: int
    created_at: float
    state: str
    tx_hash: str | None
    block_number: int | None
    block_hash: str | None
    timestamp: int | None


def _record(row) -> Record:
    proof = row[8] or b""
    return Record(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                  tuple(proof[i:i + 32] for i in range(0, len(proof), 32)))


_RECORD_COLUMNS = "id, kind, object_hash, dataset_id, name, queued_at, batch_id, leaf_index, proof"
_BATCH_COLUMNS = "batch_id, root, count, created_at, state, tx_hash, block_number, block_hash, timestamp"


class AnchorQueue:
    """The queue file ``path`` (created with its directory, mode 0700); safe to share between threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        make_private_dirs(self.path.parent)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _transaction(self):
        return _Transaction(self._db, self._lock)

    def add(self, entries: Iterable[tuple[str, str, str, str | None]], now: float | None = None) -> list[Record]:
        """Queue ``(kind, object_hash, dataset_id, name)`` entries; an entry queued before is returned as it is."""
        now = time.time() if now is None else now
        entries = list(entries)
        with self._transaction() as db:
            db.executemany("INSERT OR IGNORE INTO records (kind, object_hash, dataset_id, name, queued_at) "
                           "VALUES (?, ?, ?, ?, ?)", [(*entry, now) for entry in entries])
            found = []
            for kind, object_hash, dataset_id, _ in entries:
                found.append(_record(db.execute(f"SELECT {_RECORD_COLUMNS} FROM records WHERE kind = ? AND "
                                                "object_hash = ? AND dataset_id = ?",
                                                (kind, object_hash, dataset_id)).fetchone()))
        return found

    def waiting(self, limit: int | None = None) -> list[Record]:
        """Records not yet in a batch, oldest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_RECORD_COLUMNS} FROM records WHERE batch_id IS NULL "
                                    "ORDER BY id LIMIT ?", (-1 if limit is None else limit,)).fetchall()
        return [_record(row) for row in rows]

    def waiting_summary(self) -> tuple[int, float | None]:
        """How many records wait for a batch, and when the oldest of them was queued."""
        with self._lock:
            count, oldest = self._db.execute(
                "SELECT count(*), min(queued_at) FROM records WHERE batch_id IS NULL").fetchone()
        return count, oldest

    def backlog(self) -> tuple[int, float | None]:
        """How many records are not yet confirmed on chain (waiting, batched or sent), and the oldest one's queue
        time."""
        with self._lock:
            count, oldest = self._db.execute(
                "SELECT count(*), min(queued_at) FROM records LEFT JOIN batches USING (batch_id) "
                "WHERE batches.state IS NULL OR batches.state != 'confirmed'").fetchone()
        return count, oldest

    def create_batch(self, batch_id: str, root: str, members: Sequence[tuple[int, int, bytes]],
                     now: float | None = None) -> None:
        """Store a new pending batch and, for each ``(record id, leaf index, proof)``, its place in the tree."""
        with self._transaction() as db:
            db.execute("INSERT INTO batches (batch_id, root, count, created_at, state) VALUES (?, ?, ?, ?, 'pending')",
                       (batch_id, root, len(members), time.time() if now is None else now))
            db.executemany("UPDATE records SET batch_id = ?, leaf_index = ?, proof = ? WHERE id = ?",
                           [(batch_id, index, proof, record_id) for record_id, index, proof in members])

    def batches(self, states: Sequence[str] = ("pending", "sent", "confirmed")) -> list[Batch]:
        marks = ", ".join("?" * len(states))
        with self._lock:
            rows = self._db.execute(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE state IN ({marks}) "
                                    "ORDER BY created_at, batch_id", tuple(states)).fetchall()
        return [Batch(*row) for row in rows]

    def batch(self, batch_id: str) -> Batch | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
        return None if row is None else Batch(*row)

    def mark_sent(self, batch_id: str, tx_hash: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE batches SET state = 'sent', tx_hash = ? WHERE batch_id = ?", (tx_hash, batch_id))

    def mark_confirmed(self, batch_id: str, tx_hash: str, block_number: int, block_hash: str, timestamp: int) -> None:
        with self._transaction() as db:
            db.execute("UPDATE batches SET state = 'confirmed', tx_hash = ?, block_number = ?, block_hash = ?, "
                       "timestamp = ? WHERE batch_id = ?", (tx_hash, block_number, block_hash, timestamp, batch_id))

    def mark_pending(self, batch_ids: Iterable[str]) -> None:
        """Send these batches again (after a chain replacement or reorganization)."""
        with self._transaction() as db:
            db.executemany("UPDATE batches SET state = 'pending', tx_hash = NULL, block_number = NULL, "
                           "block_hash = NULL, timestamp = NULL WHERE batch_id = ?", [(b,) for b in batch_ids])

    def find(self, object_hash: str) -> list[Record]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_RECORD_COLUMNS} FROM records WHERE object_hash = ? ORDER BY id",
                                    (object_hash,)).fetchall()
        return [_record(row) for row in rows]

    def find_by_name(self, name: str) -> list[Record]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_RECORD_COLUMNS} FROM records WHERE name = ? ORDER BY id",
                                    (name,)).fetchall()
        return [_record(row) for row in rows]

    def history(self, dataset_id: str) -> list[Record]:
        """Every record of a dataset: the dataset itself (by ID or by hash) and what was derived from it."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_RECORD_COLUMNS} FROM records WHERE dataset_id = ? OR (kind = 'dataset' AND object_hash = ?) "
                "OR dataset_id IN (SELECT dataset_id FROM records WHERE kind = 'dataset' AND object_hash = ? "
                "AND dataset_id != '') ORDER BY id", (dataset_id, dataset_id, dataset_id)).fetchall()
        return [_record(row) for row in rows]


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error) under the queue's thread lock."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock):
        self.db, self.lock = db, lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, value, traceback) -> None:
        try:
            self.db.execute("ROLLBACK" if kind else "COMMIT")
        finally:
            self.lock.release()
