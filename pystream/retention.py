"""Retention: what an archive (and a folder of recordings) keeps, and for how long.

Rows. A clip's age is counted from the end of the clip on the wall clock (`end`, seconds since
the epoch: live streams, recordings with a creation time); rows of recordings indexed with
file-relative times (`end` before 2001, e.g. a file without metadata and ``fallback_start:
zero``) count from when they were indexed (`created`). ``RetentionPolicy.where(now)`` is the
SQL filter of the rows past their limit (``max_age`` per source, else the global one), so a row
younger than its limit is never selected. ``max_size`` caps the archive's size: when the
current rows take more (estimated from the table's data bytes per row), the oldest rows of any
source go until it fits. ``ClipWriter.maintain`` applies the policy on its thread (LanceDB
``delete``, then ``optimize`` compacts and removes versions older than ``keep_versions_s``);
``pystream prune --dry-run`` shows what it would delete.

Recordings. ``prune_recordings(directory, max_age_s, max_bytes)`` expires the files of a
directory (any media files with mtimes: a recorder's rolling segments) the same way: older than
``max_age_s`` by mtime, then the oldest until the total fits ``max_bytes``; a file modified in
the last ``in_use_s`` seconds (being written) is never touched.

    from pystream.retention import parse_duration
    assert parse_duration("36h") == 36 * 3600 and parse_duration(90) == 90.0
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

import numpy as np

log = logging.getLogger("pystream.retention")

# `end` values below this are file-relative seconds, not wall-clock times (2001-09-09).
EPOCH_MIN = 1e9

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)\s*$")


def parse_duration(value) -> float:
    """Seconds from ``90`` (seconds), ``"90s"``, ``"45m"``, ``"36h"``, ``"30d"`` or ``"2w"``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(f"{value!r} is not a duration: use a number of seconds or a number "
                             "with a unit s, m, h, d or w (e.g. 30d, 36h)")
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration {value!r} must be positive")
    return seconds


_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


def parse_size(value) -> int:
    """Bytes from ``1048576``, ``"500MB"``, ``"2GB"``, ``"1.5TB"`` (powers of 1024)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, (int, float)):
        size = float(value)
    else:
        m = _SIZE.match(str(value))
        if not m:
            raise ValueError(f"{value!r} is not a size: use bytes or a number with KB, MB, GB "
                             "or TB (e.g. 500GB)")
        unit = (m.group(2) or "B").upper()[0]
        size = float(m.group(1)) * {"B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[unit]
    if not math.isfinite(size) or size <= 0:
        raise ValueError(f"size {value!r} must be positive")
    return int(size)


def sql_string(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def older_than(cutoff: float) -> str:
    """SQL: the row's age key (see the module docstring) is before ``cutoff``."""
    c = repr(float(cutoff))
    return (f"((`end` >= {EPOCH_MIN!r} AND `end` < {c}) OR "
            f"(`end` < {EPOCH_MIN!r} AND created < {c}))")


def age_keys(ends: np.ndarray, created: np.ndarray) -> np.ndarray:
    """The time each row's age counts from (numpy twin of ``older_than``)."""
    ends = np.asarray(ends, np.float64)
    created = np.nan_to_num(np.asarray(created, np.float64), nan=np.inf)
    return np.where(ends >= EPOCH_MIN, ends, created)


@dataclass
class RetentionPolicy:
    """Limits: ``max_age_s`` for every source without its own, ``per_source`` ages, and a size
    cap ``max_bytes`` for the whole table. None means no limit."""

    max_age_s: Optional[float] = None
    per_source: Dict[str, float] = field(default_factory=dict)
    max_bytes: Optional[int] = None
    interval_s: float = 600.0

    @property
    def active(self) -> bool:
        return bool(self.max_age_s or self.per_source or self.max_bytes)

    @classmethod
    def from_config(cls, cfg) -> "RetentionPolicy":
        r = cfg.retention
        per = {s.name: s.retention.max_age_s for s in cfg.sources
               if s.retention is not None and s.retention.max_age_s is not None}
        return cls(max_age_s=r.max_age_s, per_source=per, max_bytes=r.max_size_bytes,
                   interval_s=r.interval_s)

    def cutoffs(self, now: float) -> Dict[Optional[str], float]:
        """source -> cutoff time (None: every other source)."""
        out: Dict[Optional[str], float] = {s: now - a for s, a in self.per_source.items()}
        if self.max_age_s:
            out[None] = now - self.max_age_s
        return out

    def where(self, now: float) -> Optional[str]:
        """SQL filter of the rows past their age limit at ``now`` (None: no age limit)."""
        clauses = [f"(source = {sql_string(s)} AND {older_than(c)})"
                   for s, c in self.cutoffs(now).items() if s is not None]
        if self.max_age_s:
            c = now - self.max_age_s
            if self.per_source:
                names = ", ".join(sql_string(s) for s in self.per_source)
                clauses.append(f"(source NOT IN ({names}) AND {older_than(c)})")
            else:
                clauses.append(older_than(c))
        return " OR ".join(clauses) if clauses else None


# ----------------------------------------------------------------------------- the table

def table_data_bytes(table) -> Optional[int]:
    """Bytes of the table's current data files (old versions and indexes not counted)."""
    try:
        stats = table.to_lance().stats.data_stats()
        return int(sum(f.bytes_on_disk for f in stats.fields))
    except Exception:  # a remote table, an older pylance
        return None


def size_cutoff(table, max_bytes: int, where: Optional[str] = None) -> Optional[tuple]:
    """(cutoff, rows) when the table's live rows take more than ``max_bytes``: deleting the
    rows whose age key is <= cutoff (about ``rows`` of them, the oldest) brings it under."""
    data = table_data_bytes(table)
    physical = _physical_rows(table)
    live = table.count_rows()
    if not data or not physical or not live:
        return None
    per_row = data / physical
    size = per_row * live
    if size <= max_bytes:
        return None
    excess = int(math.ceil((size - max_bytes) / per_row))
    cols = table.search().select(["end", "created"]).limit(None).to_arrow()
    keys = age_keys(cols.column("end").to_numpy(zero_copy_only=False),
                    cols.column("created").to_numpy(zero_copy_only=False))
    if excess >= len(keys):
        return float(np.max(keys)), len(keys)
    return float(np.partition(keys, excess - 1)[excess - 1]), excess


def _physical_rows(table) -> Optional[int]:
    try:
        return int(sum(f.physical_rows for f in table.to_lance().get_fragments()))
    except Exception:
        return None


def size_where(cutoff: float) -> str:
    """SQL: the row's age key is at or before ``cutoff`` (the size cap's oldest rows)."""
    c = repr(float(cutoff))
    return (f"((`end` >= {EPOCH_MIN!r} AND `end` <= {c}) OR "
            f"(`end` < {EPOCH_MIN!r} AND created <= {c}))")


def plan(table, policy: RetentionPolicy, now: Optional[float] = None) -> dict:
    """What applying ``policy`` at ``now`` would delete, per source, without deleting:
    ``{"where": sql, "rows": n, "sources": {name: {"rows", "oldest", "newest"}}}``."""
    now = time.time() if now is None else now
    clauses = []
    age = policy.where(now)
    if age:
        clauses.append(age)
    if policy.max_bytes:
        cut = size_cutoff(table, policy.max_bytes)
        if cut is not None:
            clauses.append(size_where(cut[0]))
    out = {"where": None, "rows": 0, "sources": {}}
    if not clauses:
        return out
    where = " OR ".join(f"({c})" for c in clauses)
    out["where"] = where
    rows = table.search().where(where).select(["source", "end", "created"]).limit(None) \
        .to_arrow().to_pylist()
    for r in rows:
        key = float(age_keys(np.array([r["end"]]), np.array([r["created"]]))[0])
        s = out["sources"].setdefault(r["source"], {"rows": 0, "oldest": key, "newest": key})
        s["rows"] += 1
        s["oldest"], s["newest"] = min(s["oldest"], key), max(s["newest"], key)
    out["rows"] = len(rows)
    return out


def apply(table, policy: RetentionPolicy, now: Optional[float] = None) -> int:
    """Delete the rows past ``policy`` at ``now``; returns how many went. (Space comes back when
    ``optimize`` compacts and old versions are cleaned up.)"""
    now = time.time() if now is None else now
    deleted = 0
    age = policy.where(now)
    if age:
        deleted += _delete(table, age)
    if policy.max_bytes:
        cut = size_cutoff(table, policy.max_bytes)
        if cut is not None:
            deleted += _delete(table, size_where(cut[0]))
    return deleted


def _delete(table, where: str) -> int:
    n = table.count_rows(where)
    if n:
        table.delete(where)
    return n


# ----------------------------------------------------------------------------- recordings

@dataclass
class PrunedFile:
    path: str
    size: int
    mtime: float
    reason: str  # "age" | "size"


def prune_recordings(directory, max_age_s: Optional[float] = None,
                     max_bytes: Optional[int] = None, *, now: Optional[float] = None,
                     patterns: Iterable[str] | None = None, in_use_s: float = 60.0,
                     dry_run: bool = False) -> List[PrunedFile]:
    """Expire the files of ``directory`` (recursively): those whose mtime is older than
    ``max_age_s``, then the oldest until the rest take at most ``max_bytes``. A file modified
    within ``in_use_s`` of ``now`` is kept whatever the limits (a recorder is writing it);
    hidden files are ignored; ``patterns`` (default: the video patterns) select the files.
    Folders left empty are removed (not ``directory`` itself). Returns what was (or, with
    ``dry_run``, would be) deleted, oldest first."""
    from .config import VIDEO_PATTERNS

    now = time.time() if now is None else now
    patterns = tuple(patterns or VIDEO_PATTERNS)
    root = os.fspath(directory)
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or not any(fnmatch.fnmatch(name, p) for p in patterns):
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            files.append((st.st_mtime, path, st.st_size))
    files.sort()
    out: List[PrunedFile] = []
    keep = []
    for mtime, path, size in files:
        if now - mtime < in_use_s:
            keep.append((mtime, path, size, False))
        elif max_age_s is not None and now - mtime > max_age_s:
            out.append(PrunedFile(path, size, mtime, "age"))
        else:
            keep.append((mtime, path, size, True))
    if max_bytes is not None:
        total = sum(size for _, _, size, _ in keep)
        for mtime, path, size, removable in keep:  # oldest first
            if total <= max_bytes:
                break
            if removable:
                out.append(PrunedFile(path, size, mtime, "size"))
                total -= size
    out.sort(key=lambda f: f.mtime)
    if not dry_run:
        for f in out:
            try:
                os.unlink(f.path)
            except FileNotFoundError:
                pass
        _remove_empty_dirs(root, {os.path.dirname(f.path) for f in out})
        if out:
            log.info("recordings in %s: %d file(s), %d bytes expired", root, len(out),
                     sum(f.size for f in out))
    return out


def _remove_empty_dirs(root: str, dirs: set) -> None:
    root = os.path.abspath(root)
    for d in sorted(dirs, key=len, reverse=True):
        d = os.path.abspath(d)
        while d != root and d.startswith(root + os.sep):
            try:
                os.rmdir(d)  # only succeeds when empty
            except OSError:
                break
            d = os.path.dirname(d)
