"""The alert engine: evaluates committed rows against the triggers, off the writer's thread.

    writer thread: ClipWriter commits a batch -> Indexer._on_commit -> AlertEngine.committed(batch)
        (stamps the batch with its commit time, puts it on a bounded queue, never blocks)
    evaluator thread (pystream-alerts): scores every row against every trigger (one matrix
        product), groups matches into events (events.py), records new alerts + deliveries +
        covered rows + the watermark in one transaction (store.py), wakes the delivery threads
    delivery threads (actions.py): one per target

Only committed rows are evaluated, so an alert never names a clip the archive does not have.
Start-up catch-up: rows committed after the watermark (the commit time of the last evaluated
batch) but never evaluated, because the process died or the queue overflowed, are read back
from LanceDB and evaluated, for the triggers that were active then (same text / image). A new
trigger starts from now (`pystream triggers test` looks back).
"""

from __future__ import annotations

import base64
import collections
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional
from urllib.parse import quote

import numpy as np

from .actions import DeliveryWorker, make_target
from .events import alert_key, continues, trigger_embedding
from .store import Alert, AlertStore, BatchOutcome, EventState, Extension

log = logging.getLogger("pystream.alerts")

_STOP = object()


@dataclass
class Row:
    """What the evaluator needs of a committed row."""
    id: str
    source: str
    uri: str
    level: int
    start: float
    end: float
    vector: np.ndarray
    thumbnail: Optional[bytes]


def rows_of(batch) -> List[Row]:
    """ClipRows (what the writer commits) as Rows."""
    return [r if isinstance(r, Row) else
            Row(r.row_id(), r.source, r.uri, int(r.level), float(r.start), float(r.end),
                r.vector, r.thumbnail) for r in batch]


def base_url_of(cfg) -> Optional[str]:
    """alerts.base_url, else the HTTP API's address (None when HTTP is off)."""
    if cfg.alerts.base_url:
        return cfg.alerts.base_url
    if not cfg.http.enabled:
        return None
    host = cfg.http.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.http.port}"


def player_url(base: Optional[str], clip_id: str, t: float) -> Optional[str]:
    """The web page with the clip's player open; it plays from the clip's start (`t`, which
    ``/play/{id}`` gives the page as the offset to seek to)."""
    return None if base is None else f"{base}/?play={quote(clip_id, safe='')}"


class AlertEngine:
    """Triggers of `cfg` over the rows the Indexer commits. `model` embeds the triggers."""

    def __init__(self, cfg, model, model_id: str, store: Optional[AlertStore] = None):
        self.cfg = cfg
        self.model_id = str(model_id)
        self.triggers = [t for t in cfg.triggers if t.enabled]
        self.base_url = base_url_of(cfg)
        a = cfg.alerts
        self.thumbnail_mode = a.thumbnail
        # Computed once per (model, trigger) (events._CACHE keeps them across reloads).
        self.names = [t.name for t in self.triggers]
        self.matrix = (np.stack([trigger_embedding(model, model_id, t) for t in self.triggers])
                       if self.triggers else np.zeros((0, getattr(model, "dim", 1)), np.float32))
        self.fingerprints = {t.name: f"{self.model_id}|{t.query_fingerprint()}"
                             for t in self.triggers}
        self.store = store or AlertStore(cfg.state_dir)
        self.events: Dict[tuple, EventState] = self.store.load_events()
        self.stop_event = threading.Event()
        self.workers: Dict[str, DeliveryWorker] = {}
        for t in self.triggers:
            for action in t.actions:
                tid = action.target_id()
                if tid not in self.workers:
                    self.workers[tid] = DeliveryWorker(
                        make_target(action), self.store, backoff_initial_s=a.backoff_initial_s,
                        backoff_max_s=a.backoff_max_s, expire_s=a.expire_s,
                        stop=self.stop_event, on_result=self._delivery_result)
        self._q: "queue.Queue" = queue.Queue(maxsize=a.queue_batches)
        self._lock = threading.Lock()
        self._overflow = False
        self.overflows = 0
        self.rows_evaluated = 0
        self.batches_evaluated = 0
        self.last_eval_s = 0.0
        self.watermark: Optional[float] = None
        self.fatal: Optional[BaseException] = None
        self.counts = {n: dict(fired=0, last_fired=None, last_score=None, delivery_failures=0,
                               pending=0, expired=0) for n in self.names}
        for name, c in self.store.trigger_counts().items():
            if name in self.counts:
                self.counts[name].update(c)
        self._pruned = -1e9  # monotonic time of the last prune
        self.thread = threading.Thread(target=self._run, daemon=True, name="pystream-alerts")
        self._started = False
        self.on_alert = None  # test / benchmark hook: called with each new Alert after it is logged

    # ------------------------------------------------------------------ writer thread

    def committed(self, batch) -> None:
        """`batch` (ClipRows) is in LanceDB. Never blocks: a full queue is caught up from
        LanceDB later (the rows are there), so nothing is lost and the writer never waits."""
        if not self.triggers:
            return
        item = (time.time(), batch)  # after the commit, before the next batch's commit
        try:
            self._q.put_nowait(item)
        except queue.Full:
            with self._lock:
                if not self._overflow:
                    log.warning("alert queue full: the evaluator is behind; rows will be read "
                                "back from the archive")
                self._overflow = True
                self.overflows += 1

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "AlertEngine":
        if self.triggers and not self._started:
            self._started = True
            self.thread.start()
            for w in self.workers.values():
                w.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Evaluate what is queued, then stop (pending deliveries stay in the log)."""
        if self._started:
            deadline = time.monotonic() + timeout
            while self.thread.is_alive():
                try:
                    self._q.put(_STOP, timeout=0.5)
                    break
                except queue.Full:
                    if time.monotonic() > deadline:
                        break
            self.thread.join(max(0.1, deadline - time.monotonic()))
            self.stop_event.set()
            for w in self.workers.values():
                w.join(5.0)
        self.stop_event.set()
        self.store.close()

    # ------------------------------------------------------------------ evaluator thread

    def _run(self) -> None:
        try:
            self._catch_up()
            self._prune()
            while True:
                try:
                    item = self._q.get(timeout=60.0)
                except queue.Empty:
                    self._prune()
                    continue
                if item is _STOP:
                    return
                stamp, batch = item
                if self.watermark is not None and stamp <= self.watermark:
                    continue  # already read back by a catch-up
                self.evaluate(batch, stamp)
                with self._lock:
                    overflow, self._overflow = self._overflow, False
                if overflow:
                    self._catch_up()
        except BaseException as e:  # noqa: BLE001 - reported in status; the indexer goes on
            self.fatal = e
            log.exception("alert evaluator stopped")

    def _prune(self) -> None:
        """At most hourly: forget alerts older than alerts.keep_days (delivered or expired)."""
        now = time.monotonic()
        if now - self._pruned < 3600.0:
            return
        self._pruned = now
        n = self.store.prune(time.time() - self.cfg.alerts.keep_days * 86400.0)
        if n:
            log.info("alerts: forgot %d alert(s) older than %g days", n, self.cfg.alerts.keep_days)

    def _catch_up(self) -> None:
        """Evaluate rows committed after the watermark that were never evaluated."""
        wm = self.store.get_meta("watermark")
        active = self.store.get_meta("triggers") or {}
        if wm is None:  # first run: start from now
            self.watermark = time.time()
            self.store.put_meta("watermark", self.watermark)
        else:
            self.watermark = float(wm)
            # Only the triggers that were active then (a new or changed one starts from now).
            names = [n for n in self.names if active.get(n) == self.fingerprints[n]]
            if names:
                self._read_back(set(names))
        self.store.put_meta("triggers", self.fingerprints)

    def _read_back(self, names: set) -> None:
        table = self._table()
        if table is None:
            return
        t0 = time.monotonic()
        rows = (table.search().where(f"created > {self.watermark!r}")
                .select(["id", "source", "uri", "level", "start", "end", "vector", "thumbnail",
                         "created"]).limit(None).to_arrow().to_pylist())
        by_commit = collections.defaultdict(list)
        for r in rows:
            by_commit[r["created"]].append(Row(r["id"], r["source"], r["uri"], int(r["level"]),
                                               r["start"], r["end"],
                                               np.asarray(r["vector"], np.float32),
                                               r["thumbnail"]))
        for created in sorted(by_commit):
            self.evaluate(by_commit[created], created, only=names)
        if rows:
            log.info("alerts: caught up %d committed row(s) in %d batch(es) (%.2f s)", len(rows),
                     len(by_commit), time.monotonic() - t0)

    def _table(self):
        import lancedb

        from ..store import list_table_names

        try:
            db = lancedb.connect(self.cfg.archive)
            if self.cfg.table not in list_table_names(db):
                return None
            return db.open_table(self.cfg.table)
        except (FileNotFoundError, OSError, ValueError) as e:
            log.warning("alerts: cannot read the archive back for catch-up: %s", e)
            return None

    def evaluate(self, rows: list, committed: float, only: Optional[set] = None) -> BatchOutcome:
        """Score `rows` (Rows or ClipRows, committed at `committed`) and log what fires;
        returns the outcome."""
        t0 = time.monotonic()
        rows = rows_of(rows)
        out = BatchOutcome(watermark=committed)
        if rows and len(self.triggers):
            vecs = np.stack([np.asarray(r.vector, np.float32) for r in rows])
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            scores = (vecs / np.maximum(norms, 1e-12)) @ self.matrix.T  # [rows, triggers]
            for j, trig in enumerate(self.triggers):
                if only is not None and trig.name not in only:
                    continue
                self._trigger(trig, rows, scores[:, j], committed, out)
        self.store.apply(out)
        self.watermark = committed
        self.events.update(out.events)
        fired = out.alerts
        with self._lock:
            self.rows_evaluated += len(rows)
            self.batches_evaluated += 1
            self.last_eval_s = time.monotonic() - t0
            for a in fired:
                c = self.counts[a.trigger]
                c["fired"] += 1
                c["last_fired"], c["last_score"] = a.fired, a.score
                c["pending"] += len(a.targets)
        for a in fired:
            log.info("alert %s: trigger %s, source %s, %.1f-%.1f, score %.3f", a.key, a.trigger,
                     a.source, a.start, a.end, a.score)
            for tid in a.targets:
                self.workers[tid].notify()
            if self.on_alert is not None:
                self.on_alert(a)
        return out

    def _trigger(self, trig, rows: List[Row], scores: np.ndarray, committed: float,
                 out: BatchOutcome) -> None:
        hits = [(rows[i], float(scores[i])) for i in np.nonzero(scores >= trig.threshold)[0]
                if rows[i].level == trig.level
                and (trig.sources is None or rows[i].source in trig.sources)]
        if not hits:
            return
        done = self.store.covered(trig.name, [r.id for r, _ in hits])
        hits.sort(key=lambda h: (h[0].source, h[0].uri, h[0].start))
        new_by_key = {a.key: a for a in out.alerts}
        ext_by_key = {e.key: e for e in out.extensions}
        for r, score in hits:
            if r.id in done:
                continue
            k = (trig.name, r.source, r.uri)
            state = out.events.get(k) or self.events.get(k)
            if continues(state, r.start, r.end, trig.cooldown_s):
                new = EventState(state.key, min(state.first_start, r.start),
                                 max(state.last_end, r.end))
                out.events[k] = new
                if state.key in new_by_key:
                    a = new_by_key[state.key]
                    a.rows.append(r.id)
                    a.end, a.peak = max(a.end, r.end), max(a.peak, score)
                else:
                    e = ext_by_key.get(state.key)
                    if e is None:
                        e = ext_by_key[state.key] = Extension(state.key, r.end, score, [])
                        out.extensions.append(e)
                        out.trigger_of[state.key] = trig.name
                    e.rows.append(r.id)
                    e.end, e.peak = max(e.end, r.end), max(e.peak, score)
                continue
            key = alert_key(trig.name, r.source, r.id)
            out.events[k] = EventState(key, r.start, r.end)
            if key in new_by_key or self.store.has_alert(key):  # replayed first row
                e = Extension(key, r.end, score, [r.id])
                out.extensions.append(e)
                ext_by_key[key] = e
                out.trigger_of[key] = trig.name
                continue
            now = time.time()
            a = Alert(key=key, trigger=trig.name, source=r.source, uri=r.uri, first_row=r.id,
                      start=r.start, end=r.end, score=score, fired=now,
                      payload=self.payload(trig, r, score, key, committed, now),
                      targets=trig.target_ids(), rows=[r.id], peak=score)
            out.alerts.append(a)
            new_by_key[key] = a

    def payload(self, trig, r: Row, score: float, key: str, committed: float, now: float) -> dict:
        p = dict(key=key, trigger=trig.name, text=trig.text,
                 image=trig.image, threshold=trig.threshold, source=r.source, uri=r.uri,
                 level=r.level, start=r.start, end=r.end, score=round(score, 6), clip_id=r.id,
                 committed=committed, fired=now, thumbnail_url=None, thumbnail_b64=None,
                 player_url=player_url(self.base_url, r.id, r.start))
        if self.thumbnail_mode in ("url", "both") and self.base_url is not None:
            p["thumbnail_url"] = f"{self.base_url}/thumb/{quote(r.id, safe='')}"
        if self.thumbnail_mode in ("base64", "both") and r.thumbnail:
            p["thumbnail_b64"] = base64.b64encode(r.thumbnail).decode()
        return p

    # ------------------------------------------------------------------ numbers

    def _delivery_result(self, trigger: str, outcome: str) -> None:
        with self._lock:
            c = self.counts.get(trigger)
            if c is None:
                return
            if outcome == "failed":
                c["delivery_failures"] += 1
            else:
                c["pending"] = max(0, c["pending"] - 1)
                if outcome == "expired":
                    c["expired"] += 1

    def status(self) -> dict:
        targets = {tid: w.health() for tid, w in self.workers.items()}
        with self._lock:
            triggers = {}
            for t in self.triggers:
                c = dict(self.counts[t.name])
                c["targets"] = t.target_ids()
                c["threshold"] = t.threshold
                triggers[t.name] = c
            return dict(triggers=triggers, targets=targets, queued_batches=self._q.qsize(),
                        rows_evaluated=self.rows_evaluated, overflows=self.overflows,
                        last_eval_s=round(self.last_eval_s, 4), watermark=self.watermark,
                        running=self.thread.is_alive(),
                        error=None if self.fatal is None else repr(self.fatal))


def make_alert_engine(cfg, model, model_id: str) -> Optional[AlertEngine]:
    """The engine for `cfg.triggers`, or None when no trigger is enabled."""
    if not any(t.enabled for t in cfg.triggers):
        return None
    return AlertEngine(cfg, model, model_id)
