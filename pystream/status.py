"""The daemon's status, shared with other processes through a JSON file in state_dir.

The indexer writes `status.json` about once a second, atomically (temp file + os.replace, so a
reader never sees half a file); `pystream status` and `pystream serve` read it. A file that has
not been updated for a while means the daemon is not running (it was killed or stopped).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from datetime import datetime
from typing import Callable

FILENAME = "status.json"
STALE_AFTER_S = 10.0


def status_path(state_dir: str | os.PathLike) -> str:
    return os.path.join(os.fspath(state_dir), FILENAME)


def write_status(state_dir: str | os.PathLike, status: dict) -> None:
    os.makedirs(state_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".status.", dir=state_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(status, f, default=str)
        os.replace(tmp, status_path(state_dir))
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_status(state_dir: str | os.PathLike) -> dict | None:
    """The last status the daemon wrote, with `stale` set if it stopped updating; None if the
    daemon never ran with this state_dir."""
    try:
        with open(status_path(state_dir)) as f:
            status = json.load(f)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:  # cannot happen with os.replace, but never crash `status`
        return None
    status["stale"] = time.time() - float(status.get("updated", 0)) > STALE_AFTER_S
    return status


class StatusReporter:
    """A thread that writes `get_status()` to state_dir every `interval_s` (and once at stop)."""

    def __init__(self, state_dir, get_status: Callable[[], dict], interval_s: float = 1.0,
                 on_status: Callable[[dict], None] | None = None):
        self.state_dir, self.get_status, self.interval_s = state_dir, get_status, interval_s
        self.on_status = on_status
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="pystream-status")

    def start(self) -> "StatusReporter":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.write_once()

    def write_once(self) -> None:
        try:
            s = self.get_status()
            write_status(self.state_dir, s)
            if self.on_status is not None:
                self.on_status(s)
        except Exception:  # status is best effort; never take the daemon down
            import logging
            logging.getLogger("pystream.status").exception("could not write status")

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.write_once()


# ----------------------------------------------------------------------------- formatting

def fmt_time(t: float | None) -> str:
    """Epoch seconds as local ISO time; small numbers (file-relative seconds) as seconds."""
    if t is None:
        return "-"
    if t > 1e8:
        return datetime.fromtimestamp(t).isoformat(timespec="seconds")
    return f"{t:.1f}s"


def fmt_duration(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.1f}s"
    if s < 7200:
        return f"{s / 60:.1f}m"
    return f"{s / 3600:.1f}h"


def source_rows(status: dict) -> list[dict]:
    """One flat dict per source, for tables."""
    out = []
    for name, s in sorted((status.get("sources") or {}).items()):
        out.append(dict(
            source=name, state=s.get("state"), lag=fmt_duration(s.get("lag_s")),
            fps=f"{s.get('fps', 0):.2f}", frames=s.get("frames", 0), rows=s.get("rows", 0),
            files=s.get("files_done", 0), errors=s.get("errors", 0),
            reused="-" if s.get("reused") is None else f"{100 * s['reused']:.0f}%",
            last_error=(s.get("last_error") or "")[:120],
        ))
    return out
