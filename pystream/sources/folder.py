"""Folder and one-off file sources.

When is a file complete? watchdog reports ``created`` as soon as a copy *starts*, so a file
is only yielded once one of these holds (whichever comes first):

* a close-after-write event (inotify ``IN_CLOSE_WRITE``, watchdog's ``FileClosedEvent``)
  and no further change for a short settle time (``min(stable_s, 0.5)`` s; a writer that
  closes and reopens between pieces is caught by the re-check);
* the file was renamed/moved to its name (temp-then-rename writers: the writer is done by
  the time it renames; temp names that do not match ``patterns`` are never candidates, and
  dot-files such as rsync's ``.name.XXXXXX`` are ignored);
* size and mtime observed unchanged for ``stable_s`` seconds, or - local filesystems only -
  mtime already older than ``stable_s`` (files found by the start-up scan are not delayed).
  With ``poll=True`` (network filesystems, whose clocks may disagree with ours) only our own
  observation counts.

Events are hints; the truth is a reconciliation scan once at start and every
``scan_interval_s`` (inotify queues overflow silently, and directories moved into the tree
arrive as one event). A dead observer thread is restarted.

Already-indexed files: ``is_done(path, size, mtime)`` (the daemon's checkpoint store) is asked
before yielding; done files are skipped quietly (``status()["files_skipped"]``, a debug log
line; no event, since after a restart that is every old recording) and are not decoded. A
``FileSource`` (one file named explicitly) does report a done file as ``file_skipped``.

Files that change after being indexed (grew, or were replaced: a different size or mtime)
are indexed AGAIN, from the start, as a new version: a new Segment with the new
``file_key``. We chose re-indexing over ignoring because a replaced file is new content
and a file that grew was cut short when first seen (e.g. a copy that stalled longer than
``stable_s``); the daemon's deterministic row ids (source, level, start time) turn the
overlap with the first version into overwrites rather than duplicates. We do not try to
index "only the new tail": container formats like MP4 rewrite their index on close.

Bad files (zero-length, not a video, corrupt headers, truncated MP4 without its index) are
probed (``pystream.decode.probe``) before the Segment is yielded and give a
``SourceEvent(kind="error")`` naming the file; the other files keep going. Such a file is
not retried until it changes. Damage later in a file surfaces while iterating ``frames``
(``decode_frames`` yields what it can; see pystream.decode).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from pystream.config import VIDEO_PATTERNS
from pystream.decode import DecodeError, Frame, decode_frames, probe
from pystream.sources import Segment, SourceEvent
from pystream.sources._util import RateMeter, parse_creation_time

log = logging.getLogger(__name__)

DEFAULT_PATTERNS = VIDEO_PATTERNS
# status()["state"] while the folder does not exist or cannot be watched (an unmounted share):
# a state the source waits out, checking again every few seconds, not a configuration error.
WAITING_FOR_FOLDER = "waiting: folder missing"
_TICK_S = 0.2  # how often pending files are re-checked and `stop` is looked at


@dataclass
class _Pending:
    size: int
    mtime: float
    since: float          # monotonic time size/mtime were last seen to change
    closed: bool = False  # a close-after-write / moved-here event since the last change


class _Handler(FileSystemEventHandler):
    """Runs in the observer thread: only queues hints, the source thread does the work."""

    def __init__(self, q: queue.SimpleQueue):
        self.q = q

    def on_any_event(self, event):
        et = event.event_type
        if et in ("opened", "closed_no_write"):
            return  # our own reads, and readers in general
        if event.is_directory:
            if et in ("created", "moved"):
                self.q.put(("scan", os.fsdecode(getattr(event, "dest_path", "") or event.src_path)))
            return
        if et == "moved":
            self.q.put(("gone", os.fsdecode(event.src_path)))
            self.q.put(("done", os.fsdecode(event.dest_path)))
        elif et == "closed":
            self.q.put(("done", os.fsdecode(event.src_path)))
        elif et == "deleted":
            self.q.put(("gone", os.fsdecode(event.src_path)))
        else:  # created, modified
            self.q.put(("changed", os.fsdecode(event.src_path)))


def _file_start_time(info: dict, configured: float | None, fallback: str, st) -> float:
    if configured is not None:
        return float(configured)
    created = parse_creation_time(info.get("creation_time"))
    if created is not None:
        return created
    if fallback == "mtime" and info.get("duration_s"):
        return max(0.0, st.st_mtime - float(info["duration_s"]))  # recording ended at mtime
    return 0.0


class _FileIndexer:
    """Shared by FolderSource and FileSource: probe a file, then yield its Segment."""

    name: str

    def _init_common(self, fps, size, fallback_start):
        if not fps or fps <= 0:
            raise ValueError(f"source {self.name!r}: fps must be > 0, got {fps!r}")
        if fallback_start not in ("zero", "mtime"):
            raise ValueError(f"source {self.name!r}: fallback_start must be 'zero' or 'mtime'")
        self.fps = float(fps)
        self.size = size
        self.fallback_start = fallback_start
        self._lock = threading.Lock()
        self._state = "idle"
        self._last_error: str | None = None
        self._files_seen = 0
        self._files_indexed = 0
        self._files_failed = 0
        self._files_skipped = 0
        self._frames = 0
        self._rate = RateMeter()
        self._current: str | None = None

    def _error(self, uri: str, message: str, file: bool = True) -> SourceEvent:
        with self._lock:
            self._last_error = message
            self._files_failed += int(file)
        log.warning("source %s: %s", self.name, message)
        return SourceEvent(self.name, "error", uri, message)

    def _segment_for(self, path: str, start_time: float | None = None):
        """Returns a Segment, or a SourceEvent(error) if the file cannot be used."""
        try:
            st = os.stat(path)
            info = probe(path)
        except DecodeError as e:
            return self._error(path, str(e))
        except OSError as e:
            return self._error(path, f"{path}: cannot read ({e})")
        key = (path, st.st_size, st.st_mtime)
        t0 = _file_start_time(info, start_time, self.fallback_start, st)
        with self._lock:
            self._files_indexed += 1
        frames = self._count(path, decode_frames(path, self.fps, self.size, start_time=t0))
        return Segment(source=self.name, uri=path, stream_id=f"{self.name}:{path}", live=False,
                       start_time=t0, frames=frames, file_key=key)

    def _count(self, path: str, frames: Iterator[Frame]) -> Iterator[Frame]:
        with self._lock:
            self._state, self._current = "running", path
        try:
            for f in frames:
                with self._lock:
                    self._frames += 1
                self._rate.tick()
                yield f
        except DecodeError as e:
            with self._lock:
                self._last_error = str(e)
                self._files_failed += 1
            raise  # the daemon reports errors raised while iterating
        finally:
            frames.close()  # closes the container even if the consumer stopped early
            with self._lock:
                if self._state == "running":
                    self._state = "idle"
                self._current = None

    def _base_status(self) -> dict:
        with self._lock:
            return {
                "state": self._state,
                "last_error": self._last_error,
                "reconnects": 0,
                "files_seen": self._files_seen,
                "files_indexed": self._files_indexed,
                "files_failed": self._files_failed,
                "files_skipped": self._files_skipped,
                "frames": self._frames,
                "fps": self._rate.rate(),
                "lag_s": None,
                "current": self._current,
            }


class FolderSource(_FileIndexer):
    """Watches ``path`` for complete video files (see the module docstring for the rules).

    patterns: glob patterns matched case-insensitively against the file name.
    poll: use watchdog's PollingObserver (NFS/SMB/FUSE, where inotify sees nothing).
    is_done: ``(path, size, mtime) -> bool``, True for files already indexed (checkpoints).
    fallback_start: Segment.start_time when the file has no ``creation_time`` metadata:
        "zero" (0.0) or "mtime" (mtime minus duration: the recording ended when it was
        last written).
    """

    CONFIG_KEYS = ("patterns", "recursive", "fps", "size", "stable_s", "poll",
                   "scan_interval_s", "poll_interval_s", "ignore_hidden", "fallback_start")

    def __init__(self, name: str, path: str, patterns=DEFAULT_PATTERNS, recursive: bool = True,
                 fps: float = 1.0, size=224, stable_s: float = 2.0, poll: bool = False,
                 scan_interval_s: float = 30.0,
                 is_done: Callable[[str, int, float], bool] | None = None,
                 poll_interval_s: float = 1.0, ignore_hidden: bool = True,
                 fallback_start: str = "zero"):
        self.name = name
        self.path = os.path.abspath(os.fspath(path))
        if isinstance(patterns, str):
            patterns = (patterns,)
        self.patterns = tuple(p.lower() for p in patterns)
        self.recursive = bool(recursive)
        self.stable_s = float(stable_s)
        self.poll = bool(poll)
        self.scan_interval_s = float(scan_interval_s)
        self.poll_interval_s = float(poll_interval_s)
        self.ignore_hidden = bool(ignore_hidden)
        self.is_done = is_done
        self._init_common(fps, size, fallback_start)
        self._pending: dict[str, _Pending] = {}
        self._handled: dict[str, tuple] = {}  # path -> file_key last yielded/failed/skipped

    # -- matching -----------------------------------------------------------------------
    def _wanted(self, path: str) -> bool:
        rel = os.path.relpath(path, self.path)
        if rel.startswith(".." + os.sep) or rel == "..":
            return False
        parts = rel.split(os.sep)
        if not self.recursive and len(parts) > 1:
            return False
        if self.ignore_hidden and any(p.startswith(".") for p in parts):
            return False
        base = parts[-1].lower()
        return any(fnmatch.fnmatchcase(base, p) for p in self.patterns)

    # -- the loop -----------------------------------------------------------------------
    def segments(self, stop: threading.Event) -> Iterator[Segment | SourceEvent]:
        events: queue.SimpleQueue = queue.SimpleQueue()
        observer = None
        next_scan = 0.0  # scan at once
        folder_ok = None
        try:
            while not stop.is_set():
                now = time.monotonic()
                # Observer: (re)start when missing or dead; a missing folder is an error that
                # is retried, not fatal (a mount may come back).
                if observer is None or not observer.is_alive():
                    if observer is not None:
                        log.warning("source %s: file watcher died; restarting", self.name)
                        next_scan = now
                    observer = self._start_observer(events)
                    if observer is None:
                        if folder_ok is not False:
                            folder_ok = False
                            why = ("does not exist (yet)" if not os.path.exists(self.path)
                                   else "cannot be watched")
                            with self._lock:
                                self._state = WAITING_FOR_FOLDER
                            yield self._error(self.path, f"{self.path}: folder {why}; waiting for "
                                              "it to appear (is the share mounted?)", file=False)
                        stop.wait(min(self.scan_interval_s, 5.0))
                        continue
                    if folder_ok is False:
                        log.info("source %s: folder %s is back", self.name, self.path)
                    folder_ok = True
                    with self._lock:
                        self._state = "idle"

                self._drain(events, now)
                if now >= next_scan:
                    self._scan(self.path, now)
                    next_scan = now + self.scan_interval_s

                for path in self._ready(now):
                    if stop.is_set():
                        return
                    item = self._take(path)
                    if item is not None:
                        yield item
                stop.wait(_TICK_S)
        finally:
            if observer is not None:
                observer.stop()
                observer.join(timeout=5)
            with self._lock:
                self._state = "idle"

    def _start_observer(self, events):
        if not os.path.isdir(self.path):
            return None
        obs = PollingObserver(timeout=self.poll_interval_s) if self.poll else Observer()
        obs.daemon = True
        try:
            obs.schedule(_Handler(events), self.path, recursive=self.recursive)
            obs.start()
        except OSError as e:  # e.g. inotify watch limit reached
            log.warning("source %s: cannot watch %s: %s", self.name, self.path, e)
            return None
        return obs

    def _drain(self, events, now: float) -> None:
        while True:
            try:
                what, path = events.get_nowait()
            except queue.Empty:
                return
            if what == "scan":
                self._scan(path, now)
            elif what == "gone":
                self._pending.pop(path, None)
            elif self._wanted(path):
                self._note(path, now, closed=(what == "done"))

    def _scan(self, root: str, now: float) -> None:
        """Reconciliation: every wanted file not yet handled in its current version."""
        try:
            if self.recursive:
                walker = os.walk(root)
            else:
                walker = [(root, [], [e.name for e in os.scandir(root) if e.is_file()])]
            for d, dirs, files in walker:
                if self.ignore_hidden:
                    dirs[:] = [x for x in dirs if not x.startswith(".")]
                for f in files:
                    p = os.path.join(d, f)
                    if p not in self._pending and self._wanted(p):
                        self._note(p, now, closed=False)
        except OSError as e:
            log.warning("source %s: scan of %s failed: %s", self.name, root, e)

    def _note(self, path: str, now: float, closed: bool) -> None:
        try:
            st = os.stat(path)
        except OSError:
            self._pending.pop(path, None)
            return
        if self._handled.get(path) == (path, st.st_size, st.st_mtime):
            self._pending.pop(path, None)
            return
        p = self._pending.get(path)
        if p is None:
            self._pending[path] = _Pending(st.st_size, st.st_mtime, now, closed)
        elif (p.size, p.mtime) != (st.st_size, st.st_mtime):
            p.size, p.mtime, p.since, p.closed = st.st_size, st.st_mtime, now, closed
        elif closed:
            p.closed = True

    def _ready(self, now: float) -> list[str]:
        settle = min(self.stable_s, 0.5)
        wall = time.time()
        ready = []
        for path, p in list(self._pending.items()):
            try:
                st = os.stat(path)
            except OSError:
                del self._pending[path]
                continue
            if (st.st_size, st.st_mtime) != (p.size, p.mtime):
                p.size, p.mtime, p.since, p.closed = st.st_size, st.st_mtime, now, False
                continue
            quiet = now - p.since
            old = (not self.poll) and wall - st.st_mtime >= self.stable_s
            if quiet >= self.stable_s or old or (p.closed and p.size > 0 and quiet >= settle):
                ready.append(path)
        ready.sort(key=lambda q: self._pending[q].mtime)  # oldest recordings first
        return ready

    def _take(self, path: str):
        """The file is complete: skip it, fail it, or make its Segment."""
        p = self._pending.pop(path)
        key = (path, p.size, p.mtime)
        previous = self._handled.get(path)
        self._handled[path] = key
        with self._lock:
            self._files_seen += 1
        if self.is_done is not None:
            try:
                done = self.is_done(path, p.size, p.mtime)
            except Exception as e:  # the checkpoint store failing must not kill the watcher
                log.exception("source %s: is_done(%s) failed", self.name, path)
                self._handled.pop(path, None)  # not this file's fault: look again next scan
                return self._error(path, f"{path}: checkpoint lookup failed ({e}); will retry", file=False)
            if done:
                # Silent on purpose (counted in status): after a restart every old recording
                # is "done", and an event each would flood the log with non-problems.
                log.debug("source %s: %s already indexed; skipped", self.name, path)
                with self._lock:
                    self._files_skipped += 1
                return None
        if p.size == 0:
            return self._error(path, f"{path}: file is empty (0 bytes)")
        if previous is not None:
            log.info("source %s: %s changed since it was indexed (%s -> %s bytes); indexing the new version",
                     self.name, path, previous[1], p.size)
        return self._segment_for(path)

    def status(self) -> dict:
        s = self._base_status()
        s["pending"] = len(self._pending)
        s["path"] = self.path
        return s


class FileSource(_FileIndexer):
    """A one-off file, indexed once: one Segment (or one error event), then the iterator ends.

    start_time: absolute time of the file's first frame; default: the container's
    ``creation_time`` metadata, else ``fallback_start`` ("zero" or "mtime").
    """

    CONFIG_KEYS = ("fps", "size", "start_time", "fallback_start")

    def __init__(self, name: str, path: str, fps: float = 1.0, size=224,
                 start_time: float | None = None, fallback_start: str = "zero",
                 is_done: Callable[[str, int, float], bool] | None = None):
        self.name = name
        self.path = os.path.abspath(os.fspath(path))
        self.start_time = start_time
        self.is_done = is_done
        self._init_common(fps, size, fallback_start)

    def segments(self, stop: threading.Event) -> Iterator[Segment | SourceEvent]:
        if stop.is_set():
            return
        with self._lock:
            self._files_seen += 1
        if self.is_done is not None:
            try:
                st = os.stat(self.path)
                if self.is_done(self.path, st.st_size, st.st_mtime):
                    with self._lock:
                        self._files_skipped += 1
                    yield SourceEvent(self.name, "file_skipped", self.path, f"{self.path}: already indexed")
                    return
            except OSError:
                pass  # probe below reports it clearly
        item = self._segment_for(self.path, self.start_time)
        if isinstance(item, SourceEvent):
            with self._lock:
                self._state = "error"
        yield item

    def status(self) -> dict:
        s = self._base_status()
        s["path"] = self.path
        return s
