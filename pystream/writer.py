"""Writer side of the clip archive: one thread that batches clip embeddings into LanceDB.

Why this shape (see design.md, "Known pitfalls: LanceDB"):
- every LanceDB commit is a new fragment and a new version, so rows are batched by size and time
  and the table is compacted with `optimize()` periodically;
- rows are upserted with `merge_insert("id")` on a deterministic id, so replaying rows after a
  crash (the checkpoint lags the archive by at most one commit) never duplicates a clip;
- IVF_PQ needs >= 256 rows to train and unindexed rows are brute-forced, so the vector index is
  created once enough rows exist, kept current by `optimize()` (which indexes new fragments) and
  rebuilt when the table has grown enough that the partition count is stale.

Running for months (issue 12): a commit that fails (a full disk, a vanished share) leaves the
writer "stalled": its rows stay queued and are retried with a doubling backoff, the state,
error and time are in ``stats()`` at once, and the log gets one line when it starts, one a
minute while it lasts and one when it recovers. Pending rows are bounded
(``max_pending_rows``): ``wait_for_room`` blocks the encoder when they are reached, which in
turn fills the chunk queue and holds the sources back (``backpressure`` is set meanwhile). A
failing ``on_commit`` hook (the checkpoint database on a full disk) stalls the writer the same
way when ``on_retry`` is given: no further commit until ``on_retry()`` succeeds. Retention
(``pystream.retention``) runs in ``maintain``: delete, then ``optimize`` and cleanup.
"""

from __future__ import annotations

import collections
import logging
import math
import re
import threading
import time
from datetime import timedelta
from typing import Callable, Iterable

import pyarrow as pa
from lancedb.index import IvfPq

from .memory import trim_heap
from .store import (SCALAR_INDEXES, VECTOR_INDEX_NAME, WRITER_CACHE_MB, ClipRow, bounded_session,
                    check_vector, connect, list_table_names, open_or_create_table,
                    portable_model_ref, rows_table, vector_index_params)

log = logging.getLogger(__name__)


class WriterError(RuntimeError):
    """A commit (or the on_commit hook) failed in the writer thread."""


def describe_error(error: BaseException) -> str:
    """One line for status and logs: LanceDB's IO errors carry the Rust source path of the
    failing call after the message; keep the message."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = re.sub(r",\s*/\S+\.rs:\d+:\d+\s*$", "", text)
    text = text.removeprefix("lance error: ")
    if isinstance(error, OSError) and error.strerror and not text:
        text = error.strerror
    return f"{type(error).__name__}: {text}"


class ClipWriter:
    """Batches ClipRows into a LanceDB table from one background thread.

    write() only validates and enqueues. The thread commits when `batch_rows` rows are pending,
    when the oldest pending row is `flush_interval_s` old, or when flush()/close() asks. A failed
    commit keeps its rows queued (the upsert is idempotent, so retrying is safe), is logged, and
    is raised from the next flush()/close() (close() succeeds if the retries got everything in).

    ``max_pending_rows``: ``wait_for_room`` blocks while this many rows wait (0: no bound);
    ``cancel`` (an Event) lifts the bound, for a daemon that is stopping. ``retention``: a
    ``pystream.retention.RetentionPolicy`` applied in ``maintain``; ``clock`` gives the wall
    time (rows' ``created``, retention's now: tests pass a fake one). ``after_retention``
    is called with the policy's cutoffs after each retention pass (the daemon forgets the
    checkpoints of files that retention made moot). ``table_wait_s``: how long an appending
    node without maintenance waits for the maintenance node to create the table.
    """

    def __init__(
        self,
        db_uri: str,
        table: str = "clips",
        *,
        dim: int,
        model_id: str,
        batch_rows: int = 512,
        flush_interval_s: float = 1.0,
        optimize_every_s: float = 60.0,
        index_min_rows: int = 256,
        reindex_growth: float = 4.0,
        keep_versions_s: float = 3600.0,
        on_commit: Callable[[list[ClipRow]], None] | None = None,
        retry_backoff_s: float = 1.0,
        retry_max_s: float = 30.0,
        max_pending_rows: int = 0,
        cancel: threading.Event | None = None,
        on_retry: Callable[[], None] | None = None,
        retention=None,
        after_retention=None,
        clock: Callable[[], float] = time.time,
        append: bool = False,
        table_wait_s: float = 30.0,
        maintenance: bool = True,
        storage_options: dict | None = None,
        model_fingerprint: str | None = None,
    ):
        if index_min_rows < 256:
            raise ValueError("index_min_rows must be >= 256: IVF_PQ cannot train on fewer rows")
        self.db_uri = str(db_uri)
        self.table_name = table
        self.dim = int(dim)
        self.model_id = portable_model_ref(model_id) or str(model_id)
        self.batch_rows = int(batch_rows)
        self.flush_interval_s = float(flush_interval_s)
        self.optimize_every_s = float(optimize_every_s)
        self.index_min_rows = int(index_min_rows)
        self.reindex_growth = float(reindex_growth)
        self.keep_versions_s = float(keep_versions_s)
        self.on_commit = on_commit
        self.retry_backoff_s = float(retry_backoff_s)
        self.retry_max_s = max(float(retry_max_s), self.retry_backoff_s)
        self.max_pending_rows = int(max_pending_rows)
        self.cancel = cancel
        self.on_retry = on_retry
        self.retention = retention
        self.after_retention = after_retention
        self.clock = clock
        self.append = bool(append)
        self.maintenance = bool(maintenance)
        self.storage_options = dict(storage_options or {}) or None
        # Append mode: files whose rows are known to be new (checked once, see _commit).
        self._fresh_uris: "collections.OrderedDict[str, None]" = collections.OrderedDict()
        self.replayed_rows = 0  # rows dropped because a crash replay found them committed
        # Set while wait_for_room() blocks: live sources record a gap instead of waiting.
        self.backpressure = threading.Event()

        # Its size_bytes is the cache's size (the soak prints it).
        self.session = bounded_session(WRITER_CACHE_MB["index"], WRITER_CACHE_MB["metadata"])
        extra = {"storage_options": self.storage_options} if self.storage_options else {}
        self._db = connect(self.db_uri, session=self.session, **extra)
        if self.append and not self.maintenance:
            self._wait_for_table(table_wait_s)
        self._table = open_or_create_table(self._db, table, self.dim, self.model_id,
                                           model_fingerprint)

        self._cond = threading.Condition()
        self._pending: list[ClipRow] = []
        self._oldest_pending_time: float | None = None
        self._enqueued = 0  # rows ever enqueued
        self._done = 0  # rows committed (rows leave the queue in order, so this is a watermark)
        self._flush_wanted = False
        self._closing = False
        self._error: BaseException | None = None
        self._last_optimize = time.monotonic()
        # Row count when the vector index was (re)built; None until we know. After a restart the
        # current size is taken as the base, so a rebuild comes after the same growth again.
        self._index_built_rows: int | None = None

        self.rows_written = 0
        self.commits = 0
        self.last_commit_time: float | None = None
        # Health: a stall is a streak of failed attempts (commit or on_commit hook).
        self.errors = 0  # failed attempts, ever
        self._stalled_since: float | None = None  # wall time of the streak's first failure
        self._stall_error: str | None = None
        self._stall_attempts = 0
        self._stall_logged = 0.0
        self._hook_failed = False  # on_commit failed: on_retry() must succeed before more commits
        self._blocked_since: float | None = None  # wait_for_room() is blocking since (monotonic)
        self.backpressure_s = 0.0  # total seconds the encoder waited for room
        self.maintenance_errors = 0
        self.last_maintenance_error: str | None = None
        self.retention_deleted = 0  # rows deleted by retention, ever (this process)
        self.last_retention: dict | None = None
        self._last_retention = -math.inf  # monotonic

        self._thread = threading.Thread(target=self._run, name="pystream-clip-writer", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- public API

    @property
    def table(self):
        return self._table

    @property
    def pending(self) -> int:
        with self._cond:
            return self._enqueued - self._done

    def wait_for_room(self, n: int, timeout: float | None = None) -> bool:
        """Block while ``max_pending_rows`` would be exceeded by ``n`` more rows (a batch larger
        than the bound still goes in once nothing else waits). False on timeout; returns at once
        when ``cancel`` is set or the writer is closing."""
        if self.max_pending_rows <= 0:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            def full():
                pending = self._enqueued - self._done
                return pending > 0 and pending + n > self.max_pending_rows
            if not full():
                return True
            t0 = time.monotonic()
            self._blocked_since = t0
            self.backpressure.set()
            try:
                while full() and not self._closing and not (self.cancel and self.cancel.is_set()):
                    if not self._thread.is_alive():
                        raise WriterError("writer thread is not running")
                    wait = 0.25
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                        if wait <= 0:
                            return False
                    self._cond.wait(wait)
                return True
            finally:
                self.backpressure.clear()
                self._blocked_since = None
                self.backpressure_s += time.monotonic() - t0

    def write(self, rows: Iterable[ClipRow]) -> None:
        """Validate and enqueue rows; returns at once (see ``wait_for_room`` for the bound).
        Bad rows raise ValueError here."""
        rows = list(rows)
        for row in rows:
            row.vector = check_vector(row.vector, self.dim, f"vector of clip {row.row_id()!r}")
            if not (math.isfinite(row.start) and math.isfinite(row.end)):
                raise ValueError(f"clip {row.row_id()!r} has a non-finite start/end time")
        if not rows:
            return
        with self._cond:
            if self._closing:
                raise RuntimeError("ClipWriter is closed")
            if self._oldest_pending_time is None:
                self._oldest_pending_time = time.monotonic()
            self._pending.extend(rows)
            self._enqueued += len(rows)
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> None:
        """Block until every row enqueued before this call is committed.

        Raises WriterError if a commit failed since the last flush (rows stay queued for retry),
        TimeoutError if `timeout` passes first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._enqueued
            self._flush_wanted = True
            self._cond.notify_all()
            while self._done < target and self._error is None:
                if not self._thread.is_alive():
                    raise WriterError("writer thread is not running")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"flush: {target - self._done} rows still pending")
                self._cond.wait(remaining if remaining is not None else 0.5)
            self._raise_pending_error()

    def close(self, optimize: bool = True, timeout: float | None = None) -> None:
        """Commit everything queued, optionally compact + index once more, stop the thread.
        A failure the retries got over is not raised; one still failing at ``timeout`` is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                try:
                    self.flush(None if deadline is None else max(0.0, deadline - time.monotonic()))
                    break
                except WriterError:
                    with self._cond:
                        if self._done >= self._enqueued and not self._hook_failed:
                            break  # recovered: everything is in
                    if deadline is not None and time.monotonic() >= deadline:
                        raise
                    time.sleep(0.05)
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._thread.join(timeout)
        if optimize and self._done > 0:
            self.maintain(force=True)

    def __enter__(self) -> "ClipWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stats(self) -> dict:
        with self._cond:
            now = time.monotonic()
            return {
                "state": "stalled" if self._stalled_since is not None else "ok",
                "error": self._stall_error,
                "since": self._stalled_since,
                "attempts": self._stall_attempts,  # failed attempts in this stall
                "errors": self.errors,  # failed attempts, ever
                "rows_written": self.rows_written,
                "commits": self.commits,
                "last_commit_time": self.last_commit_time,
                "pending": self._enqueued - self._done,
                "max_pending": self.max_pending_rows,
                "backpressure": self._blocked_since is not None,
                "backpressure_s": round(self.backpressure_s + (
                    now - self._blocked_since if self._blocked_since is not None else 0.0), 3),
                "maintenance_errors": self.maintenance_errors,
                "last_maintenance_error": self.last_maintenance_error,
                "retention_deleted": self.retention_deleted,
                "last_retention": self.last_retention,
                "mode": "append" if self.append else "upsert",
                "maintenance": self.maintenance,
                "replayed_rows": self.replayed_rows,
            }

    @property
    def stalled(self) -> bool:
        with self._cond:
            return self._stalled_since is not None

    def maintain(self, force: bool = False) -> None:
        """Retention (when due), compact, refresh and create indexes. Runs on the writer thread
        every optimize_every_s; not at all on a node configured without maintenance (several
        nodes on one archive: one of them maintains it, so compaction and cleanup never race
        the others' commits twice over)."""
        if not self.maintenance:
            self._last_optimize = time.monotonic()
            return
        table = self._table
        self.apply_retention(force=force)
        num_rows = table.count_rows()
        indexes = {index.name: index for index in table.list_indices()}
        if VECTOR_INDEX_NAME not in indexes:
            if num_rows >= self.index_min_rows:
                self._build_vector_index(num_rows)
        elif self._index_built_rows is None:
            self._index_built_rows = num_rows
        elif num_rows >= self.reindex_growth * self._index_built_rows:
            self._build_vector_index(num_rows)  # partitions sized for a much smaller table
        if num_rows > 0:
            for column, index_type in SCALAR_INDEXES.items():
                if f"{column}_idx" not in indexes:
                    table.create_index(column, config=index_type(), name=f"{column}_idx")
        # optimize(): compacts small fragments (rewriting those with many deleted rows) and adds
        # new rows to existing indexes. Old versions are removed after keep_versions_s so a
        # long-running daemon does not keep a manifest per commit forever (readers only need
        # recent versions), and the space of deleted rows comes back.
        table.optimize(cleanup_older_than=timedelta(seconds=self.keep_versions_s))
        self._last_optimize = time.monotonic()
        trim_heap()  # freed pages back to the kernel: RSS stays flat over months (memory.py)

    def apply_retention(self, force: bool = False) -> int:
        """Delete the rows past ``retention`` (every ``retention.interval_s``, or now with
        ``force``); returns how many went. The next ``optimize`` reclaims their space."""
        policy = self.retention
        if policy is None or not policy.active:
            return 0
        if not force and time.monotonic() - self._last_retention < policy.interval_s:
            return 0
        from . import retention

        self._last_retention = time.monotonic()
        t0, now = time.monotonic(), self.clock()
        deleted = retention.apply(self._table, policy, now)
        if self.after_retention is not None:
            self.after_retention(policy.cutoffs(now))  # e.g. forget gone files' checkpoints
        self.retention_deleted += deleted
        self.last_retention = {"time": now, "deleted": deleted,
                               "seconds": round(time.monotonic() - t0, 3)}
        if deleted:
            log.info("retention: %d rows deleted", deleted)
        return deleted

    # ---------------------------------------------------------------- writer thread

    def _build_vector_index(self, num_rows: int) -> None:
        partitions, sub_vectors = vector_index_params(num_rows, self.dim)
        log.info("building IVF_PQ index: %d rows, %d partitions, %d sub-vectors",
                 num_rows, partitions, sub_vectors)
        self._table.create_index(
            "vector",
            config=IvfPq(distance_type="cosine", num_partitions=partitions,
                         num_sub_vectors=sub_vectors),
            replace=True,
            name=VECTOR_INDEX_NAME,
        )
        self._index_built_rows = num_rows

    def _raise_pending_error(self) -> None:
        # Called with the lock held: report a failure once, then forget it.
        if self._error is not None:
            error, self._error = self._error, None
            raise WriterError(f"clip writer failed: {error!r}") from error

    def _take_batch(self) -> list[ClipRow] | None:
        """Wait until a batch is due; return it (None when closing with nothing left)."""
        with self._cond:
            while True:
                now = time.monotonic()
                due_by_age = (self._oldest_pending_time is not None
                              and now - self._oldest_pending_time >= self.flush_interval_s)
                if self._pending and (len(self._pending) >= self.batch_rows or due_by_age
                                      or self._flush_wanted or self._closing):
                    batch = self._pending[: max(self.batch_rows, 1)]
                    return batch
                if not self._pending:
                    self._flush_wanted = False
                    if self._closing:
                        return None
                # Wake for new rows, the age deadline, or periodic maintenance.
                waits = [self.optimize_every_s - (now - self._last_optimize)]
                if self._oldest_pending_time is not None:
                    waits.append(self.flush_interval_s - (now - self._oldest_pending_time))
                self._cond.wait(max(0.01, min(waits)))
                if not self._pending and time.monotonic() - self._last_optimize >= self.optimize_every_s:
                    return []  # idle: time for maintenance

    def _commit(self, batch: list[ClipRow]) -> None:
        data = rows_table(batch, self.dim, self.model_id, self.clock())
        # A batch may contain the same id twice (a replay inside one batch); keep the first.
        ids = data.column("id").to_pylist()
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            keep = [i for i, x in enumerate(ids) if not (x in seen or seen.add(x))]
            data = data.take(keep)
            batch = [batch[i] for i in keep]
            ids = [ids[i] for i in keep]
        if not self.append:
            (self._table.merge_insert("id")
             .when_not_matched_insert_all()
             .execute(data))
            return
        # Append mode (several nodes on one archive): every commit is a plain Append, which
        # Lance rebases over other nodes' concurrent commits (concurrent merge_inserts can both
        # insert one new key: lance #4585). Only a crash replay can repeat a row, and only rows
        # of a file resumed from its checkpoint (live streams restart live, with new ids): a
        # file's rows are checked until one is not in the archive (rows are committed in order,
        # so the archive holds a prefix of each file's rows); ids found are dropped, like the
        # insert-if-absent of an upsert, and this node is the only writer of those ids.
        check = [i for i, row in enumerate(batch)
                 if row.recording and row.uri not in self._fresh_uris]
        if check:
            existing = self._existing_ids([ids[i] for i in check])
            drop = set()
            for i in check:
                if ids[i] in existing:
                    drop.add(i)
                else:
                    self._fresh_uris[batch[i].uri] = None
                    while len(self._fresh_uris) > 10_000:
                        self._fresh_uris.popitem(last=False)
            if drop:
                log.info("replay: %d row(s) already in the archive dropped", len(drop))
                data = data.take(pa.array([i for i in range(len(ids)) if i not in drop],
                                          pa.int64()))
                self.replayed_rows += len(drop)
        if data.num_rows:
            try:
                self._table.add(data)
            except Exception as e:
                if "ncompatible transaction" not in str(e):
                    raise
                # Another node's create (an Overwrite in Lance) landed after this handle's
                # version: Lance will not rebase an Append over it. The rows stay queued; the
                # next attempt appends on the latest version.
                self._table = self._db.open_table(self.table_name)
                raise

    def _wait_for_table(self, timeout_s: float) -> None:
        """Several nodes on one archive: the maintenance node creates the table. Two nodes
        creating it at once both commit (the later create is an Overwrite that Lance rebases),
        so the others wait for it a while before creating it themselves."""
        deadline = time.monotonic() + timeout_s
        while self.table_name not in list_table_names(self._db):
            if time.monotonic() > deadline:
                log.warning("table %r not created by the maintenance node within %.0f s; "
                            "creating it here", self.table_name, timeout_s)
                return
            time.sleep(0.5)

    def _existing_ids(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            where = "id IN (" + ", ".join("'" + x.replace("'", "''") + "'" for x in part) + ")"
            found.update(self._table.search().where(where).select(["id"]).limit(len(part))
                         .to_arrow().column("id").to_pylist())
        return found

    def _run(self) -> None:
        while True:
            if self._hook_failed and self.on_retry is not None:
                # The rows are in LanceDB but their checkpoint is not: nothing more is committed
                # until it is (a full state disk pauses indexing like a full archive disk).
                try:
                    self.on_retry()
                except Exception as error:
                    if self._failed(error, "checkpoint"):
                        return
                    continue
                with self._cond:
                    self._hook_failed = False
                    self._recovered()
                    self._cond.notify_all()
            batch = self._take_batch()
            if batch is None:
                return
            if batch:
                try:
                    self._commit(batch)
                except Exception as error:  # keep rows queued, retry after a pause
                    if self._failed(error, "commit"):
                        return  # close() reports the error; rows are not committed
                    continue
                # The hook runs before the rows count as done, so that flush() returning means
                # the hook (e.g. the checkpoint advance) has run for every flushed row.
                hook_error = None
                if self.on_commit is not None:
                    try:
                        self.on_commit(batch)
                    except Exception as error:
                        hook_error = error
                with self._cond:
                    del self._pending[: len(batch)]
                    self._done += len(batch)
                    self.rows_written += len(batch)
                    self.commits += 1
                    self.last_commit_time = time.time()
                    self._oldest_pending_time = time.monotonic() if self._pending else None
                    if hook_error is None and not self._hook_failed:
                        self._recovered()
                    self._cond.notify_all()
                if hook_error is not None:
                    if self.on_retry is not None:
                        self._hook_failed = True
                    if self._failed(hook_error, "checkpoint", backoff=self.on_retry is not None):
                        return
                    continue
            if time.monotonic() - self._last_optimize >= self.optimize_every_s:
                try:
                    self.maintain()
                except Exception as error:
                    desc = describe_error(error)
                    log.error("clip writer: maintenance (retention/optimize/index) failed: %s",
                              desc, exc_info=log.isEnabledFor(logging.DEBUG))
                    with self._cond:
                        self.maintenance_errors += 1
                        self.last_maintenance_error = desc
                    self._last_optimize = time.monotonic()  # do not spin on a failing optimize

    # ---------------------------------------------------------------- health

    def _failed(self, error: BaseException, what: str, backoff: bool = True) -> bool:
        """Record a failed attempt (stall state, one log line per minute), wait the backoff.
        Returns True when the writer is closing (stop retrying)."""
        desc = describe_error(error)
        if what == "checkpoint":
            desc = f"checkpoint: {desc}"
        now = time.time()
        with self._cond:
            self._error = error
            self.errors += 1
            first = self._stalled_since is None
            if first:
                self._stalled_since = now
                self._stall_attempts = 0
            self._stall_error = desc
            self._stall_attempts += 1
            attempts = self._stall_attempts
            self._cond.notify_all()
            closing = self._closing
        if first:
            log.error("clip writer stalled: %s%s (rows stay queued and are retried)",
                      "commit failed: " if what == "commit" else "", desc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            self._stall_logged = now
        elif now - self._stall_logged >= 60.0:
            log.error("clip writer still stalled after %.0f s (%d attempts): %s",
                      now - self._stalled_since, attempts, desc)
            self._stall_logged = now
        if closing:
            return True
        if backoff:
            delay = min(self.retry_max_s,
                        self.retry_backoff_s * 2 ** min(attempts - 1, 20))
            with self._cond:
                self._cond.wait_for(lambda: self._closing, delay)
        return False

    def _recovered(self) -> None:
        # Called with the lock held, after a successful commit or checkpoint retry.
        if self._stalled_since is not None and not self._hook_failed:
            log.warning("clip writer recovered after %.1f s (%d failed attempts); last error: %s",
                        time.time() - self._stalled_since, self._stall_attempts,
                        self._stall_error)
            self._stalled_since = None
            self._stall_error = None
            self._stall_attempts = 0
