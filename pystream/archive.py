"""Reader side of the clip archive: text / image / vector search over the LanceDB clips table.

    import pystream
    arc = pystream.open("/var/lib/pystream/archive", text_encoder=model.encode_text)
    hits = arc.search("white van at the loading dock", k=10, sources=["dock-cam"], since=t0)
    hits = arc.query("white van").where(sources=["dock-cam"], since=t0).limit(10).to_list()

Readers live in other processes than the daemon's writer, so the connection uses a short
`read_consistency_interval`: each query re-checks the table version at most that often, and new
rows become visible within about that long after a commit.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Sequence

import lancedb
import numpy as np

from .index import VECTOR_INDEX_NAME, list_table_names

# Columns returned with each hit: everything except the vector (large and rarely wanted).
HIT_COLUMNS = ["id", "source", "uri", "level", "start", "end", "model", "thumbnail"]
DEFAULT_READ_CONSISTENCY = timedelta(seconds=0.5)


class ArchiveNotFoundError(FileNotFoundError):
    """The archive directory or its clips table does not exist (yet)."""


class NoEncoderError(RuntimeError):
    """A text (or image) query was given but no encoder is attached to the Archive."""


@dataclass
class Hit:
    id: str
    source: str
    uri: str
    level: int
    start: float
    end: float
    score: float  # cosine similarity, higher is better
    thumbnail: bytes | None
    model: str | None


def sql_string(value: str) -> str:
    """SQL string literal: single quotes doubled, so a source name cannot break out of it."""
    return "'" + str(value).replace("'", "''") + "'"


def to_timestamp(value) -> float:
    """Seconds since the epoch from a number or a datetime (naive datetimes are local time)."""
    if isinstance(value, datetime):
        return value.timestamp()
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"time bound must be finite, got {value!r}")
    return number


def build_filter(sources=None, since=None, until=None, level=None) -> str | None:
    """SQL WHERE clause for the common filters, or None for no filter.

    since/until select clips that overlap [since, until]: a clip from 10:00:00 to 10:00:12
    matches since=10:00:05.
    """
    clauses = []
    if sources is not None:
        if isinstance(sources, str):
            sources = [sources]
        sources = list(sources)
        if not sources:
            return "false"  # an empty source list matches nothing
        clauses.append(f"source IN ({', '.join(sql_string(s) for s in sources)})")
    if since is not None:
        clauses.append(f"`end` >= {to_timestamp(since)!r}")
    if until is not None:
        clauses.append(f"start <= {to_timestamp(until)!r}")
    if level is not None:
        clauses.append(f"level = {int(level)}")
    return " AND ".join(clauses) if clauses else None


def open(  # noqa: A001 - mirrors lancedb.connect / pystream.open
    path_or_uri: str | os.PathLike,
    table: str = "clips",
    read_consistency_interval: timedelta | float | None = DEFAULT_READ_CONSISTENCY,
    *,
    text_encoder: Callable[[list[str]], np.ndarray] | None = None,
    image_encoder: Callable[[list[np.ndarray]], np.ndarray] | None = None,
    nprobes: int = 32,
    refine_factor: int | None = 20,
) -> "Archive":
    """Open the clip archive at `path_or_uri`. A missing table is reported on first use."""
    return Archive(path_or_uri, table, read_consistency_interval, text_encoder=text_encoder,
                   image_encoder=image_encoder, nprobes=nprobes, refine_factor=refine_factor)


class Archive:
    """Query side of a pystream archive.

    text_encoder: callable(list[str]) -> np.ndarray [n, dim], L2-normalised (the CLIP text tower).
    image_encoder: callable(list[rgb uint8 HxWx3]) -> np.ndarray [n, dim], for search_image().
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
        text_encoder: Callable[[list[str]], np.ndarray] | None = None,
        image_encoder: Callable[[list[np.ndarray]], np.ndarray] | None = None,
        nprobes: int = 32,
        refine_factor: int | None = 20,
    ):
        self.uri = os.fspath(path_or_uri)
        self.table_name = table
        if isinstance(read_consistency_interval, (int, float)):
            read_consistency_interval = timedelta(seconds=read_consistency_interval)
        self.read_consistency_interval = read_consistency_interval
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.nprobes = nprobes
        self.refine_factor = refine_factor
        self._db = None
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
                self._db = lancedb.connect(self.uri,
                                           read_consistency_interval=self.read_consistency_interval)
            if self.table_name not in list_table_names(self._db):
                raise ArchiveNotFoundError(
                    f"no table {self.table_name!r} in the pystream archive at {self.uri!r}; "
                    "has the daemon written anything yet?")
            self._table = self._db.open_table(self.table_name)
        return self._table

    @property
    def dim(self) -> int:
        return self.table.schema.field("vector").type.list_size

    # ------------------------------------------------------------------ queries

    def query(self, query) -> "ClipQuery":
        """Chained query builder: arc.query("white van").where(sources=[...]).limit(10).to_list()."""
        return ClipQuery(self, query)

    def search(self, query, k: int = 10, sources: Sequence[str] | str | None = None,
               since=None, until=None, level: int | None = 0, *, exact: bool = False) -> list[Hit]:
        """Top-k clips for a text string or an embedding vector (np.ndarray / torch tensor).

        level=0 searches window embeddings, 1+ the coarse levels, None all levels.
        exact=True skips the ANN index (brute force; slow on big archives, for checking).
        """
        q = self.query(query).where(sources=sources, since=since, until=until, level=level)
        if exact:
            q = q.exact()
        return q.limit(k).to_list()

    def search_image(self, rgb: np.ndarray, k: int = 10, **filters) -> list[Hit]:
        """Search by example image (RGB uint8 [H, W, 3]) with the attached image_encoder."""
        if self.image_encoder is None:
            raise NoEncoderError(
                "search_image needs an image encoder: Archive(..., image_encoder=fn) where fn maps "
                "a list of RGB uint8 arrays to an [n, dim] array; or pass an image vector to "
                "search() instead")
        vector = np.asarray(self.image_encoder([rgb]))[0]
        return self.search(vector, k=k, **filters)

    def embed_query(self, query) -> np.ndarray:
        """Query (text or vector) -> float32 [dim], validated against the table's dimension."""
        if isinstance(query, str):
            if self.text_encoder is None:
                raise NoEncoderError(
                    "text search needs a text encoder: open the archive with "
                    "pystream.open(path, text_encoder=fn) where fn maps list[str] to an L2-normalised "
                    "[n, dim] array (e.g. the CLIP text tower of the model that built the archive), "
                    "or pass a query vector instead of text")
            query = np.asarray(self.text_encoder([query]))
        if hasattr(query, "detach"):  # torch tensor, without importing torch here
            query = query.detach().cpu().float().numpy()
        vector = np.asarray(query, dtype=np.float32)
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

    # ------------------------------------------------------------------ bookkeeping

    def count(self, sources=None, since=None, until=None, level=None) -> int:
        """Number of rows matching the filters (all levels unless `level` is given)."""
        return self.table.count_rows(build_filter(sources, since, until, level))

    def stats(self) -> dict:
        """Rows per source, total rows, and the state of each index."""
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
            "indexes": indexes,
            "vector_index": VECTOR_INDEX_NAME in indexes,
            "version": table.version,
        }


class ClipQuery:
    """Chained query, mirroring LanceDB's `table.search(q).where(...).limit(k)`."""

    def __init__(self, archive: Archive, query):
        self._archive = archive
        self._query = query
        self._filters = {"sources": None, "since": None, "until": None, "level": 0}
        self._k = 10
        self._nprobes = archive.nprobes
        self._refine_factor = archive.refine_factor
        self._exact = False

    def where(self, sources=None, since=None, until=None, level: int | None = 0) -> "ClipQuery":
        """Filter by source names, time overlap with [since, until] and level (None = all)."""
        self._filters = {"sources": sources, "since": since, "until": until, "level": level}
        return self

    def limit(self, k: int) -> "ClipQuery":
        if int(k) <= 0:
            raise ValueError(f"limit must be positive, got {k}")
        self._k = int(k)
        return self

    def nprobes(self, n: int) -> "ClipQuery":
        self._nprobes = int(n)
        return self

    def refine_factor(self, factor: int | None) -> "ClipQuery":
        self._refine_factor = factor
        return self

    def exact(self) -> "ClipQuery":
        """Brute-force search, ignoring the ANN index."""
        self._exact = True
        return self

    def to_lance(self):
        """The underlying LanceDB query builder (for anything not wrapped here)."""
        vector = self._archive.embed_query(self._query)
        builder = (self._archive.table.search(vector, vector_column_name="vector")
                   .distance_type("cosine")
                   .select(HIT_COLUMNS + ["_distance"])
                   .limit(self._k))
        sql = build_filter(**self._filters)
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

    def to_list(self) -> list[Hit]:
        rows = self.to_arrow().to_pylist()
        return [
            Hit(id=row["id"], source=row["source"], uri=row["uri"], level=row["level"],
                start=row["start"], end=row["end"], score=1.0 - float(row["_distance"]),
                thumbnail=row["thumbnail"], model=row["model"])
            for row in rows
        ]


__all__ = ["open", "Archive", "ClipQuery", "Hit", "ArchiveNotFoundError", "NoEncoderError",
           "build_filter"]
