"""The indexing engine: sources -> chunks -> one batched encoder -> one writer -> checkpoints.

    from pystream import Indexer, load_config

    config = load_config("config.yaml")   # or parse_config({...}); see config/default.yaml
    indexer = Indexer(config)             # loads the model, opens archive + checkpoints
    indexer.start()                       # sources run until stop() (SIGTERM) or exhausted
    print(indexer.status()["sources"])    # what `pystream status` shows
    indexer.stop()
    indexer.wait()                        # drain, commit, checkpoint; returns an exit code

Threads and why:
- one thread per source pulls Segments (decoding happens there, in libav, off the GIL) and cuts
  each stream's frames into k-frame chunks (k = encoder.chunk_frames) onto a bounded queue, so a
  slow encoder pushes back on decoders instead of buffering unboundedly;
- ONE encoder thread takes chunks of all sources from the queue, up to max_batch_chunks but
  waiting at most max_wait_s, so many cameras share one batched forward and a quiet camera is
  never starved; it ends a stream with finish() at the end of a file or a live disconnect, so a
  window never spans a gap;
- ONE writer thread (pystream.store.ClipWriter) batches rows into LanceDB.

Exactly once. Row ids are deterministic, and the writer upserts on them, so replaying is always
harmless; checkpoints make replay rare and bounded. After every encode batch the encoder thread
records a marker: the number of rows enqueued so far, the encoder's carried state and every open
stream's position (next frame to encode). When the writer's on_commit hook reports that all rows
up to a marker are in LanceDB, that marker is checkpointed (one SQLite transaction), and files
finished in it are marked done. On restart the carried state is restored and a file resumes at
its next frame with its carried tokens, so neither rows nor work are repeated beyond one commit.
Live streams are not resumed mid-window: they restart live and the downtime is recorded as a gap.

Shutdown (SIGTERM): sources stop; chunks already queued are encoded; live streams are finished
(their tail is encoded); files cut short are NOT finished (their checkpoint resumes them); the
writer flushes; the last marker is checkpointed.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np

from .checkpoint import CheckpointStore
from .config import Config
from .store import ClipRow, ClipWriter, make_thumbnail, portable_model_ref
from .model.streaming import Chunk, Emission, StreamingEncoder

log = logging.getLogger("pystream.pipeline")

ENCODER_KEY = "__encoder__"  # checkpoint entry holding the carried state + open streams
MAX_GAPS_KEPT = 20


def load_video_model(cfg: Config):
    """The configured CLIP with its TempMe schedule (ModelLoadError says what is wrong)."""
    import torch

    from .model.tempme import ClipVideoModel

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = ClipVideoModel.from_pretrained(cfg.model, schedule=cfg.merge.schedule_dict())
    return model.to(cfg.device)


# ----------------------------------------------------------------------------- queue items

@dataclass
class _StreamRef:
    key: str  # encoder stream key: stable across restarts for files
    source: str
    uri: str
    live: bool
    file_key: Optional[tuple]


@dataclass
class _ChunkItem:
    ref: _StreamRef
    chunk: Chunk
    rgb: List[np.ndarray]  # the chunk's frames, for thumbnails
    queued: float = field(default_factory=time.monotonic)


@dataclass
class _EndItem:
    ref: _StreamRef
    tail: Optional[_ChunkItem]  # last partial chunk, or None
    finish: bool  # False: a file cut short by shutdown, keep its state for resume
    mark_done: bool  # a file read to its end (or unreadable): never index it again
    drop: bool = False  # forget the stream's carried state (its file changed since)


@dataclass
class _Marker:
    target_rows: int  # checkpoint once this many rows are committed
    streams: Dict[str, dict]  # open streams' positions
    state: Optional[bytes]  # carried encoder state of those streams
    files_done: List[tuple]  # (source, path, size, mtime)
    source_progress: Dict[str, dict]


# ----------------------------------------------------------------------------- stats

class SourceStats:
    """Per-source numbers for `pystream status`, /status and /metrics. Thread-safe."""

    def __init__(self, name: str, kind: str):
        self.name, self.kind = name, kind
        self._lock = threading.Lock()
        self.state = "starting"
        self.uri: str | None = None
        self.frames = 0
        self.chunks = 0
        self.rows = 0
        self.errors = 0
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

    def add_frames(self, n: int, t: float):
        with self._lock:
            self.frames += n
            self.last_frame_t = t
            now = time.monotonic()
            self._rate.append((now, self.frames))
            while self._rate and now - self._rate[0][0] > 10.0:
                self._rate.popleft()

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

    def snapshot(self, live: bool) -> dict:
        with self._lock:
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
                        frames=self.frames, chunks=self.chunks, rows=self.rows, fps=round(fps, 3),
                        lag_s=None if lag is None else round(lag, 3),
                        last_frame_t=self.last_frame_t, last_indexed_end=self.last_indexed_end,
                        errors=self.errors, last_error=self.last_error,
                        last_error_time=self.last_error_time, files_done=self.files_done,
                        files_skipped=self.files_skipped, gaps=list(self.gaps),
                        events=list(self.events)[-5:])


# ----------------------------------------------------------------------------- the engine

class Indexer:
    """Runs the configured sources into the archive. See the module docstring."""

    def __init__(self, config: Config, *, model=None, sources: Iterable | None = None,
                 on_rows: Callable[[List[ClipRow]], None] | None = None):
        self.cfg = config
        self.model = model if model is not None else load_video_model(config)
        self.encoder = StreamingEncoder(self.model, schedule=config.merge.schedule_dict(),
                                        hop_chunks=config.hop_chunks,
                                        coarse_windows=config.coarse_windows,
                                        precision=config.precision,
                                        reuse=config.reuse.settings())
        self.k = self.encoder.chunk_frames
        self.window_frames = self.encoder.frames_per_window
        self.model_id = portable_model_ref(getattr(self.model, "model_id", None) or config.model)
        os.makedirs(config.state_dir, exist_ok=True)
        self.checkpoints = CheckpointStore(config.state_dir)
        self.stop_event = threading.Event()
        self.on_rows = on_rows  # test/benchmark hook: rows as they are committed
        self.batch_latency_observer: Callable[[float, int], None] | None = None

        self.sources = list(sources) if sources is not None else self._make_sources()
        self.stats: Dict[str, SourceStats] = {}
        self._live_sources: set = set()  # sources that produced live segments
        for s in self.sources:
            kind = getattr(s, "kind", None) or type(s).__name__
            self.stats.setdefault(s.name, SourceStats(s.name, str(kind)))

        self._queue: "queue.Queue" = queue.Queue(maxsize=config.batching.queue_chunks)
        self._threads: List[threading.Thread] = []
        self._producers = 0
        self._producers_lock = threading.Lock()
        self._encoder_done = threading.Event()
        self._fatal: BaseException | None = None

        # Encoder-thread state.
        self._open: Dict[str, _StreamRef] = {}  # streams with carried state in the encoder
        self._next_frame: Dict[str, int] = {}  # per stream: first frame not yet encoded
        self._recent: Dict[str, collections.OrderedDict] = {}  # frame index -> rgb (thumbnails)
        self._last_thumb: Dict[str, bytes] = {}
        self._broken: set = set()  # streams whose encoding failed; ignored until their end
        self._files_done_pending: List[tuple] = []
        self._source_end: Dict[str, float] = {}

        # Commit bookkeeping (writer thread <-> encoder thread).
        self._marker_lock = threading.Lock()
        self._markers: collections.deque = collections.deque()
        self._rows_enqueued = 0
        self._rows_committed = 0
        self.encode_batches = 0
        self.last_batch_s = 0.0
        self.stage_s: collections.Counter = collections.Counter()  # encoder thread's seconds

        self._restore()
        w = config.writer
        self.writer = ClipWriter(config.archive, config.table, dim=self.model.dim,
                                 model_id=self.model_id, batch_rows=w.batch_rows,
                                 flush_interval_s=w.flush_interval_s,
                                 optimize_every_s=w.optimize_interval_s,
                                 index_min_rows=w.index_min_rows, on_commit=self._on_commit)
        self.started = time.time()

    # ------------------------------------------------------------------ setup

    def _make_sources(self):
        from .sources import make_source  # written against the sources contract

        out = []
        for sc in self.cfg.enabled_sources():
            d = {k: v for k, v in sc.model_dump(exclude={"enabled"}).items() if v is not None}
            d["fps"] = self.cfg.source_fps(sc)
            d["size"] = self.model.image_size  # the decoder resizes to the model's input in libav
            extra = {}
            if sc.type == "folder":
                extra["is_done"] = (lambda path, size, mtime, _n=sc.name:
                                    self.checkpoints.is_file_done(_n, path, size, mtime))
            out.append(make_source(d, **extra))
        return out

    def _restore(self):
        """Load the carried state of files cut short; record live downtime as gaps."""
        progress, state = self.checkpoints.get_with_state(ENCODER_KEY)
        self._resume: Dict[str, dict] = {}
        if progress and state:
            try:
                self.encoder.load_state_bytes(state)
            except Exception as e:  # a state from another model/version: start those files over
                log.warning("cannot restore encoder state (%s); unfinished files restart", e)
                progress = {}
            for key, info in (progress or {}).get("streams", {}).items():
                if info.get("live"):
                    self.encoder.drop(key)  # live restarts live; windows never span the gap
                    continue
                fk = info.get("file_key")
                if fk and self.checkpoints.is_file_done(info["source"], *fk):
                    # Killed between marking the file done and the next encoder checkpoint:
                    # its rows are all committed and the source will skip it, so nothing would
                    # ever finish this stream.
                    self.encoder.drop(key)
                    continue
                self._resume[key] = info
                # Open from the start, so later checkpoints keep carrying it until it resumes.
                self._open[key] = _StreamRef(key, info["source"], info["uri"], False,
                                             tuple(info["file_key"]) if info.get("file_key") else None)
                self._next_frame[key] = int(info["next_frame"])
            log.info("restored %d unfinished file(s) from checkpoint", len(self._resume))
        now = time.time()
        for name, st in self.stats.items():
            p = self.checkpoints.get(name) or {}
            st.rows = int(p.get("rows", 0))
            st.files_done = int(p.get("files_done", 0))
            if p.get("live"):
                self._live_sources.add(name)
            if p.get("live") and p.get("last_end") is not None:
                st.last_indexed_end = p["last_end"]
                st.event("gap", "daemon was down", start=p["last_end"], end=now)
                log.info("source %s: gap %.1f s while the daemon was down", name, now - p["last_end"])

    # ------------------------------------------------------------------ lifecycle

    def start(self):
        for src in self.sources:
            with self._producers_lock:
                self._producers += 1
            t = threading.Thread(target=self._source_loop, args=(src,), daemon=True,
                                 name=f"pystream-source-{src.name}")
            t.start()
            self._threads.append(t)
        enc = threading.Thread(target=self._encoder_loop, daemon=True, name="pystream-encoder")
        enc.start()
        self._encoder_thread = enc

    def stop(self):
        """Ask everything to wind down (safe from a signal handler)."""
        self.stop_event.set()

    def wait(self, source_timeout: float = 15.0, flush_timeout: float = 60.0) -> int:
        """Block until stopped or every source is exhausted; drain, flush, checkpoint.
        Returns a process exit code."""
        while not self._encoder_done.wait(0.2):
            if self._fatal is not None:
                break
        # The encoder exits only when the producers are gone and the queue is empty; if a stop
        # was requested, give sources `source_timeout` to notice (handled in _encoder_loop).
        self._encoder_thread.join()
        code = 0
        try:
            self.writer.close(optimize=not self.stop_event.is_set(), timeout=flush_timeout)
        except Exception as e:
            log.error("writer did not flush cleanly: %s", e)
            code = 1
        self._apply_markers()
        self.checkpoints.close()
        if self._fatal is not None:
            log.error("indexer stopped on an internal error: %r", self._fatal)
            code = 1
        return code

    def run(self) -> int:
        self.start()
        return self.wait()

    # ------------------------------------------------------------------ source threads

    def _source_loop(self, src):
        st = self.stats[src.name]
        try:
            st.update(state="running")
            for item in src.segments(self.stop_event):
                if self.stop_event.is_set():
                    break
                if hasattr(item, "frames"):
                    self._run_segment(src, item, st)
                else:
                    self._source_event(item, st)
            st.update(state="stopped" if self.stop_event.is_set() else "finished")
        except Exception as e:  # a broken source must not take the others down
            log.exception("source %s failed", src.name)
            st.error(f"{type(e).__name__}: {e}")
            st.update(state="error")
        finally:
            with self._producers_lock:
                self._producers -= 1

    def _source_event(self, ev, st: SourceStats):
        kind = getattr(ev, "kind", "event")
        extra = {k: getattr(ev, k, None) for k in ("uri", "start", "end")}
        st.event(kind, getattr(ev, "message", ""), **extra)
        if kind in ("error", "file_skipped"):
            msg = ev.message if ev.uri and ev.uri in ev.message else f"{ev.uri}: {ev.message}"
            st.error(msg)
            if kind == "file_skipped":
                st.update(files_skipped=st.files_skipped + 1)
            log.warning("source %s: %s: %s", st.name, kind, msg)
        elif kind == "reconnect":
            st.update(state="reconnecting")
            log.info("source %s: reconnecting to %s: %s", st.name, ev.uri, ev.message)
        else:
            log.info("source %s: %s %s %s", st.name, kind, ev.uri, ev.message)

    def _run_segment(self, src, seg, st: SourceStats):
        live = bool(seg.live)
        name = src.name  # rows and stats are keyed by the configured source name
        fk = tuple(seg.file_key) if getattr(seg, "file_key", None) else None
        if live:
            self._live_sources.add(name)
            key = f"live:{name}|{seg.stream_id}"
        else:
            key = f"file:{name}|{seg.uri}"
            if fk is not None and self.checkpoints.is_file_done(name, *fk):
                st.update(files_skipped=st.files_skipped + 1)
                return  # indexed before (restart, rescan, or a second path to it)
        ref = _StreamRef(key, name, seg.uri, live, fk)
        skip = self._resume_point(ref)
        st.update(state="running", uri=seg.uri)
        dt = 1.0 / self._fps_of(src)
        buf: List = []
        complete = False
        try:
            for f in seg.frames:
                if self.stop_event.is_set():
                    break
                if f.index < skip:
                    continue  # already encoded before the restart (its tokens are carried)
                st.add_frames(1, f.t)
                buf.append(f)
                if len(buf) == self.k:
                    self._put(_chunk_item(ref, buf, dt))
                    st.update(chunks=st.chunks + 1)
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
        if live:  # disconnect or shutdown: encode the tail, close the window (a gap follows)
            self._put(_EndItem(ref, _chunk_item(ref, buf, dt) if buf else None, True, False))
        elif complete:
            self._put(_EndItem(ref, _chunk_item(ref, buf, dt) if buf else None, True, True))
        else:  # shutdown mid-file: keep the carried state, resume from the checkpoint
            self._put(_EndItem(ref, None, False, False))

    def _resume_point(self, ref: _StreamRef) -> int:
        info = self._resume.pop(ref.key, None)
        if info is None:
            return 0
        same = ref.file_key is not None and list(ref.file_key) == list(info.get("file_key") or [])
        if not same:  # the file changed since: start it over
            self._put(_EndItem(ref, None, False, False, drop=True))
            return 0
        log.info("resuming %s at frame %d", ref.uri, info["next_frame"])
        return int(info["next_frame"])

    def _fps_of(self, src) -> float:
        fps = getattr(src, "fps", None)
        if fps:
            return float(fps)
        for sc in self.cfg.sources:
            if sc.name == src.name:
                return self.cfg.source_fps(sc)
        return self.cfg.sample_fps

    def _put(self, item):
        # Blocks while the encoder is behind (backpressure); wakes up on shutdown too.
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                if self._encoder_done.is_set():
                    return

    # ------------------------------------------------------------------ encoder thread

    def _encoder_loop(self):
        try:
            stop_seen = None
            while True:
                items = self._next_batch()
                if items:
                    self._process(items)
                    continue
                with self._producers_lock:
                    producers = self._producers
                if producers == 0 and self._queue.empty():
                    break
                if self.stop_event.is_set():
                    # Sources get a while to notice the stop (a demux may be blocked in a read).
                    stop_seen = stop_seen or time.monotonic()
                    if time.monotonic() - stop_seen > 15.0 and self._queue.empty():
                        log.warning("%d source(s) did not stop in time; not waiting", producers)
                        break
        except BaseException as e:  # noqa: BLE001 - reported by wait()
            log.exception("encoder thread failed")
            self._fatal = e
        finally:
            self._encoder_done.set()

    def _next_batch(self) -> list:
        """Up to max_batch_chunks chunks, waiting at most max_wait_s after the first one."""
        b = self.cfg.batching
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        items = [first]
        n = 1 if isinstance(first, _ChunkItem) else 0
        deadline = time.monotonic() + b.max_wait_s
        while n < b.max_batch_chunks:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            items.append(item)
            n += isinstance(item, _ChunkItem)
        return items

    def _process(self, items: list):
        t0 = time.perf_counter()
        rows: List[ClipRow] = []
        pending: List[_ChunkItem] = []
        n_chunks = 0
        for it in items:
            if isinstance(it, _ChunkItem):
                pending.append(it)
                n_chunks += 1
                continue
            if any(p.ref.key == it.ref.key for p in pending):
                rows += self._rows(self._encode(pending))  # its chunks come before its end
                pending = []
            rows += self._end(it)
        rows += self._rows(self._encode(pending))
        t1 = time.perf_counter()
        self._enqueue(rows)
        self.stage_s["enqueue"] += time.perf_counter() - t1
        dt = time.perf_counter() - t0
        self.encode_batches += 1
        self.last_batch_s = dt
        if self.batch_latency_observer is not None and n_chunks:
            self.batch_latency_observer(dt, n_chunks)

    def _encode(self, items: List[_ChunkItem]) -> List[tuple]:
        items = [it for it in items if it.ref.key not in self._broken]
        if not items:
            return []
        for it in items:
            self._open[it.ref.key] = it.ref
            self._remember_frames(it)
        try:
            t0 = time.perf_counter()
            out = self.encoder.encode([it.chunk for it in items])
            self.stage_s["encode"] += time.perf_counter() - t0
        except Exception:
            if len({it.ref.key for it in items}) == 1:
                self._fail_stream(items[0].ref, traceback.format_exc(limit=1))
                return []
            # Find the stream at fault: encode each stream on its own, in order.
            out = []
            by_stream: Dict[str, List[_ChunkItem]] = collections.OrderedDict()
            for it in items:
                by_stream.setdefault(it.ref.key, []).append(it)
            for group in by_stream.values():
                out_refs = self._encode(group)
                out += [e for _, e in out_refs]
        for it in items:
            if it.ref.key not in self._broken:
                self._next_frame[it.ref.key] = it.chunk.indices()[-1] + 1
        refs = {it.ref.key: it.ref for it in items}
        return [(refs[e.stream], e) for e in out if e.stream in refs]

    def _fail_stream(self, ref: _StreamRef, why: str):
        msg = f"{ref.uri}: encoding failed: {why.strip().splitlines()[-1]}"
        log.error("source %s: %s", ref.source, msg)
        self.stats[ref.source].error(msg)
        self._broken.add(ref.key)
        self.encoder.drop(ref.key)

    def _end(self, it: _EndItem) -> List[ClipRow]:
        ref, key = it.ref, it.ref.key
        out: List[tuple] = []
        if it.drop or not it.finish:
            if it.drop:
                self._forget(key)
            return out  # cut short by shutdown: carried state stays for the checkpoint
        # An encoding failure is our fault, not the file's: leave it undone so a restart
        # (after a fix) indexes it; a file that decodes badly is done (decode errors above).
        failed = key in self._broken
        if not failed:
            if it.tail is not None:
                self._remember_frames(it.tail)
            try:
                tail = it.tail.chunk if it.tail is not None else None
                out = self._rows([(ref, e) for e in self.encoder.finish(key, tail)])
            except Exception:
                self._fail_stream(ref, traceback.format_exc(limit=1))
        failed = failed or key in self._broken
        self._forget(key)
        if it.mark_done and ref.file_key is not None and not failed:
            self._files_done_pending.append((ref.source, *ref.file_key))
        return out

    def _forget(self, key: str):
        self.encoder.drop(key)
        for d in (self._open, self._next_frame, self._recent, self._last_thumb):
            d.pop(key, None)
        self._broken.discard(key)

    def _remember_frames(self, it: _ChunkItem):
        recent = self._recent.setdefault(it.ref.key, collections.OrderedDict())
        for idx, rgb in zip(it.chunk.indices(), it.rgb):
            recent[idx] = rgb
        while len(recent) > self.window_frames + self.k:
            recent.popitem(last=False)

    def _rows(self, emissions: List[tuple]) -> List[ClipRow]:
        # Right away: thumbnails need the stream's recent frames, which _end forgets.
        t0 = time.perf_counter()
        rows = [self._row(ref, e) for ref, e in emissions]
        self.stage_s["rows"] += time.perf_counter() - t0
        return rows

    def _row(self, ref: _StreamRef, e: Emission) -> ClipRow:
        if e.level == 0:
            thumb = self._thumbnail(ref.key, (e.first_frame + e.last_frame) // 2)
            if thumb is not None:
                self._last_thumb[ref.key] = thumb
        else:  # coarse: the representative of its last window (frames further back are gone)
            thumb = self._last_thumb.get(ref.key)
        end = self._source_end.get(ref.source)
        self._source_end[ref.source] = e.end if end is None else max(end, e.end)
        return ClipRow(source=ref.source, uri=ref.uri, level=e.level, start=e.start, end=e.end,
                       vector=e.vector, thumbnail=thumb, model=self.model_id,
                       recording=not ref.live)

    def _thumbnail(self, key: str, index: int) -> bytes | None:
        recent = self._recent.get(key)
        if not recent:
            return None
        if index not in recent:  # before a resume point: the nearest frame we still have
            index = min(recent, key=lambda i: abs(i - index))
        try:
            return make_thumbnail(recent[index])
        except Exception:
            return None

    # ------------------------------------------------------------------ commit + checkpoints

    def _enqueue(self, rows: List[ClipRow]):
        streams = {}
        for key, ref in self._open.items():
            if key in self._next_frame and self.encoder.progress.get(key) is not None:
                streams[key] = dict(source=ref.source, uri=ref.uri, live=ref.live,
                                    file_key=list(ref.file_key) if ref.file_key else None,
                                    next_frame=self._next_frame[key])
        # Only files resume with their carried state; live-only encoders need no snapshot.
        need_state = any(not s["live"] for s in streams.values())
        state = self.encoder.state_bytes() if need_state else None
        with self._marker_lock:
            rows = self._write(rows)
            self._rows_enqueued += len(rows)
            self._markers.append(_Marker(self._rows_enqueued, streams, state,
                                         self._files_done_pending, dict(self._source_end)))
            self._files_done_pending = []
        if not rows:
            self._apply_markers()  # nothing to wait for if everything before is committed

    def _write(self, rows: List[ClipRow]) -> List[ClipRow]:
        if not rows:
            return rows
        try:
            self.writer.write(rows)
            return rows
        except ValueError:  # e.g. a NaN vector: drop that row, keep the others
            good = []
            for r in rows:
                try:
                    self.writer.write([r])
                    good.append(r)
                except ValueError as e:
                    log.error("source %s: row %s rejected: %s", r.source, r.row_id(), e)
                    self.stats[r.source].error(f"row rejected: {e}")
            return good

    def _on_commit(self, batch: List[ClipRow]):
        """Writer thread, after `batch` is in LanceDB."""
        per_source = collections.Counter(r.source for r in batch)
        for name, n in per_source.items():
            st = self.stats.get(name)
            if st is not None:
                st.update(rows=st.rows + n)
        for r in batch:
            st = self.stats.get(r.source)
            if st is not None and r.level == 0 and (st.last_indexed_end or 0) < r.end:
                st.update(last_indexed_end=r.end)
        with self._marker_lock:
            self._rows_committed += len(batch)
        if self.on_rows is not None:
            self.on_rows(batch)
        self._apply_markers()

    def _apply_markers(self):
        """Checkpoint the newest marker whose rows are all committed (in order)."""
        with self._marker_lock:
            ready = []
            while self._markers and self._markers[0].target_rows <= self._rows_committed:
                ready.append(self._markers.popleft())
            if not ready:
                return
            # Files first: a crash between the two writes replays the file (idempotent).
            for m in ready:
                for source, path, size, mtime in m.files_done:
                    self.checkpoints.mark_file_done(source, path, size, mtime)
                    st = self.stats.get(source)
                    if st is not None:
                        st.update(files_done=st.files_done + 1)
            last = ready[-1]
            self.checkpoints.put(ENCODER_KEY, {"streams": last.streams, "time": time.time()},
                                 last.state)
            for name, end in last.source_progress.items():
                st = self.stats.get(name)
                self.checkpoints.put(name, {"last_end": end, "live": name in self._live_sources,
                                            "rows": st.rows if st else 0,
                                            "files_done": st.files_done if st else 0})

    # ------------------------------------------------------------------ status

    def status(self) -> dict:
        sources = {}
        by_name = {getattr(s, "name", None): s for s in self.sources}
        reused = collections.defaultdict(list)
        for key, ref in list(self._open.items()):
            reused[ref.source].append(self.encoder.reused_share(key))
        for name, st in self.stats.items():
            snap = st.snapshot(name in self._live_sources)
            _connection_state(snap, by_name.get(name))
            r = reused.get(name)
            snap["reused"] = round(sum(r) / len(r), 4) if r else None  # share of patches reused
            sources[name] = snap
        return dict(
            pid=os.getpid(), started=self.started, updated=time.time(),
            archive=self.cfg.archive, model=self.model_id,
            running=not self._encoder_done.is_set(), stopping=self.stop_event.is_set(),
            encoder=dict(batches=self.encode_batches, last_batch_s=round(self.last_batch_s, 4),
                         queued_chunks=self._queue.qsize(), open_streams=len(self._open),
                         precision=self.encoder.precision,
                         reuse_threshold=(self.encoder.reuse.settings.threshold
                                          if self.encoder.reuse is not None else 0.0),
                         stage_s={k: round(v, 3) for k, v in self.stage_s.items()}),
            writer=self.writer.stats(),
            sources=sources,
        )


def _connection_state(snap: dict, src) -> None:
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


def _chunk_item(ref: _StreamRef, frames: list, dt: float) -> _ChunkItem:
    rgb = [f.rgb for f in frames]
    chunk = Chunk(ref.key, np.stack(rgb), [f.t for f in frames], frames[0].index, dt,
                  [f.index for f in frames])
    return _ChunkItem(ref, chunk, rgb)
