"""Exactly-once bookkeeping: markers, the commit watermark, checkpoints and restore.

No threads of its own and no model: the encoder thread calls ``CommitLog.add`` after every batch
(write the batch's rows, then record a ``Marker``: the number of rows written so far, the
carried state and every open stream's position, the files finished in it); the writer thread
calls ``CommitLog.committed`` when a batch is in LanceDB. The newest marker whose rows are all
committed is checkpointed (files first, then the encoder entry, then each source's progress), so
a restart repeats at most the rows since the last commit, and replaying them is harmless (row
ids are deterministic and the writer upserts on them).

``plan_restore`` and ``restore_source_stats`` read a checkpoint back: which unfinished files
resume where, which carried streams to drop (live ones restart live; files already done), and
the per-source numbers and the downtime gap of live sources.

A checkpoint that cannot be written (the state directory's disk is full) changes nothing: its
markers stay queued (merged into one, so memory stays flat), ``apply`` raises, the writer stalls
on it and retries it (``ClipWriter(on_retry=CommitLog.apply)``), and nothing more is committed
until it is written. At most ``MAX_MARKERS`` markers wait: beyond that the newest are folded
together (their files-done lists kept), so a stalled writer does not hold a carried-state
snapshot per encoder batch.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from .messages import Marker, StreamRef
from .stats import SourceStats

log = logging.getLogger("pystream.pipeline")

ENCODER_KEY = "__encoder__"  # checkpoint entry holding the carried state + open streams
MAX_MARKERS = 16  # markers waiting for their rows; newer ones are folded together beyond this


@dataclass
class RestorePlan:
    """What a checkpoint's encoder entry says to do at start-up."""

    resume: Dict[str, dict] = field(default_factory=dict)  # stream key -> saved position
    open: Dict[str, StreamRef] = field(default_factory=dict)  # streams to keep carrying
    next_frame: Dict[str, int] = field(default_factory=dict)  # first frame not yet encoded
    drop: List[str] = field(default_factory=list)  # carried streams to forget


def plan_restore(progress: Optional[dict], is_file_done: Callable[..., bool]) -> RestorePlan:
    """The restore plan of a checkpointed encoder entry (``{"streams": {key: info}}``).

    ``is_file_done(source, path, size, mtime)`` tells files already marked done: killed between
    marking a file done and the next encoder checkpoint, its rows are all committed and the
    source will skip it, so nothing would ever finish its stream; it is dropped."""
    plan = RestorePlan()
    for key, info in (progress or {}).get("streams", {}).items():
        if info.get("live"):
            plan.drop.append(key)  # live restarts live; windows never span the gap
            continue
        fk = info.get("file_key")
        if fk and is_file_done(info["source"], *fk):
            plan.drop.append(key)
            continue
        plan.resume[key] = info
        # Open from the start, so later checkpoints keep carrying it until it resumes.
        plan.open[key] = StreamRef(key, info["source"], info["uri"], False,
                                   tuple(fk) if fk else None)
        plan.next_frame[key] = int(info["next_frame"])
    return plan


def resume_point(info: Optional[dict], file_key: Optional[tuple]) -> Optional[int]:
    """Where a file resumes: 0 when there is nothing to resume, None when the file changed since
    its checkpoint (its carried state must be dropped and the file started over)."""
    if info is None:
        return 0
    if file_key is None or list(file_key) != list(info.get("file_key") or []):
        return None
    return int(info["next_frame"])


def restore_source_stats(checkpoints, stats: Dict[str, SourceStats], now: float | None = None):
    """Per-source rows and files done from the checkpoints; a live source's downtime is a gap."""
    now = time.time() if now is None else now
    for name, st in stats.items():
        p = checkpoints.get(name) or {}
        st.update(rows=int(p.get("rows", 0)), files_done=int(p.get("files_done", 0)))
        if p.get("live"):
            st.update(live=True)
        if p.get("live") and p.get("last_end") is not None:
            st.update(last_indexed_end=p["last_end"])
            st.event("gap", "daemon was down", start=p["last_end"], end=now)
            log.info("source %s: gap %.1f s while the daemon was down", name, now - p["last_end"])


def restore(checkpoints, encoder, stats: Dict[str, SourceStats]) -> RestorePlan:
    """Start-up: load the carried state of files cut short into ``encoder`` (dropping what
    ``plan_restore`` says to), and the per-source numbers (live downtime becomes a gap)."""
    progress, state = checkpoints.get_with_state(ENCODER_KEY)
    plan = RestorePlan()
    if progress and state:
        try:
            encoder.load_state_bytes(state)
        except Exception as e:  # a state from another model/version: start those files over
            log.warning("cannot restore encoder state (%s); unfinished files restart", e)
            progress = {}
        plan = plan_restore(progress, checkpoints.is_file_done)
        for key in plan.drop:
            encoder.drop(key)
        log.info("restored %d unfinished file(s) from checkpoint", len(plan.resume))
    restore_source_stats(checkpoints, stats)
    return plan


class CommitLog:
    """Markers between the encoder thread (``add``) and the writer thread (``committed``).

    ``writer`` needs ``write(rows)`` (raises ValueError for a row it rejects); set it with
    ``attach`` once the writer exists (the writer's on_commit hook is ``committed``)."""

    def __init__(self, checkpoints, stats: Dict[str, SourceStats], writer=None):
        self.checkpoints = checkpoints
        self.stats = stats
        self.writer = writer
        self._lock = threading.Lock()
        self._markers: collections.deque = collections.deque()
        self.rows_enqueued = 0
        self.rows_committed = 0
        self.error: str | None = None  # the last checkpoint failure, until one succeeds
        self.failing_since: float | None = None
        self.failures = 0

    def attach(self, writer) -> None:
        self.writer = writer

    # ---------------------------------------------------------------- encoder thread

    def add(self, rows: list, streams: Dict[str, dict], state: Optional[bytes],
            files_done: List[tuple], source_progress: Dict[str, float]) -> list:
        """Write ``rows`` and record the marker after them; returns the rows accepted. Blocks
        while the writer's pending rows are at their bound (backpressure), outside the lock:
        the writer's commits need it to finish."""
        wait = getattr(self.writer, "wait_for_room", None)
        if rows and wait is not None:
            wait(len(rows))
        with self._lock:  # the writer's commit of these rows waits for their marker
            rows = self._write(rows)
            self.rows_enqueued += len(rows)
            self._markers.append(Marker(self.rows_enqueued, streams, state, list(files_done),
                                        dict(source_progress)))
            if len(self._markers) > MAX_MARKERS:
                newest, older = self._markers.pop(), self._markers.pop()
                newest.files_done[:0] = older.files_done
                self._markers.append(newest)
        if not rows:
            try:
                self.apply()  # nothing to wait for if everything before is committed
            except Exception:  # recorded; the writer retries it before its next commit
                pass
        return rows

    def _write(self, rows: list) -> list:
        if not rows:
            return rows
        try:
            self.writer.write(rows)
            return rows
        except ValueError:  # e.g. a NaN vector: drop that row, keep the others
            good = []
            for r in rows:
                try:
                    self.writer.write([r])
                    good.append(r)
                except ValueError as e:
                    log.error("source %s: row %s rejected: %s", r.source, r.row_id(), e)
                    st = self.stats.get(r.source)
                    if st is not None:
                        st.error(f"row rejected: {e}")
            return good

    # ---------------------------------------------------------------- writer thread

    def committed(self, batch: list, on_rows: Callable[[list], None] | None = None) -> None:
        """``batch`` is in LanceDB: count it, call ``on_rows``, checkpoint what is complete."""
        per_source = collections.Counter(r.source for r in batch)
        for name, n in per_source.items():
            st = self.stats.get(name)
            if st is not None:
                st.add(rows=n)
        for r in batch:
            st = self.stats.get(r.source)
            if st is not None and r.level == 0:
                st.indexed_until(r.end)
        with self._lock:
            self.rows_committed += len(batch)
        if on_rows is not None:
            on_rows(batch)
        self.apply()

    def apply(self) -> None:
        """Checkpoint the newest marker whose rows are all committed (in order), in one
        transaction. On failure nothing is written, the ready markers stay (merged into one)
        and the error is raised."""
        with self._lock:
            ready = []
            while self._markers and self._markers[0].target_rows <= self.rows_committed:
                ready.append(self._markers.popleft())
            if not ready:
                return
            last = ready[-1]
            files = [f for m in ready for f in m.files_done]
            try:
                with self.checkpoints.transaction():
                    # Files first: a crash between the two writes replays the file (idempotent).
                    for source, path, size, mtime in files:
                        self.checkpoints.mark_file_done(source, path, size, mtime)
                    self.checkpoints.put(ENCODER_KEY, {"streams": last.streams, "time": time.time()},
                                         last.state)
                    done = collections.Counter(f[0] for f in files)
                    for name, end in last.source_progress.items():
                        st = self.stats.get(name)
                        self.checkpoints.put(name, {
                            "last_end": end, "live": bool(st and st.live),
                            "rows": st.rows if st else 0,
                            "files_done": (st.files_done if st else 0) + done.get(name, 0)})
            except Exception as e:
                self._markers.appendleft(Marker(last.target_rows, last.streams, last.state, files,
                                                last.source_progress))
                if self.error is None:
                    self.failing_since = time.time()
                    log.error("checkpoint failed (kept, retried): %s: %s", type(e).__name__, e)
                self.error = f"{type(e).__name__}: {e}"
                self.failures += 1
                raise
            if self.error is not None:
                log.warning("checkpoint written again after %.1f s (%d failures)",
                            time.time() - (self.failing_since or time.time()), self.failures)
            self.error, self.failing_since = None, None
            for source, *_ in files:
                st = self.stats.get(source)
                if st is not None:
                    st.add(files_done=1)

    @property
    def pending(self) -> int:
        """Markers not yet checkpointed."""
        with self._lock:
            return len(self._markers)
