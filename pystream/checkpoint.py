"""Durable per-source progress, so the daemon resumes exactly where its archive ends.

Storage choice: one SQLite database (WAL journal, synchronous=FULL) rather than a JSON file per
source replaced with temp + fsync + os.replace. Both survive kill -9 atomically, but:
- progress and the carried encoder state (up to ~1 MB) are written in one transaction, so they
  can never disagree after a crash;
- the set of finished files of a folder source grows to many thousands of paths; SQLite adds one
  row per file, where a JSON file would be rewritten whole for every finished file;
- other processes (CLI `status`) can read while the daemon writes.

Protocol with the writer (pystream.writer.ClipWriter): the daemon calls put() from the writer's
on_commit hook, i.e. only after the clips up to that point are in LanceDB. A crash between the
LanceDB commit and put() replays at most one batch, which the writer's idempotent upsert absorbs.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from contextlib import contextmanager

SCHEMA = """
CREATE TABLE IF NOT EXISTS progress (
    source  TEXT PRIMARY KEY,
    data    TEXT NOT NULL,   -- JSON object: window end time, chunk seq, ...
    state   BLOB,            -- serialised carried encoder state, or NULL
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS files_done (
    source TEXT NOT NULL,
    path   TEXT NOT NULL,
    size   INTEGER NOT NULL,
    mtime  REAL NOT NULL,
    done   REAL NOT NULL,
    PRIMARY KEY (source, path)
);
"""


class CheckpointStore:
    """Checkpoints under directory `dir` (file `checkpoints.sqlite`). Thread-safe."""

    FILENAME = "checkpoints.sqlite"
    JOURNAL_LIMIT = 1 << 20  # bytes of WAL kept after a checkpoint
    WAL_PAGES = 256  # checkpoint the WAL into the database every this many pages (1 MB)

    def __init__(self, dir: str | os.PathLike):
        os.makedirs(dir, exist_ok=True)
        self.path = os.path.join(os.fspath(dir), self.FILENAME)
        self._lock = threading.RLock()  # re-entered by the calls inside transaction()
        # isolation_level=None: we issue BEGIN/COMMIT ourselves so each put is one transaction.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: fsync the WAL at every commit, so a committed put survives power loss too.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(f"PRAGMA journal_size_limit={self.JOURNAL_LIMIT}")
        self._db.execute(f"PRAGMA wal_autocheckpoint={self.WAL_PAGES}")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self):
        """Every put / mark_file_done inside commits together, or none does (the exception is
        raised after the rollback)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite already rolled back (e.g. after SQLITE_FULL)
                raise
            try:
                self._db.execute("COMMIT")
            except BaseException:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise

    def size_bytes(self) -> int:
        """The database and its WAL on disk (the soak watches this stay flat)."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.path.getsize(self.path + suffix)
            except OSError:
                pass
        return total

    def __enter__(self) -> "CheckpointStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ progress + state

    def get(self, source: str) -> dict | None:
        """Last committed progress of `source`, or None if it never committed."""
        with self._lock:
            row = self._db.execute("SELECT data FROM progress WHERE source = ?",
                                   (source,)).fetchone()
        return None if row is None else json.loads(row[0])

    def get_state(self, source: str) -> bytes | None:
        """Carried encoder state saved with the last put(), or None."""
        with self._lock:
            row = self._db.execute("SELECT state FROM progress WHERE source = ?",
                                   (source,)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def get_with_state(self, source: str) -> tuple[dict | None, bytes | None]:
        """Progress and state read together (one consistent snapshot)."""
        with self._lock:
            row = self._db.execute("SELECT data, state FROM progress WHERE source = ?",
                                   (source,)).fetchone()
        if row is None:
            return None, None
        return json.loads(row[0]), None if row[1] is None else bytes(row[1])

    def put(self, source: str, progress: dict, state_bytes: bytes | None = None) -> None:
        """Atomically replace the progress of `source` and its carried state.

        state_bytes=None stores no state: progress and state always describe the same moment, so
        an old state is never kept next to newer progress.
        """
        data = json.dumps(progress, sort_keys=True)  # raises on non-JSON values, before writing
        with self._lock:
            self._db.execute(
                "INSERT INTO progress (source, data, state, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(source) DO UPDATE SET data = excluded.data, state = excluded.state, "
                "updated = excluded.updated",
                (source, data, None if state_bytes is None else bytes(state_bytes), time.time()))

    def sources(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT source FROM progress ORDER BY source")]

    # ------------------------------------------------------------------ folder sources

    def files_done(self, source: str) -> set[tuple[str, int, float]]:
        """(path, size, mtime) of every file of `source` fully indexed. A file whose size or
        mtime changed since is not in the set under its new identity, so it is indexed again."""
        with self._lock:
            rows = self._db.execute("SELECT path, size, mtime FROM files_done WHERE source = ?",
                                    (source,)).fetchall()
        return {(path, int(size), float(mtime)) for path, size, mtime in rows}

    def is_file_done(self, source: str, path: str, size: int, mtime: float) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM files_done WHERE source = ? AND path = ? AND size = ? AND mtime = ?",
                (source, os.fspath(path), int(size), float(mtime))).fetchone()
        return row is not None

    def forget_files(self, cutoffs: dict, exists=os.path.exists) -> int:
        """Drop the done-marks of files that are gone from disk and were indexed before their
        source's retention cutoff (``cutoffs``: source -> time, None -> every other source), so
        the database stays bounded while files come and go for months. Their rows are past
        retention too (a row is never older than its file's mark), so nothing can be indexed
        twice; a file still on disk keeps its mark (it would be indexed again). Returns how
        many marks went."""
        if not cutoffs:
            return 0
        default = cutoffs.get(None)
        with self._lock:
            rows = self._db.execute("SELECT source, path, done FROM files_done").fetchall()
        gone = [(src, path) for src, path, done in rows
                if done < cutoffs.get(src, default if default is not None else -math.inf)
                and not exists(path)]
        if gone:
            with self.transaction():
                self._db.executemany("DELETE FROM files_done WHERE source = ? AND path = ?", gone)
        return len(gone)

    def mark_file_done(self, source: str, path: str, size: int, mtime: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO files_done (source, path, size, mtime, done) "
                "VALUES (?, ?, ?, ?, ?)",
                (source, os.fspath(path), int(size), float(mtime), time.time()))
