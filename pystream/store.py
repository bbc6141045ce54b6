"""The clip archive's table: schema, row ids, the model it records, connections and caches.

A clip is one row (``ClipRow``): source, uri, level, start/end, the embedding and a thumbnail,
under a deterministic id (``clip_id``), so writing a clip twice is an upsert, never a duplicate.
The table's metadata records which model made its vectors (name and weights fingerprint);
``open_or_create_table`` refuses a model with other weights under the same name. Connections
use LanceDB sessions with capped caches (see WRITER_CACHE_MB). The thread that writes rows is
``pystream.writer.ClipWriter``; readers go through ``pystream.archive``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Sequence

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import BTree, Bitmap


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
