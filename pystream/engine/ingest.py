"""One runner (thread) per source: segments -> k-frame chunks on the shared queue.

For each segment a source yields, its runner skips files already done, resumes a file cut short
at its checkpointed frame (or drops its carried state when the file changed since), cuts the
frames into chunks of ``k`` (``put`` blocks while the encoder is behind: backpressure) and ends
the stream with an ``EndItem``: live streams and files read to the end are finished (a file is
then marked done), a file cut short by shutdown keeps its carried state for the checkpoint.
Decoding happens in this thread (in libav, off the GIL).

When the writer cannot take more rows (its ``backpressure`` event: the store is stalled and the
pending rows are at their bound), the queue fills and a file's runner simply waits in ``put``
(the file pauses). A live source cannot pause: its runner ends the stream (its windows close
before the gap), keeps reading and discarding frames so nothing piles up anywhere, and once the
writer takes rows again starts a new stream and records a ``gap`` event (start, end, frames
not indexed) in the source's status.

Supervised: a source whose ``segments()`` raises is restarted after a backoff (doubling from
``RestartPolicy.initial_s`` up to ``max_s``; a run that lasted ``healthy_s`` resets it) instead of
staying dead until the service restarts. ``max_failures`` consecutive crashes (None: no limit)
leave it in state "error".
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from .commit import resume_point
from .messages import ChunkQueue, EndItem, StreamRef, chunk_item
from .stats import SourceStats

log = logging.getLogger("pystream.pipeline")


def make_sources(cfg, image_size: int, is_file_done: Callable[..., bool]) -> list:
    """The configured, enabled sources; a folder skips files ``is_file_done(name, ...)``."""
    from ..sources import make_source  # written against the sources contract

    out = []
    for sc in cfg.enabled_sources():
        d = {k: v for k, v in sc.model_dump(exclude={"enabled", "retention"}).items()
             if v is not None}
        d["fps"] = cfg.source_fps(sc)
        d["size"] = image_size  # the decoder resizes to the model's input in libav
        extra = {}
        if sc.type == "folder":
            extra["is_done"] = (lambda path, size, mtime, _n=sc.name:
                                is_file_done(_n, path, size, mtime))
        out.append(make_source(d, **extra))
    return out


def source_fps(cfg, src) -> float:
    """A source's sampling rate: its own, its configured one, or the global default."""
    fps = getattr(src, "fps", None)
    if fps:
        return float(fps)
    for sc in cfg.sources:
        if sc.name == src.name:
            return cfg.source_fps(sc)
    return cfg.sample_fps


@dataclass
class RestartPolicy:
    initial_s: float = 1.0  # first backoff after a crash
    max_s: float = 60.0  # backoff cap
    healthy_s: float = 60.0  # a run at least this long resets the backoff and the count
    max_failures: Optional[int] = None  # consecutive crashes before giving up (None: never)

    def backoff(self, failures: int) -> float:
        return min(self.max_s, self.initial_s * 2 ** max(0, failures - 1))


class SourceRunner:
    """Runs one source in its own thread (see the module docstring)."""

    def __init__(self, src, chunks: ChunkQueue, stats: SourceStats, *, k: int, fps: float,
                 stop_event: threading.Event, is_file_done: Callable[..., bool],
                 resume: Dict[str, dict], restart: RestartPolicy | None = None,
                 backpressure: threading.Event | None = None):
        self.src = src
        self.name = src.name  # rows and stats are keyed by the configured source name
        self.chunks, self.st, self.k = chunks, stats, k
        self.dt = 1.0 / fps
        self.stop_event = stop_event
        self.is_file_done = is_file_done
        self.resume = resume  # shared by all runners; keys are per source, pop() is atomic
        self.restart = restart or RestartPolicy()
        # Set while the writer cannot take rows: live segments drop chunks and record a gap.
        self.backpressure = backpressure or threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> threading.Thread:
        self.chunks.add_producer()
        self.thread = threading.Thread(target=self.run, daemon=True,
                                       name=f"pystream-source-{self.name}")
        self.thread.start()
        return self.thread

    # ------------------------------------------------------------------ supervision

    def run(self):
        st, failures = self.st, 0
        try:
            while True:
                t0 = time.monotonic()
                try:
                    self.run_once()
                    st.update(state="stopped" if self.stop_event.is_set() else "finished")
                    return
                except Exception as e:  # a broken source must not take the others down
                    log.exception("source %s failed", self.name)
                    st.error(f"{type(e).__name__}: {e}")
                    if time.monotonic() - t0 >= self.restart.healthy_s:
                        failures = 0
                    failures += 1
                    limit = self.restart.max_failures
                    if self.stop_event.is_set() or (limit is not None and failures > limit):
                        st.update(state="error")
                        return
                    delay = self.restart.backoff(failures)
                    st.update(state="restarting")
                    st.event("restart", f"{type(e).__name__}: {e}; restarting in {delay:.1f} s")
                    log.warning("source %s: restarting in %.1f s", self.name, delay)
                    if self.stop_event.wait(delay):
                        st.update(state="stopped")
                        return
                    st.add(restarts=1)
        finally:
            self.chunks.remove_producer()

    def run_once(self):
        """One pass over ``src.segments()``; raises what the source raises."""
        self.st.update(state="running")
        for item in self.src.segments(self.stop_event):
            if self.stop_event.is_set():
                break
            if hasattr(item, "frames"):
                self.run_segment(item)
            else:
                self.on_event(item)

    # ------------------------------------------------------------------ one pass

    def on_event(self, ev):
        st = self.st
        kind = getattr(ev, "kind", "event")
        extra = {k: getattr(ev, k, None) for k in ("uri", "start", "end")}
        st.event(kind, getattr(ev, "message", ""), **extra)
        if kind in ("error", "file_skipped"):
            msg = ev.message if ev.uri and ev.uri in ev.message else f"{ev.uri}: {ev.message}"
            st.error(msg)
            if kind == "file_skipped":
                st.add(files_skipped=1)
            log.warning("source %s: %s: %s", st.name, kind, msg)
        elif kind == "reconnect":
            st.update(state="reconnecting")
            log.info("source %s: reconnecting to %s: %s", st.name, ev.uri, ev.message)
        else:
            log.info("source %s: %s %s %s", st.name, kind, ev.uri, ev.message)

    def stream_ref(self, seg) -> Optional[StreamRef]:
        """The segment's stream, or None for a file indexed before."""
        name = self.name
        fk = tuple(seg.file_key) if getattr(seg, "file_key", None) else None
        if seg.live:
            self.st.update(live=True)
            return StreamRef(f"live:{name}|{seg.stream_id}", name, seg.uri, True, fk)
        if fk is not None and self.is_file_done(name, *fk):
            self.st.add(files_skipped=1)
            return None  # indexed before (restart, rescan, or a second path to it)
        return StreamRef(f"file:{name}|{seg.uri}", name, seg.uri, False, fk)

    def resume_from(self, ref: StreamRef) -> int:
        info = self.resume.pop(ref.key, None)
        skip = resume_point(info, ref.file_key)
        if skip is None:  # the file changed since: start it over
            self.chunks.put(EndItem(ref, None, False, False, drop=True))
            return 0
        if skip:
            log.info("resuming %s at frame %d", ref.uri, skip)
        return skip

    def run_segment(self, seg):
        st = self.st
        ref = self.stream_ref(seg)
        if ref is None:
            return
        skip = self.resume_from(ref)
        st.update(state="running", uri=seg.uri)
        buf: List = []
        complete = False
        gap = None  # live, writer stalled: {"start", "last", "frames", "ended"}
        try:
            for f in seg.frames:
                if self.stop_event.is_set():
                    break
                if f.index < skip:
                    continue  # already encoded before the restart (its tokens are carried)
                if gap is not None:
                    if not self._gap_over(ref, gap):
                        st.add_frames(1, f.t)  # sampled, not indexed
                        gap["last"], gap["frames"] = f.t, gap["frames"] + 1
                        continue
                    self._record_gap(gap, f.t)
                    gap = None
                st.add_frames(1, f.t)
                buf.append(f)
                if len(buf) == self.k:
                    item = chunk_item(ref, buf, self.dt)
                    if not ref.live:
                        self.chunks.put(item)  # blocks while the encoder is behind: files pause
                        st.add(chunks=1)
                    elif self._put_live(item):
                        st.add(chunks=1)
                    else:
                        gap = {"start": buf[0].t, "last": buf[-1].t, "frames": len(buf),
                               "ended": False}
                        self._gap_over(ref, gap)  # sends the stream's end if there is room
                    buf = []
            else:
                complete = True
        except Exception as e:
            # decode_frames yields what it can of a damaged file and raises only when nothing
            # at all decodes; either way the file is done (it is retried only if it changes).
            msg = f"{seg.uri}: {e}"
            log.warning("source %s: %s", seg.source, msg)
            st.error(msg)
            complete = not self.stop_event.is_set()
        finally:
            close = getattr(seg.frames, "close", None)
            if close is not None:
                close()
        if gap is not None:  # the segment ended while dropping: its stream may be ended already
            self._record_gap(gap, gap["last"])
            if not gap["ended"]:
                self.chunks.put(EndItem(ref, None, True, False))
            return
        tail = chunk_item(ref, buf, self.dt) if buf else None
        if ref.live:  # disconnect or shutdown: encode the tail, close the window (a gap follows)
            self.chunks.put(EndItem(ref, tail, True, False))
        elif complete:
            self.chunks.put(EndItem(ref, tail, True, True))
        else:  # shutdown mid-file: keep the carried state, resume from the checkpoint
            self.chunks.put(EndItem(ref, None, False, False))

    # ------------------------------------------------------------------ live backpressure

    def _put_live(self, item) -> bool:
        """Queue a live chunk; False (dropped) when the writer cannot take rows and the queue is
        full, rather than waiting while frames pile up."""
        while not self.chunks.offer(item, 0.25):
            if self.stop_event.is_set() or self.chunks.consumer_done.is_set():
                self.chunks.put(item)  # stopping: as before, no gap (the encoder drains)
                return True
            if self.backpressure.is_set():
                return False
        return True

    def _gap_over(self, ref: StreamRef, gap: dict) -> bool:
        """While dropping: end the interrupted stream as soon as the queue has room; the gap is
        over once that is done and the writer takes rows again (with room for a chunk)."""
        if not gap["ended"]:
            gap["ended"] = self.chunks.offer(EndItem(ref, None, True, False))
            if not gap["ended"]:
                return False
        return not self.backpressure.is_set() and self.chunks.has_room()

    def _record_gap(self, gap: dict, end: float):
        msg = (f"writer stalled: {gap['frames']} frames not indexed "
               f"({end - gap['start']:.1f} s)")
        self.st.event("gap", msg, start=gap["start"], end=end)
        self.st.add(frames_dropped=gap["frames"])
        log.warning("source %s: gap: %s", self.name, msg)
