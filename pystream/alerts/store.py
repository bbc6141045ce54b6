"""The alert log: fired alerts, the rows they cover, their deliveries and the evaluator's
watermark, in one SQLite database (state_dir/alerts.sqlite; WAL, synchronous=FULL, as
pystream/checkpoint.py).

Exactly once per (trigger, source, event): the evaluator records everything one committed batch
caused (new alerts with their payloads, a pending delivery per action target, the rows each
alert covers, the open event of every (trigger, source, uri), and the watermark: the commit
time of that batch) in ONE transaction. So after kill -9 either all of it is there or none of
it: in the second case the batch is evaluated again at start (the watermark says from where),
giving the same alerts with the same keys; in the first, the pending deliveries are sent by the
next process with the payload (and the idempotency key) stored here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    key       TEXT PRIMARY KEY,   -- idempotency key: hash of (trigger, source, first row id)
    trigger   TEXT NOT NULL,
    source    TEXT NOT NULL,
    uri       TEXT,
    first_row TEXT NOT NULL,
    start     REAL NOT NULL,      -- the event: first matching window's start ...
    "end"     REAL NOT NULL,      -- ... to the last matching window's end so far
    score     REAL NOT NULL,      -- score of the row that fired
    peak      REAL NOT NULL,      -- best score of the event so far
    rows      INTEGER NOT NULL,   -- matching rows the event covers
    fired     REAL NOT NULL,      -- wall clock when it fired
    payload   TEXT NOT NULL       -- the JSON every target gets
);
CREATE INDEX IF NOT EXISTS alerts_trigger ON alerts (trigger, fired);
CREATE TABLE IF NOT EXISTS alert_rows (
    trigger TEXT NOT NULL,
    row_id  TEXT NOT NULL,
    key     TEXT NOT NULL,
    PRIMARY KEY (trigger, row_id)
);
CREATE TABLE IF NOT EXISTS deliveries (
    key        TEXT NOT NULL,
    target     TEXT NOT NULL,
    trigger    TEXT NOT NULL,
    state      TEXT NOT NULL,     -- pending | delivered | expired
    attempts   INTEGER NOT NULL DEFAULT 0,
    failures   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    fired      REAL NOT NULL,
    done       REAL,
    PRIMARY KEY (key, target)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (target, state, fired);
CREATE TABLE IF NOT EXISTS events (   -- the latest event of each (trigger, source, uri)
    trigger     TEXT NOT NULL,
    source      TEXT NOT NULL,
    uri         TEXT NOT NULL,
    key         TEXT NOT NULL,
    first_start REAL NOT NULL,
    last_end    REAL NOT NULL,
    PRIMARY KEY (trigger, source, uri)
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
"""


@dataclass
class EventState:
    key: str
    first_start: float
    last_end: float


@dataclass
class Alert:
    key: str
    trigger: str
    source: str
    uri: str
    first_row: str
    start: float
    end: float
    score: float
    fired: float
    payload: dict
    targets: List[str]
    rows: List[str] = field(default_factory=list)
    peak: float = 0.0


@dataclass
class Extension:
    """Rows that continue an already fired event (no new alert)."""
    key: str
    end: float
    peak: float
    rows: List[str]


@dataclass
class BatchOutcome:
    """What evaluating one committed batch changed, written in one transaction."""
    alerts: List[Alert] = field(default_factory=list)
    extensions: List[Extension] = field(default_factory=list)
    events: Dict[Tuple[str, str, str], EventState] = field(default_factory=dict)
    trigger_of: Dict[str, str] = field(default_factory=dict)  # alert key -> trigger (extensions)
    watermark: Optional[float] = None


@dataclass
class Due:
    key: str
    trigger: str
    payload: str
    attempts: int
    fired: float


class AlertStore:
    FILENAME = "alerts.sqlite"

    def __init__(self, dir: str | os.PathLike):
        os.makedirs(dir, exist_ok=True)
        self.path = os.path.join(os.fspath(dir), self.FILENAME)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ meta

    def get_meta(self, k: str):
        with self._lock:
            row = self._db.execute("SELECT v FROM meta WHERE k = ?", (k,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put_meta(self, k: str, v) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)",
                             (k, json.dumps(v, sort_keys=True)))

    # ------------------------------------------------------------------ evaluation

    def load_events(self) -> Dict[Tuple[str, str, str], EventState]:
        with self._lock:
            rows = self._db.execute(
                "SELECT trigger, source, uri, key, first_start, last_end FROM events").fetchall()
        return {(t, s, u): EventState(k, a, b) for t, s, u, k, a, b in rows}

    def covered(self, trigger: str, row_ids: Iterable[str]) -> set:
        """The row ids among `row_ids` that an alert of `trigger` already covers."""
        ids = list(row_ids)
        out = set()
        with self._lock:
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                q = ("SELECT row_id FROM alert_rows WHERE trigger = ? AND row_id IN (%s)"
                     % ",".join("?" * len(part)))
                out.update(r[0] for r in self._db.execute(q, [trigger, *part]))
        return out

    def has_alert(self, key: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM alerts WHERE key = ?", (key,)).fetchone() \
                is not None

    def apply(self, out: BatchOutcome) -> None:
        """Everything one batch caused, atomically."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for a in out.alerts:
                    db.execute(
                        "INSERT OR IGNORE INTO alerts (key, trigger, source, uri, first_row, "
                        "start, \"end\", score, peak, rows, fired, payload) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (a.key, a.trigger, a.source, a.uri, a.first_row, a.start, a.end, a.score,
                         max(a.peak, a.score), len(a.rows), a.fired,
                         json.dumps(a.payload, sort_keys=True)))
                    db.executemany(
                        "INSERT OR IGNORE INTO deliveries (key, target, trigger, state, fired) "
                        "VALUES (?, ?, ?, 'pending', ?)",
                        [(a.key, t, a.trigger, a.fired) for t in a.targets])
                    db.executemany("INSERT OR IGNORE INTO alert_rows (trigger, row_id, key) "
                                   "VALUES (?, ?, ?)", [(a.trigger, r, a.key) for r in a.rows])
                for e in out.extensions:
                    trig = out.trigger_of[e.key]
                    cur = db.executemany(
                        "INSERT OR IGNORE INTO alert_rows (trigger, row_id, key) VALUES (?, ?, ?)",
                        [(trig, r, e.key) for r in e.rows])
                    db.execute("UPDATE alerts SET \"end\" = MAX(\"end\", ?), peak = MAX(peak, ?), "
                               "rows = rows + ? WHERE key = ?",
                               (e.end, e.peak, cur.rowcount if cur.rowcount > 0 else 0, e.key))
                for (t, s, u), st in out.events.items():
                    db.execute("INSERT OR REPLACE INTO events (trigger, source, uri, key, "
                               "first_start, last_end) VALUES (?, ?, ?, ?, ?, ?)",
                               (t, s, u, st.key, st.first_start, st.last_end))
                if out.watermark is not None:
                    db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('watermark', ?)",
                               (json.dumps(out.watermark),))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------ delivery

    def due(self, target: str, limit: int = 50) -> List[Due]:
        """Pending deliveries to `target`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT d.key, d.trigger, a.payload, d.attempts, d.fired FROM deliveries d "
                "JOIN alerts a ON a.key = d.key WHERE d.target = ? AND d.state = 'pending' "
                "ORDER BY d.fired, d.key LIMIT ?", (target, limit)).fetchall()
        return [Due(*r) for r in rows]

    def delivered(self, key: str, target: str) -> None:
        with self._lock:
            self._db.execute("UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, "
                             "done = ?, last_error = NULL WHERE key = ? AND target = ?",
                             (time.time(), key, target))

    def failed(self, key: str, target: str, error: str) -> None:
        with self._lock:
            self._db.execute("UPDATE deliveries SET attempts = attempts + 1, "
                             "failures = failures + 1, last_error = ? "
                             "WHERE key = ? AND target = ?", (error[:500], key, target))

    def expire(self, key: str, target: str, error: str) -> None:
        with self._lock:
            self._db.execute("UPDATE deliveries SET state = 'expired', done = ?, last_error = ? "
                             "WHERE key = ? AND target = ?",
                             (time.time(), error[:500], key, target))

    def prune(self, before: float) -> int:
        """Forget alerts fired before `before` that nothing waits for any more (no pending
        delivery), with their rows and deliveries; returns how many."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                keys = [r[0] for r in db.execute(
                    "SELECT key FROM alerts WHERE fired < ? AND key NOT IN "
                    "(SELECT key FROM deliveries WHERE state = 'pending')", (before,))]
                for i in range(0, len(keys), 500):
                    part = keys[i:i + 500]
                    marks = ",".join("?" * len(part))
                    for table in ("alert_rows", "deliveries", "alerts"):
                        db.execute(f"DELETE FROM {table} WHERE key IN ({marks})", part)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return len(keys)

    # ------------------------------------------------------------------ numbers

    def trigger_counts(self) -> Dict[str, dict]:
        """Per trigger: fired, last_fired, last_score, delivery failures, pending, expired."""
        out: Dict[str, dict] = {}
        with self._lock:
            for trig, n, last in self._db.execute(
                    "SELECT trigger, COUNT(*), MAX(fired) FROM alerts GROUP BY trigger"):
                out[trig] = dict(fired=n, last_fired=last, last_score=None,
                                 delivery_failures=0, pending=0, expired=0)
            for trig, score in self._db.execute(
                    "SELECT a.trigger, a.score FROM alerts a JOIN (SELECT trigger, MAX(fired) f "
                    "FROM alerts GROUP BY trigger) m ON a.trigger = m.trigger AND a.fired = m.f"):
                out[trig]["last_score"] = score
            for trig, state, n, fails in self._db.execute(
                    "SELECT trigger, state, COUNT(*), SUM(failures) FROM deliveries "
                    "GROUP BY trigger, state"):
                d = out.setdefault(trig, dict(fired=0, last_fired=None, last_score=None,
                                              delivery_failures=0, pending=0, expired=0))
                d["delivery_failures"] += int(fails or 0)
                if state in ("pending", "expired"):
                    d[state] += n
        return out

    def target_counts(self) -> Dict[str, dict]:
        out: Dict[str, dict] = {}
        with self._lock:
            for target, state, n, fails in self._db.execute(
                    "SELECT target, state, COUNT(*), SUM(failures) FROM deliveries "
                    "GROUP BY target, state"):
                d = out.setdefault(target, dict(pending=0, delivered=0, expired=0, failures=0))
                d[state] = n
                d["failures"] += int(fails or 0)
        return out

    def alerts(self, trigger: str | None = None) -> List[dict]:
        """Fired alerts (oldest first), with their deliveries: for tests and tools."""
        with self._lock:
            q = "SELECT key, trigger, source, uri, first_row, start, \"end\", score, peak, rows, " \
                "fired, payload FROM alerts"
            where = " WHERE trigger = ?" if trigger else ""
            rows = self._db.execute(q + where + " ORDER BY fired, key",
                                    (trigger,) if trigger else ()).fetchall()
            dels = self._db.execute("SELECT key, target, state, attempts, failures, last_error "
                                    "FROM deliveries").fetchall()
        by_key: Dict[str, list] = {}
        for k, t, st, at, fa, err in dels:
            by_key.setdefault(k, []).append(dict(target=t, state=st, attempts=at, failures=fa,
                                                 last_error=err))
        cols = ["key", "trigger", "source", "uri", "first_row", "start", "end", "score", "peak",
                "rows", "fired", "payload"]
        out = []
        for r in rows:
            d = dict(zip(cols, r))
            d["payload"] = json.loads(d["payload"])
            d["deliveries"] = by_key.get(d["key"], [])
            out.append(d)
        return out
