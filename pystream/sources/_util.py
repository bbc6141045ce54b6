"""Small shared pieces: frame-rate meter, backoff with jitter, creation_time parsing."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from datetime import datetime, timezone


class RateMeter:
    """Frames per second over the last ``window_s`` seconds (thread-safe)."""

    def __init__(self, window_s: float = 10.0):
        self.window_s = window_s
        self._t: deque[float] = deque()
        self._lock = threading.Lock()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._t.append(now)
            self._trim(now)

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            if len(self._t) < 2:
                return 0.0
            span = max(now - self._t[0], 1e-6)
            return round(len(self._t) / max(span, 1.0), 3)

    def _trim(self, now: float) -> None:
        while self._t and now - self._t[0] > self.window_s:
            self._t.popleft()


class Backoff:
    """Exponential backoff with "equal jitter": delay in [d/2, d], d = initial * 2**n capped.

    Jitter keeps many cameras behind one dead switch from reconnecting in lock-step.
    """

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None):
        self.initial_s = max(float(initial_s), 0.0)
        self.max_s = max(float(max_s), self.initial_s)
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        d = min(self.max_s, self.initial_s * (2 ** self.failures))
        self.failures += 1
        return d / 2 + self._rng.uniform(0, d / 2)

    def reset(self) -> None:
        self.failures = 0


def parse_creation_time(value) -> float | None:
    """Container metadata ``creation_time`` (ISO 8601, usually UTC 'Z') -> epoch seconds.
    Returns None for missing/unparsable values and for the 1904/1970 zero dates that some
    muxers write when they do not know."""
    if not value:
        return None
    s = str(value).strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    ts = dt.timestamp()
    return ts if ts > 86400 * 365 else None  # ignore "zero" dates
