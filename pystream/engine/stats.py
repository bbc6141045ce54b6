"""Per-source numbers for `pystream status`, /status and /metrics.

A ``SourceStats`` is written by its source's thread (frames, chunks, events, state), by the
encoder thread (encoding errors) and by the writer thread (committed rows, files done); every
access goes through its lock, and ``snapshot()`` is what any other thread reads.
"""

from __future__ import annotations

import collections
import threading
import time

MAX_GAPS_KEPT = 20


class SourceStats:
    """Per-source numbers for `pystream status`, /status and /metrics. Thread-safe."""

    def __init__(self, name: str, kind: str):
        self.name, self.kind = name, kind
        self._lock = threading.Lock()
        self.state = "starting"
        self.live = False  # the source produced live segments (now or in an earlier run)
        self.uri: str | None = None
        self.frames = 0
        self.frames_dropped = 0  # of those, live frames not indexed (writer stalled)
        self.chunks = 0
        self.rows = 0
        self.errors = 0
        self.restarts = 0  # supervised restarts after the source crashed
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        self.files_done = 0
        self.files_skipped = 0
        self.last_frame_t: float | None = None  # time of the last decoded frame
        self.last_indexed_end: float | None = None  # end of the last committed window
        self.gaps: collections.deque = collections.deque(maxlen=MAX_GAPS_KEPT)
        self.events: collections.deque = collections.deque(maxlen=MAX_GAPS_KEPT)
        self._rate = collections.deque()  # (monotonic time, frames) samples for frames/s

    def update(self, **kw):
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, v)

    def add(self, **kw):
        """Increment counters: ``add(rows=3, files_done=1)``."""
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    def add_frames(self, n: int, t: float):
        with self._lock:
            self.frames += n
            self.last_frame_t = t
            now = time.monotonic()
            self._rate.append((now, self.frames))
            while self._rate and now - self._rate[0][0] > 10.0:
                self._rate.popleft()

    def indexed_until(self, end: float):
        """A level-0 row ending at ``end`` is committed."""
        with self._lock:
            if (self.last_indexed_end or 0) < end:
                self.last_indexed_end = end

    def error(self, message: str):
        with self._lock:
            self.errors += 1
            self.last_error = message
            self.last_error_time = time.time()

    def event(self, kind: str, message: str, **extra):
        with self._lock:
            e = dict(kind=kind, message=message, time=time.time(), **extra)
            self.events.append(e)
            if kind == "gap":
                self.gaps.append(e)

    def snapshot(self, live: bool | None = None) -> dict:
        with self._lock:
            live = self.live if live is None else live
            now = time.monotonic()
            fps = 0.0
            if len(self._rate) >= 2:
                (t0, f0), (t1, f1) = self._rate[0], self._rate[-1]
                if now - t1 < 5.0 and t1 > t0:  # stale samples mean the source is idle
                    fps = (f1 - f0) / (t1 - t0)
            lag = None
            if live and self.last_indexed_end is not None:
                lag = max(0.0, time.time() - self.last_indexed_end)
            return dict(name=self.name, kind=self.kind, state=self.state, uri=self.uri,
                        frames=self.frames, frames_dropped=self.frames_dropped,
                        chunks=self.chunks, rows=self.rows, fps=round(fps, 3),
                        lag_s=None if lag is None else round(lag, 3),
                        last_frame_t=self.last_frame_t, last_indexed_end=self.last_indexed_end,
                        errors=self.errors, last_error=self.last_error,
                        last_error_time=self.last_error_time, files_done=self.files_done,
                        files_skipped=self.files_skipped, restarts=self.restarts,
                        gaps=list(self.gaps), events=list(self.events)[-5:])


def connection_state(snap: dict, src) -> None:
    """A live source's thread keeps running while its camera is unreachable or lost (it is in
    its reconnect loop), so our own state would say "running" for a dead camera (in `pystream
    status`, /status and the `up` metric). Show the source's own "connecting"/"down" then, and
    a folder source's "waiting: folder missing" (an unmounted share it waits for)."""
    if src is None or snap["state"] not in ("running", "reconnecting"):
        return
    try:
        state = (src.status() or {}).get("state")
    except Exception:  # noqa: BLE001 - status must not fail because a source's does
        return
    if state in ("connecting", "down") or (isinstance(state, str) and state.startswith("waiting")):
        snap["state"] = state
