"""The daemon's status, shared with other processes through a JSON file in state_dir.

The indexer writes `status.json` about once a second, atomically (temp file + os.replace, so a
reader never sees half a file); `pystream status` and `pystream serve` read it. A file that has
not been updated for a while means the daemon is not running (it was killed or stopped).

On a full disk the temp file cannot be written; the status must still get through (it is what
says the disk is full), so the file is padded with spaces to whole pages plus one spare page
(JSON ignores trailing whitespace), and when the atomic write fails with ENOSPC the file is
overwritten in place within the space it already has. A reader that meets a half-written file
then simply reads again.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
import threading
import time
from datetime import datetime
from typing import Callable

FILENAME = "status.json"
STALE_AFTER_S = 10.0
PAGE = 4096

log = logging.getLogger("pystream.status")


def status_path(state_dir: str | os.PathLike) -> str:
    return os.path.join(os.fspath(state_dir), FILENAME)


def _padded(status: dict) -> bytes:
    data = json.dumps(status, default=str).encode()
    return data + b" " * (-len(data) % PAGE + PAGE)


def write_status(state_dir: str | os.PathLike, status: dict) -> None:
    os.makedirs(state_dir, exist_ok=True)
    data = _padded(status)
    fd, tmp = -1, None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".status.", dir=state_dir)
        with os.fdopen(fd, "wb") as f:
            fd = -1
            f.write(data)
        os.replace(tmp, status_path(state_dir))
    except OSError as e:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) or not _write_in_place(state_dir, status):
            raise
    except BaseException:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise


def _write_in_place(state_dir, status: dict) -> bool:
    """Overwrite status.json within its allocated size (no new blocks needed on a full disk);
    False when there is no such file or the status no longer fits."""
    path = status_path(state_dir)
    try:
        size = os.path.getsize(path)
        data = json.dumps(status, default=str).encode()
        if len(data) > size:
            return False
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, data + b" " * (size - len(data)), 0)
        finally:
            os.close(fd)
        return True
    except OSError:
        return False


def read_status(state_dir: str | os.PathLike) -> dict | None:
    """The last status the daemon wrote, with `stale` set if it stopped updating; None if the
    daemon never ran with this state_dir."""
    for attempt in range(5):
        try:
            with open(status_path(state_dir)) as f:
                status = json.load(f)
            break
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):  # overwritten in place just now
            if attempt == 4:
                return None
            time.sleep(0.05)
    status["stale"] = time.time() - float(status.get("updated", 0)) > STALE_AFTER_S
    return status


class StatusReporter:
    """A thread that writes `get_status()` to state_dir every `interval_s` (and once at stop)."""

    def __init__(self, state_dir, get_status: Callable[[], dict], interval_s: float = 1.0,
                 on_status: Callable[[dict], None] | None = None):
        self.state_dir, self.get_status, self.interval_s = state_dir, get_status, interval_s
        self.on_status = on_status
        self._failing = False  # log a failure to write once, not every second
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
            if self.on_status is not None:
                self.on_status(s)
            write_status(self.state_dir, s)
            if self._failing:
                log.info("status file written again")
            self._failing = False
        except Exception as e:  # status is best effort; never take the daemon down
            if not self._failing:
                log.error("could not write status to %s: %s: %s", self.state_dir,
                          type(e).__name__, e, exc_info=not isinstance(e, OSError))
            self._failing = True

    def _run(self) -> None:
        # At once, then every interval: `pystream status` must work from the daemon's first
        # second (a disk that fills before the first interval would otherwise leave no status).
        self.write_once()
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
            dropped=s.get("frames_dropped", 0),
            files=s.get("files_done", 0), errors=s.get("errors", 0),
            reused="-" if s.get("reused") is None else f"{100 * s['reused']:.0f}%",
            last_error=(s.get("last_error") or "")[:120],
        ))
    return out


def health(status: dict | None) -> tuple[str, list[str], list[str]]:
    """("ok" | "degraded" | "down", problems, warnings) of a status, for /healthz and
    `pystream status`: down when the indexer is not running, degraded when the writer is
    stalled; low disk space is a warning."""
    if status is None:
        return "down", ["no status: the indexer has not run with this state_dir"], []
    if status.get("stale"):
        return "down", ["status is stale: the daemon is not running"], []
    if not status.get("running", True):
        return "down", ["indexer not running"], []
    problems, warnings = [], []
    w = status.get("writer") or {}
    if w.get("state") == "stalled":
        since = w.get("since")
        ago = f" for {fmt_duration(time.time() - since)}" if since else ""
        problems.append(f"writer stalled{ago}: {w.get('error')}")
    for what, d in (status.get("disk") or {}).items():
        if d.get("low"):
            warnings.append(f"low disk space: {what} ({d.get('path')}) has "
                            f"{d.get('free_bytes', 0) / 2**20:.0f} MB free")
    return ("degraded" if problems else "ok"), problems, warnings
