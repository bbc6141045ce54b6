"""`pystream triggers test NAME [--since 24h]`: run a trigger over the archive and show what it
would have fired, to pick a threshold from one's own footage.

Every row of the trigger's level and sources in the time range is scored (exactly, by brute
force over the stored vectors, in batches) and grouped into events with the live evaluator's
rule (events.py), so the alerts listed are the ones the daemon would have sent. The closest
scores below the threshold are listed too: where to lower it to, if a sighting is missed.
"""

from __future__ import annotations

import heapq
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

from .events import alert_key, continues, trigger_embedding
from .store import EventState

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.I)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """'24h' / '30m' / '7d' / '90s' / '2w' before now, 'all' (None: no bound), or a time
    (epoch seconds or ISO 8601)."""
    from ..archive import to_timestamp

    if value is None or str(value).strip().lower() in ("all", ""):
        return None
    m = _DURATION.match(str(value))
    if m:
        seconds = float(m.group(1)) * _UNIT_S[m.group(2).lower()]
        return (time.time() if now is None else now) - seconds
    return to_timestamp(value)


@dataclass
class WouldFire:
    key: str
    source: str
    uri: str
    start: float  # the event: first matching window's start ...
    end: float  # ... to the last one's end
    score: float  # of the window that fires
    peak: float
    clip_id: str  # the window that fires
    rows: int  # matching windows in the event
    thumbnail: Optional[str] = None  # file written, if any

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Near:
    score: float
    source: str
    start: float
    clip_id: str


def run_trigger(arc, trigger, *, since=None, until=None, threshold: Optional[float] = None,
                thumbnails_dir: Optional[str] = None, near: int = 5, batch_size: int = 8192):
    """(events that would have fired, the `near` best scores below the threshold, rows scanned).
    `arc` is a pystream Archive (its model embeds the trigger)."""
    from ..archive import build_filter

    thr = trigger.threshold if threshold is None else float(threshold)
    query = trigger_embedding(arc.model, arc.recorded_model or "", trigger)
    sql = build_filter(trigger.sources, since, until, trigger.level)
    matches, below, scanned = [], [], 0
    cols = ["id", "source", "uri", "start", "end", "vector"]
    for batch in arc.table.to_lance().to_batches(columns=cols, filter=sql, batch_size=batch_size):
        if batch.num_rows == 0:
            continue
        scanned += batch.num_rows
        vecs = np.asarray(batch.column("vector").flatten().to_numpy(zero_copy_only=False),
                          np.float32).reshape(batch.num_rows, -1)
        scores = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12) @ query
        ids, srcs, uris = (batch.column(c).to_pylist() for c in ("id", "source", "uri"))
        starts, ends = batch.column("start").to_pylist(), batch.column("end").to_pylist()
        for i in np.nonzero(scores >= thr)[0]:
            matches.append((srcs[i], uris[i], starts[i], ends[i], ids[i], float(scores[i])))
        for i in np.argsort(-scores)[:near]:
            if scores[i] < thr:
                item = (float(scores[i]), ids[i], srcs[i], starts[i])
                if len(below) < near:
                    heapq.heappush(below, item)
                else:
                    heapq.heappushpop(below, item)
    fired: List[WouldFire] = []
    open_events: dict = {}  # (source, uri) -> (EventState, index in fired)
    for src, uri, start, end, rid, score in sorted(matches):
        st, idx = open_events.get((src, uri), (None, None))
        if continues(st, start, end, trigger.cooldown_s):
            open_events[(src, uri)] = (EventState(st.key, min(st.first_start, start),
                                                  max(st.last_end, end)), idx)
            ev = fired[idx]
            ev.end, ev.peak, ev.rows = max(ev.end, end), max(ev.peak, score), ev.rows + 1
            continue
        ev = WouldFire(alert_key(trigger.name, src, rid), src, uri, start, end, score, score,
                       rid, 1)
        fired.append(ev)
        open_events[(src, uri)] = (EventState(ev.key, start, end), len(fired) - 1)
    fired.sort(key=lambda e: (e.start, e.source))
    if thumbnails_dir is not None and fired:
        out = Path(thumbnails_dir)
        out.mkdir(parents=True, exist_ok=True)
        for ev in fired:
            jpeg = arc.thumbnail(ev.clip_id)
            if jpeg:
                path = out / (re.sub(r"[^A-Za-z0-9_.-]+", "_", ev.clip_id) + ".jpg")
                path.write_bytes(jpeg)
                ev.thumbnail = str(path)
    nears = [Near(s, src, st, rid) for s, rid, src, st in sorted(below, reverse=True)]
    return fired, nears, scanned
