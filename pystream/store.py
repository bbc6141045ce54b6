"""Writer side of the clip archive: one thread that batches clip embeddings into LanceDB.

(This module was pystream/index.py; it moved so that `pystream.index` can be the indexing
function, see pystream/indexing.py.)

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
import hashlib
import io
import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Iterable, Sequence

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import BTree, Bitmap, IvfPq

from .memory import trim_heap

log = logging.getLogger(__name__)

VECTOR_INDEX_NAME = "vector_idx"
# Scalar indexes: bitmap for the low-cardinality source name, btree for time ranges and for the
# merge_insert join key (without it every upsert scans the whole id column).
SCALAR_INDEXES = {"source": Bitmap, "start": BTree, "id": BTree}


# Table (schema) metadata: the model that indexed the archive, so a reader can encode text
# queries with the same model without being told (pystream.open(path).search("...")), and a
# hash of its weight files (loader.weights_fingerprint): a name like "shipped" can stand for
# other weights after an upgrade, and vectors of two models do not compare.
MODEL_KEY = "pystream.model"
FINGERPRINT_KEY = "pystream.model_fingerprint"


class ModelMismatchError(ValueError):
    """The model does not match the archive's: another embedding size, or the same name with
    other weights (a fingerprint that differs from the one the archive recorded)."""


def clip_schema(dim: int, model: str | None = None, fingerprint: str | None = None) -> pa.Schema:
    """Arrow schema of the clips table for embeddings of size `dim` (made by `model`, whose
    weights hash to `fingerprint`)."""
    metadata = {MODEL_KEY: model} if model else {}
    if model and fingerprint:
        metadata[FINGERPRINT_KEY] = fingerprint
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("uri", pa.string()),
            pa.field("level", pa.int8(), nullable=False),
            pa.field("start", pa.float64(), nullable=False),
            pa.field("end", pa.float64(), nullable=False),
            pa.field("model", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dim)),
            pa.field("thumbnail", pa.binary()),
            pa.field("created", pa.float64()),
        ],
        metadata=metadata or None,
    )


def portable_model_ref(model_id) -> str | None:
    """How the archive records a model so that another process can load it again: "shipped"
    for the bundled model (wherever the package is installed), an absolute path for a local
    directory (a relative one would depend on the writer's working directory), else the id."""
    if model_id is None or str(model_id) == "":
        return None
    ref = str(model_id)
    if ref in ("shipped", "shipped-base", "shipped-tempme"):
        return ref
    path = os.path.expanduser(ref)
    if os.path.isdir(path):
        from .model.loader import shipped_adapter_dir, shipped_model_dir

        real = os.path.realpath(path)
        # The checkpoint directory alone is 'shipped'; its adapter directory 'shipped-tempme'.
        if real == os.path.realpath(shipped_model_dir()):
            return "shipped"
        if real == os.path.realpath(shipped_adapter_dir()):
            return "shipped-tempme"
        return real
    return ref


def recorded_model(table) -> str | None:
    """The model recorded with a clips table: its metadata, else the `model` column of a row
    (archives written before the metadata existed); None for an empty, unlabelled table."""
    metadata = table.schema.metadata or {}
    value = metadata.get(MODEL_KEY.encode())
    if value:
        return value.decode()
    rows = table.search().where("model IS NOT NULL").select(["model"]).limit(1).to_list()
    return rows[0]["model"] if rows else None


def recorded_fingerprint(table) -> str | None:
    """The weights fingerprint recorded with a clips table; None for archives written before
    pystream recorded one (or by a model without one, e.g. built in memory)."""
    value = (table.schema.metadata or {}).get(FINGERPRINT_KEY.encode())
    return value.decode() if value else None


def check_fingerprint(recorded: str | None, fingerprint: str | None, model: str | None,
                      where: str, recorded_name: str | None = None) -> None:
    """Raise ModelMismatchError when both fingerprints are known and differ: the archive's
    vectors were made by other weights than the model at hand, so its searches would rank
    badly without any other sign."""
    if not recorded or not fingerprint or recorded == fingerprint:
        return
    name = recorded_name or model
    raise ModelMismatchError(
        f"the archive at {where} was indexed with model {name!r} whose weights have "
        f"fingerprint {recorded}, but the model {model!r} loaded here has weights {fingerprint}"
        f"{' (the same name: it was retrained or replaced since)' if name == model else ''}. "
        "Vectors of different weights do not compare: use the weights that indexed the archive "
        "(model: a directory holding a copy of them), or index into a new archive or table "
        "with this model.")


def clip_id(source: str, level: int, start: float, recording: str | None = None) -> str:
    """Deterministic row id (the one definition): the same clip always gets the same id, so
    re-appending it is a no-op.

    (source, level, start) at millisecond resolution: windows are seconds apart, and rounding
    absorbs float noise in recomputed start times. For recordings, pass the file as
    `recording`: two files of one folder may share start times (e.g. files without metadata
    all start at 0), so a hash of the file path is part of the identity. Live streams do not
    pass it: their start times are wall-clock times, and a reconnect continues the same ids.
    """
    base = f"{source}|{int(level)}|{int(round(start * 1000))}"
    if not recording:
        return base
    return f"{base}|{hashlib.sha1(recording.encode()).hexdigest()[:12]}"


@dataclass
class ClipRow:
    source: str
    uri: str
    level: int
    start: float
    end: float
    vector: np.ndarray
    thumbnail: bytes | None = None
    model: str | None = None  # defaults to the writer's model_id
    id: str | None = None  # defaults to clip_id(source, level, start[, uri if recording])
    recording: bool = False  # a file (its uri is part of the id), not a live stream

    def row_id(self) -> str:
        if self.id is not None:
            return self.id
        return clip_id(self.source, self.level, self.start, self.uri if self.recording else None)


def rows_table(rows: Sequence[ClipRow], dim: int, model_id: str, now: float | None = None):
    """ClipRows as an Arrow table of the clips schema (the one conversion: the writer and the
    Ray backfill both use it, so their rows are the same)."""
    now = time.time() if now is None else now
    return pa.table(
        {
            "id": [row.row_id() for row in rows],
            "source": [row.source for row in rows],
            "uri": [row.uri for row in rows],
            "level": pa.array([row.level for row in rows], pa.int8()),
            "start": pa.array([row.start for row in rows], pa.float64()),
            "end": pa.array([row.end for row in rows], pa.float64()),
            "model": [row.model or model_id for row in rows],
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(np.stack([row.vector for row in rows]).ravel(), pa.float32()), dim),
            "thumbnail": pa.array([row.thumbnail for row in rows], pa.binary()),
            "created": pa.array([now] * len(rows), pa.float64()),
        },
        schema=clip_schema(dim),
    )


def make_thumbnail(rgb: np.ndarray, max_side: int = 96, quality: int = 70) -> bytes:
    """Small JPEG of an RGB uint8 frame [H, W, 3], longest side at most `max_side`."""
    from PIL import Image

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"thumbnail expects an RGB array [H, W, 3], got shape {rgb.shape}")
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    image.thumbnail((max_side, max_side))  # keeps the aspect ratio, only ever shrinks
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def check_vector(vector, dim: int, what: str = "vector") -> np.ndarray:
    """Return `vector` as float32 [dim], or raise ValueError naming the problem."""
    array = np.asarray(vector, dtype=np.float32).reshape(-1) if vector is not None else None
    if array is None or array.shape[0] != dim:
        got = None if array is None else array.shape[0]
        raise ValueError(f"{what} has dimension {got}, but the archive stores dimension {dim}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contains NaN or infinite values")
    return array


def vector_index_params(num_rows: int, dim: int) -> tuple[int, int]:
    """(num_partitions, num_sub_vectors) for an IVF_PQ index over `num_rows` vectors of `dim`.

    Partitions ~ sqrt(rows) (the usual IVF rule) but at least 256 rows each so k-means has data;
    sub-vectors of 8 dims (dim/8 codes of 8 bits) keep PQ accurate enough for refine to fix the
    rest, and must divide dim.
    """
    partitions = max(1, min(int(round(math.sqrt(num_rows))), num_rows // 256))
    sub_dims = 8 if dim >= 64 else 4
    sub_vectors = max(1, dim // sub_dims)
    while dim % sub_vectors:
        sub_vectors -= 1
    return partitions, sub_vectors


def open_or_create_table(db, table: str, dim: int, model_id: str | None = None,
                         fingerprint: str | None = None):
    """Open `table`, or create it empty with the clip schema; refuse a different vector dim or
    other weights (ModelMismatchError). Records `model_id` and the weights' `fingerprint` in the
    table metadata (also on a table written before they were recorded: the fingerprint only
    while the table is empty, since older rows may come from other weights)."""
    if table in list_table_names(db):
        tbl = db.open_table(table)
        stored = tbl.schema.field("vector").type.list_size
        if stored != dim:
            recorded = recorded_model(tbl)
            raise ValueError(
                f"table {table!r} at {db.uri} stores vectors of dimension {stored}"
                f"{f' (made by model {recorded!r})' if recorded else ''}, but the writer's model "
                f"{model_id or ''!s} makes dimension {dim}: use the model that built the archive, "
                "or another archive/table for this model"
            )
        if model_id:
            metadata = tbl.schema.metadata or {}
            recorded = (metadata.get(MODEL_KEY.encode()) or b"").decode()
            stamp = {}
            if not recorded:
                stamp[MODEL_KEY] = model_id
            elif recorded != model_id:
                log.warning(
                    "table %r was indexed with model %r; this writer uses %r (same embedding "
                    "size). Text queries use the recorded model; rows record their own.",
                    table, recorded, model_id)
            if recorded in ("", model_id):
                stored = recorded_fingerprint(tbl)
                check_fingerprint(stored, fingerprint, model_id, f"{db.uri} (table {table!r})")
                if fingerprint and not stored:
                    if tbl.count_rows() == 0:
                        stamp[FINGERPRINT_KEY] = fingerprint
                    else:
                        log.warning(
                            "table %r records model %r but no weights fingerprint (indexed "
                            "before pystream recorded one): if those weights differ from the "
                            "ones loaded now (the shipped model was retrained on 2026-12-03), "
                            "its old rows rank badly; reindex it to be sure", table, model_id)
            if stamp:
                try:
                    tbl.to_lance().update_schema_metadata(stamp)
                    tbl = db.open_table(table)
                except Exception as e:  # e.g. a remote table without pylance access
                    log.warning("could not record the model in %s: %s", table, e)
        return tbl
    return db.create_table(table, schema=clip_schema(dim, model_id, fingerprint), exist_ok=True)


def list_table_names(db) -> list[str]:
    # list_tables() pages; table_names() is deprecated in recent LanceDB.
    if hasattr(db, "list_tables"):
        names: list[str] = []
        token = None
        while True:
            response = db.list_tables(page_token=token, limit=1000)
            names.extend(response.tables)
            token = response.page_token
            if not token:
                return names
    return list(db.table_names(limit=1_000_000))


# LanceDB caches the metadata of every version it opens, and index pages, in its session; the
# defaults (GiBs) let a writer that commits every second grow by ~180 MB an hour for hours
# (benchmarks/soak.py; each commit is a version, each optimize new index deltas, and stale
# entries stay until the cap evicts them). So a cache always ends at its cap, and the caps are
# small so that it gets there early: with the earlier caps (writer 24 MB, reader 80 MB) the two
# caches were still growing 10 MB an hour after 35 minutes of the soak (soak-2026-12-02d.txt);
# with 4 + 4 the writer's reaches its 8 MB by minute 40; a reader's at 8 + 8 was still growing
# 3.8 MB an hour at 14 of 16 MB after 100 minutes (soak-2026-12-03e.txt), so readers have the
# writer's caps too. A reader needs only the latest version; index pages beyond the cap are read
# again from disk (the OS page cache keeps the hot ones): benchmarks/reader_cache.py compares
# query latency at 1M rows across caps.
WRITER_CACHE_MB = {"index": 4, "metadata": 4}
READER_CACHE_MB = {"index": 4, "metadata": 4}


def bounded_session(index_mb: float, metadata_mb: float):
    """A LanceDB session whose index and metadata caches are capped (None where the installed
    LanceDB has no sessions: its defaults apply)."""
    make = getattr(lancedb, "Session", None)
    if make is None:
        return None
    return make(index_cache_size_bytes=int(index_mb * 2**20),
                metadata_cache_size_bytes=int(metadata_mb * 2**20))


def connect(uri: str, cache_mb: dict | None = None, session=None, **kwargs):
    """lancedb.connect with a bounded session (see WRITER_CACHE_MB), or ``session``."""
    cache = cache_mb or WRITER_CACHE_MB
    session = session or bounded_session(cache["index"], cache["metadata"])
    if session is not None:
        kwargs["session"] = session
    return lancedb.connect(uri, **kwargs)


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
