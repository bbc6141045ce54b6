"""Reader side of the clip archive: text / image / vector search over the LanceDB clips table.

    import pystream
    from datetime import datetime

    arc = pystream.open("pystream-data/archive")  # the model that indexed it encodes text queries
    t0 = datetime(2026, 11, 21, 8, 0)
    hits = arc.search("a red circle moves to the left", k=10, sources=["recordings"], since=t0)
    rows = arc.query("a red circle").where(sources=["recordings"]).where(since=t0).limit(10).to_list()
    print(hits[0] if hits else "no hits", len(rows))

The archive records the model that indexed it (table metadata, and the `model` column of each
row); text and image queries load that model on first use. `model=` overrides it ("shipped", a
Hugging Face id, a local directory or a loaded ClipVideoModel); a model whose embedding size
differs from the archive's is refused with a message saying so.

Readers live in other processes than the daemon's writer, so the connection uses a short
`read_consistency_interval`: each query re-checks the table version at most that often, and new
rows become visible within about that long after a commit.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, timedelta
from typing import Callable, Sequence

import numpy as np

from .store import (READER_CACHE_MB, VECTOR_INDEX_NAME, ModelMismatchError, bounded_session,
                    check_fingerprint, connect, list_table_names, portable_model_ref,
                    recorded_fingerprint, recorded_model)

# Columns returned with each hit: everything except the vector (large and rarely wanted).
HIT_COLUMNS = ["id", "source", "uri", "level", "start", "end", "model", "thumbnail"]
DEFAULT_READ_CONSISTENCY = timedelta(seconds=0.5)
_UNSET = object()


class ArchiveNotFoundError(FileNotFoundError):
    """The archive directory or its clips table does not exist (yet)."""


class NoEncoderError(RuntimeError):
    """A text (or image) query was given but there is no model to encode it with."""


class ClipNotFoundError(KeyError):
    """No clip with this id in the archive."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


@dataclass(repr=False)
class Hit:
    """One search result. `score` is the cosine similarity (higher is better); `start`/`end`
    are seconds (epoch seconds for live streams and dated recordings)."""

    id: str
    source: str
    uri: str
    level: int
    start: float
    end: float
    score: float
    thumbnail: bytes | None
    model: str | None

    def __repr__(self) -> str:
        thumb = "None" if self.thumbnail is None else f"<{len(self.thumbnail)} bytes>"
        return (f"Hit(score={self.score:.3f}, source={self.source!r}, start={self.start!r}, "
                f"end={self.end!r}, level={self.level}, uri={self.uri!r}, id={self.id!r}, "
                f"thumbnail={thumb})")

    def to_dict(self, thumbnail: bool = True) -> dict:
        """The hit as a plain dict (thumbnail=False leaves out the JPEG bytes)."""
        d = asdict(self)
        if not thumbnail:
            del d["thumbnail"]
        return d


_HIT_FIELDS = [f.name for f in fields(Hit)]


def sql_string(value: str) -> str:
    """SQL string literal: single quotes doubled, so a source name cannot break out of it."""
    return "'" + str(value).replace("'", "''") + "'"


def to_timestamp(value) -> float:
    """Seconds since the epoch from a number, a datetime / date, or an ISO 8601 string such as
    "2026-11-21T08:00" (naive times are local time)."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day).timestamp()
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(value.strip()).timestamp()
        except ValueError:
            raise ValueError(f"time bound {value!r} is neither epoch seconds nor an ISO 8601 "
                             "time (e.g. '2026-11-21T08:00')") from None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"time bound must be epoch seconds, a datetime or an ISO 8601 string, "
                        f"got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"time bound must be finite, got {value!r}")
    return number


def _source_list(sources) -> list[str]:
    if isinstance(sources, str):
        return [sources]
    try:
        out = list(sources)
    except TypeError:
        raise TypeError(f"sources must be a source name or a list of names, got "
                        f"{type(sources).__name__}") from None
    bad = [s for s in out if not isinstance(s, str)]
    if bad:
        raise TypeError(f"source names must be strings, got {bad[0]!r}")
    return out


def _level(level) -> int:
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
        raise ValueError(f"level must be 0 (windows), 1+ (coarse levels) or None (all), "
                         f"got {level!r}")
    return int(level)


def build_filter(sources=None, since=None, until=None, level=None) -> str | None:
    """SQL WHERE clause for the common filters, or None for no filter.

    since/until select clips that overlap [since, until]: a clip from 10:00:00 to 10:00:12
    matches since=10:00:05.
    """
    clauses = []
    if sources is not None:
        sources = _source_list(sources)
        if not sources:
            return "false"  # an empty source list matches nothing
        clauses.append(f"source IN ({', '.join(sql_string(s) for s in sources)})")
    if since is not None:
        clauses.append(f"`end` >= {to_timestamp(since)!r}")
    if until is not None:
        clauses.append(f"start <= {to_timestamp(until)!r}")
    if level is not None:
        clauses.append(f"level = {_level(level)}")
    return " AND ".join(clauses) if clauses else None


def open(  # noqa: A001 - mirrors lancedb.connect / pystream.open
    path_or_uri: str | os.PathLike,
    table: str = "clips",
    read_consistency_interval: timedelta | float | None = DEFAULT_READ_CONSISTENCY,
    *,
    model=None,
    device: str | None = None,
    text_encoder: Callable[[list[str]], np.ndarray] | None = None,
    image_encoder: Callable[[list[np.ndarray]], np.ndarray] | None = None,
    nprobes: int = 32,
    refine_factor: int | None = 20,
    storage_options: dict | None = None,
) -> "Archive":
    """Open the clip archive at `path_or_uri` (a directory or a LanceDB URI). Opening is lazy:
    a missing archive is reported on first use, so a reader may start before the daemon.

    model: the model for text / image queries; default: the one recorded with the archive.
    storage_options: object store options for an s3:// archive (endpoint, keys, region,
        allow_http), as LanceDB takes them.
    """
    return Archive(path_or_uri, table, read_consistency_interval, model=model, device=device,
                   text_encoder=text_encoder, image_encoder=image_encoder, nprobes=nprobes,
                   refine_factor=refine_factor, storage_options=storage_options)


class Archive:
    """Query side of a pystream archive.

    model: "shipped", a Hugging Face id, a local model directory or a ClipVideoModel, used to
        encode text and image queries; default (None): the model recorded with the archive,
        loaded on the first text or image query.
    device: where a model loaded by name runs ("cpu", "cuda"); default "cpu".
    text_encoder / image_encoder: callables that replace the model for text
        (list[str] -> [n, dim]) or images (list of RGB uint8 [H, W, 3] -> [n, dim]).
    nprobes / refine_factor: IVF_PQ search defaults; refine re-ranks refine_factor * k PQ candidates
    with the exact vectors, which is what makes PQ recall high. benchmarks/store.py (dim 512, 2 CPUs):
    nprobes=32, refine=20 gave recall@10 0.99 / 0.96 and p95 9 / 16 ms at 10k / 1M rows; refine=40
    raises 1M recall to 0.995 for a few ms more.
    """

    def __init__(
        self,
        path_or_uri: str | os.PathLike,
        table: str = "clips",
        read_consistency_interval: timedelta | float | None = DEFAULT_READ_CONSISTENCY,
        *,
        model=None,
        device: str | None = None,
        text_encoder: Callable[[list[str]], np.ndarray] | None = None,
        image_encoder: Callable[[list[np.ndarray]], np.ndarray] | None = None,
        nprobes: int = 32,
        refine_factor: int | None = 20,
        storage_options: dict | None = None,
    ):
        if not isinstance(path_or_uri, (str, os.PathLike)):
            raise TypeError(f"archive path must be a string or a path, got "
                            f"{type(path_or_uri).__name__}")
        if not isinstance(table, str) or not table:
            raise TypeError(f"table must be a non-empty string, got {table!r}")
        if model is not None and not isinstance(model, (str, os.PathLike)) \
                and not hasattr(model, "encode_text"):
            raise TypeError(
                "model must be 'shipped', a Hugging Face id, a model directory or a "
                f"ClipVideoModel, got {type(model).__name__}")
        for name, fn in (("text_encoder", text_encoder), ("image_encoder", image_encoder)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        self.uri = os.fspath(path_or_uri)
        self.table_name = table
        if isinstance(read_consistency_interval, (int, float)):
            read_consistency_interval = timedelta(seconds=read_consistency_interval)
        self.read_consistency_interval = read_consistency_interval
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.nprobes = nprobes
        self.refine_factor = refine_factor
        self.storage_options = dict(storage_options or {}) or None
        self.device = device
        self._model_ref = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
        self._model = None if self._model_ref is not None else model
        self._model_checked = False
        self._model_lock = threading.Lock()
        self._recorded: str | None = None
        self._db = None
        self.session = None  # the LanceDB session of self._db (bounded caches)
        self._table = None

    def __repr__(self) -> str:
        return f"Archive({self.uri!r}, table={self.table_name!r})"

    # ------------------------------------------------------------------ table access

    @property
    def table(self):
        """The LanceDB table, opened on first use so an Archive can be made before the daemon
        has written anything."""
        if self._table is None:
            is_local = "://" not in self.uri
            if is_local and not os.path.isdir(self.uri):
                raise ArchiveNotFoundError(f"no pystream archive at {self.uri!r} (directory missing)")
            if self._db is None:
                # bounded caches (store.py); kept to report their size (status, soak)
                self.session = bounded_session(READER_CACHE_MB["index"],
                                               READER_CACHE_MB["metadata"])
                extra = {"storage_options": self.storage_options} if self.storage_options else {}
                self._db = connect(self.uri, READER_CACHE_MB, session=self.session,
                                   read_consistency_interval=self.read_consistency_interval,
                                   **extra)
            if self.table_name not in list_table_names(self._db):
                raise ArchiveNotFoundError(
                    f"no table {self.table_name!r} in the pystream archive at {self.uri!r}; "
                    "has the daemon written anything yet?")
            self._table = self._db.open_table(self.table_name)
        return self._table

    @property
    def dim(self) -> int:
        """Size of the stored embeddings."""
        return self.table.schema.field("vector").type.list_size

    # ------------------------------------------------------------------ the model

    @property
    def recorded_model(self) -> str | None:
        """The model that indexed the archive ("shipped", a hub id or a model directory), from
        the table metadata or else the `model` column; None if the archive does not say."""
        if self._recorded is None:
            self._recorded = recorded_model(self.table)
        return self._recorded

    @property
    def model(self):
        """The ClipVideoModel that encodes text and image queries, loaded on first use (the
        `model=` given to open(), else the recorded one)."""
        with self._model_lock:
            if self._model is None:
                ref = self._model_ref or self.recorded_model
                if ref is None:
                    raise NoEncoderError(
                        f"the archive at {self.uri!r} does not record the model that indexed it; "
                        "open it with pystream.open(path, model=...) ('shipped', a Hugging Face "
                        "id or a model directory), or pass a query vector instead of text")
                self._model = self._load_model(ref)
            if not self._model_checked:
                self._check_model_dim(self._model)
                self._model_checked = True
            return self._model

    def _load_model(self, ref: str):
        from .model import ClipVideoModel
        from .model.loader import ModelLoadError

        try:
            import transformers

            transformers.utils.logging.disable_progress_bar()
            model = ClipVideoModel.from_pretrained(ref)
        except ModelLoadError as e:
            how = ("given as model=" if self._model_ref is not None
                   else f"recorded with the archive at {self.uri!r}")
            raise ModelLoadError(f"{e} (the model was {how}; open the archive with "
                                 "pystream.open(path, model=...) to use another copy of it)",
                                 transient=getattr(e, "transient", False)) from e
        return model.to(self.device or "cpu").eval()

    def _check_model_dim(self, model) -> None:
        """The model must make the archive's vectors: same size, and the same weights where
        both fingerprints are known (store.check_fingerprint)."""
        dim = getattr(model, "dim", None)
        name = getattr(model, "model_id", None) or self._model_ref or "the model"
        if dim is not None and int(dim) != self.dim:
            raise ModelMismatchError(
                f"model {name!r} makes {int(dim)}-dimensional embeddings, but the archive at "
                f"{self.uri!r} stores {self.dim}-dimensional ones (indexed with "
                f"{self.recorded_model!r}): query it with the model that indexed it")
        check_fingerprint(recorded_fingerprint(self.table), getattr(model, "fingerprint", None),
                          portable_model_ref(name) or str(name), repr(self.uri),
                          self.recorded_model)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Text queries -> L2-normalised float32 [n, dim] with the archive's text encoder."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError("text queries must be non-empty strings")
        if self.text_encoder is not None:
            return _as_matrix(self.text_encoder(texts), "text_encoder")
        model = self.model
        import torch

        with torch.no_grad():  # grad mode is per thread: HTTP worker threads have it on
            return _as_matrix(model.encode_text(texts), "encode_text")

    def encode_image(self, image) -> np.ndarray:
        """An example image (RGB uint8 [H, W, 3] array, PIL image or image file) -> float32
        [dim], L2-normalised, comparable with the archive's clip embeddings."""
        rgb = _load_rgb(image)
        if self.image_encoder is not None:
            return _as_matrix(self.image_encoder([rgb]), "image_encoder")[0]
        model = self.model
        import torch
        from PIL import Image

        size = int(model.image_size)
        # Squashed to the model's square input, as the decoder does for video frames.
        resized = np.array(Image.fromarray(rgb, "RGB").resize((size, size), Image.BICUBIC))
        with torch.no_grad():
            pixels = model.preprocess(resized[None])
            feats = torch.nn.functional.normalize(model.encode_images(pixels), dim=-1)
        return _as_matrix(feats, "encode_images")[0]

    # ------------------------------------------------------------------ queries

    def query(self, query) -> "ClipQuery":
        """Chained query builder, LanceDB style:
        arc.query("white van").where(sources=[...]).where(since=t0).limit(10).to_list()."""
        return ClipQuery(self, query)

    def search(self, query, k: int = 10, sources: Sequence[str] | str | None = None,
               since=None, until=None, level: int | None = 0, *, exact: bool = False) -> list[Hit]:
        """Top-k clips for a text string or an embedding vector (np.ndarray / torch tensor).

        since / until: epoch seconds, datetime or ISO 8601 string; clips overlapping the range.
        level=0 searches window embeddings, 1+ the coarse levels, None all levels.
        exact=True skips the ANN index (brute force; slow on big archives, for checking).
        """
        q = self.query(query).where(sources=sources, since=since, until=until, level=level)
        if exact:
            q = q.exact()
        return q.limit(k).to_hits()

    def search_image(self, image, k: int = 10, **filters) -> list[Hit]:
        """Search by example image (RGB uint8 [H, W, 3], a PIL image or an image file)."""
        return self.search(self.encode_image(image), k=k, **filters)

    def embed_query(self, query) -> np.ndarray:
        """Query (text or vector) -> float32 [dim], validated against the table's dimension."""
        if isinstance(query, str):
            dim = self.dim  # a missing archive is reported before any model loads
            if self.text_encoder is None and self._model is None and self._model_ref is None \
                    and self.recorded_model is None:
                raise NoEncoderError(
                    f"text search needs a model: the archive at {self.uri!r} does not record "
                    "the one that indexed it; open it with pystream.open(path, model=...) "
                    "('shipped', a Hugging Face id or a model directory) or "
                    "pystream.open(path, text_encoder=fn), or pass a query vector instead")
            query = self.encode_text([query])
        elif isinstance(query, bytes) or query is None:
            raise TypeError(f"a query is a text string or an embedding vector, got "
                            f"{type(query).__name__}")
        if hasattr(query, "detach"):  # torch tensor, without importing torch here
            query = query.detach().cpu().float().numpy()
        try:
            vector = np.asarray(query, dtype=np.float32)
        except (TypeError, ValueError):
            raise TypeError(f"a query is a text string or an embedding vector, got "
                            f"{type(query).__name__}") from None
        if vector.ndim == 2 and vector.shape[0] == 1:
            vector = vector[0]
        if vector.ndim != 1:
            raise ValueError(f"query vector must be 1-D [dim], got shape {vector.shape}")
        dim = self.dim
        if vector.shape[0] != dim:
            raise ValueError(
                f"query vector has dimension {vector.shape[0]}, but the archive stores dimension "
                f"{dim}: was it made by a different model?")
        if not np.all(np.isfinite(vector)):
            raise ValueError("query vector contains NaN or infinite values")
        if not np.any(vector):
            raise ValueError("query vector is all zeros: cosine similarity is undefined")
        return vector

    # ------------------------------------------------------------------ single clips

    def _row(self, clip_id: str, columns: list[str]) -> dict:
        if not isinstance(clip_id, str):
            raise TypeError(f"clip id must be a string, got {type(clip_id).__name__}")
        rows = (self.table.search().where(f"id = {sql_string(clip_id)}")
                .select(columns).limit(1).to_list())
        if not rows:
            raise ClipNotFoundError(f"no clip with id {clip_id!r} in the archive at {self.uri!r}")
        return rows[0]

    def get(self, clip_id: str) -> Hit:
        """The clip with this id, as a Hit (score 1.0)."""
        row = self._row(clip_id, HIT_COLUMNS)
        return Hit(score=1.0, **{k: row[k] for k in _HIT_FIELDS if k != "score"})

    def thumbnail(self, clip_id: str) -> bytes | None:
        """JPEG thumbnail of a clip (None if it has none); ClipNotFoundError for an unknown id."""
        return self._row(clip_id, ["thumbnail"])["thumbnail"]

    # ------------------------------------------------------------------ bookkeeping

    def count(self, sources=None, since=None, until=None, level=None) -> int:
        """Number of rows matching the filters (all levels unless `level` is given)."""
        return self.table.count_rows(build_filter(sources, since, until, level))

    def stats(self) -> dict:
        """Rows per source, total rows, the recorded model and the state of each index."""
        table = self.table
        sources = table.search().select(["source"]).limit(None).to_arrow().column("source")
        per_source = {}
        if len(sources):
            counts = sources.value_counts()
            per_source = {item["values"].as_py(): item["counts"].as_py() for item in counts}
        indexes = {}
        for index in table.list_indices():
            stats = table.index_stats(index.name)
            indexes[index.name] = {
                "type": stats.index_type if stats else str(index.index_type),
                "columns": list(index.columns),
                "indexed_rows": stats.num_indexed_rows if stats else None,
                "unindexed_rows": stats.num_unindexed_rows if stats else None,
            }
        return {
            "total_rows": table.count_rows(),
            "rows_per_source": dict(sorted(per_source.items())),
            "model": self.recorded_model,
            "model_fingerprint": recorded_fingerprint(table),
            "dim": self.dim,
            "indexes": indexes,
            "vector_index": VECTOR_INDEX_NAME in indexes,
            "version": table.version,
        }


def _as_matrix(x, what: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    array = np.asarray(x, dtype=np.float32)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        raise ValueError(f"{what} returned shape {array.shape}; expected [n, dim]")
    return array


def _load_rgb(image) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        from PIL import Image

        path = os.fspath(image)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image file {path!r} does not exist")
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("RGB"))
    rgb = np.asarray(image)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"an image must be RGB [H, W, 3], got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"an image must be uint8 RGB, got dtype {rgb.dtype}")
    return np.ascontiguousarray(rgb)


class ClipQuery:
    """Chained query, mirroring LanceDB's `table.search(q).where(...).limit(k)`.

    where() may be called several times: the filters combine with AND. Until a level is given,
    the query searches window rows (level 0).
    """

    def __init__(self, archive: Archive, query):
        self._archive = archive
        self._query = query
        self._clauses: list[str] = []
        self._level_given = False
        self._k = 10
        self._nprobes = archive.nprobes
        self._refine_factor = archive.refine_factor
        self._exact = False

    def where(self, sql: str | None = None, *, sources=None, since=None, until=None,
              level=_UNSET) -> "ClipQuery":
        """Filter by an SQL expression over the columns (as in LanceDB, e.g. "uri LIKE '%cam%'"),
        source names, time overlap with [since, until] and level (None = all levels).
        Each call adds to the filters of the previous ones (AND)."""
        if sql is not None:
            if not isinstance(sql, str):
                raise TypeError("where(): a positional argument is an SQL filter string; pass "
                                f"source names as sources=[...] (got {type(sql).__name__})")
            if sql.strip():
                self._clauses.append(f"({sql})")
        clause = build_filter(sources, since, until,
                              None if level is _UNSET or level is None else level)
        if clause is not None:
            self._clauses.append(clause)
        if level is not _UNSET:
            self._level_given = True
        return self

    def limit(self, k: int) -> "ClipQuery":
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"limit must be a positive integer, got {k!r}")
        self._k = int(k)
        return self

    def nprobes(self, n: int) -> "ClipQuery":
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
            raise ValueError(f"nprobes must be a positive integer, got {n!r}")
        self._nprobes = int(n)
        return self

    def refine_factor(self, factor: int | None) -> "ClipQuery":
        if factor is not None and (isinstance(factor, bool) or not isinstance(factor, (int, np.integer))
                                   or factor <= 0):
            raise ValueError(f"refine_factor must be a positive integer or None, got {factor!r}")
        self._refine_factor = factor
        return self

    def exact(self) -> "ClipQuery":
        """Brute-force search, ignoring the ANN index."""
        self._exact = True
        return self

    def filter_sql(self) -> str | None:
        """The SQL WHERE clause the query will run with (None: no filter)."""
        clauses = list(self._clauses)
        if not self._level_given:
            clauses.append("level = 0")
        return " AND ".join(clauses) if clauses else None

    def to_lance(self):
        """The underlying LanceDB query builder (for anything not wrapped here)."""
        vector = self._archive.embed_query(self._query)
        builder = (self._archive.table.search(vector, vector_column_name="vector")
                   .distance_type("cosine")
                   .select(HIT_COLUMNS + ["_distance"])
                   .limit(self._k))
        sql = self.filter_sql()
        if sql is not None:
            # prefilter: filter first, then rank, so a selective filter still returns k hits.
            builder = builder.where(sql, prefilter=True)
        if self._exact:
            builder = builder.bypass_vector_index()
        else:
            builder = builder.nprobes(self._nprobes)
            if self._refine_factor:
                builder = builder.refine_factor(self._refine_factor)
        return builder

    def to_arrow(self):
        return self.to_lance().to_arrow()

    def to_list(self) -> list[dict]:
        """Plain dicts, one per hit (the Hit fields, plus LanceDB's `_distance`), best first."""
        rows = self.to_arrow().to_pylist()
        for row in rows:
            row["score"] = 1.0 - float(row["_distance"])
        return rows

    def to_hits(self) -> list[Hit]:
        """Typed results, best first."""
        return [Hit(**{k: row[k] for k in _HIT_FIELDS}) for row in self.to_list()]

    def to_pandas(self):
        df = self.to_arrow().to_pandas()
        df["score"] = 1.0 - df["_distance"]
        return df


__all__ = ["open", "Archive", "ClipQuery", "Hit", "ArchiveNotFoundError", "NoEncoderError",
           "ModelMismatchError", "ClipNotFoundError", "build_filter"]
