"""Live stream source: RTSP, RTMP, HTTP(S)/HLS, UDP/SRT (anything libav opens), and file URLs.

How it stays up:

* Each connection runs in its own reader thread (open, demux, decode, sample), which hands
  frames to the consumer through a bounded queue. The consumer side never blocks on libav,
  so ``stop`` is honoured within ~0.2 s and a hung demux cannot hang the daemon.
* libav open/read timeouts (``av.open(timeout=(open, read))``) end most dead connections.
  For the rest (a server that keeps the socket open but sends nothing decodable, an
  interrupt callback that never fires) a watchdog on the consumer side abandons the reader
  when no frame was decoded for ``stall_timeout_s`` (or the open takes longer than
  ``open_timeout_s`` + 2 s). The reader is told to stop and closes its container itself the
  next time libav returns; we do not close a container from another thread while libav is
  inside it (use-after-free in libav), so an abandoned reader is a daemon thread that exits
  on its own when its read timeout fires.
* Reconnecting is our own loop with exponential backoff and jitter (``Backoff``), not
  ffmpeg's ``reconnect*`` options: we see every failure, count it, and report it. The
  backoff is reset after a connection that delivered frames for at least 5 s, so a
  flapping camera does not reconnect in a tight loop.
* After an outage the next Segment is preceded by ``SourceEvent(kind="gap")`` with
  ``start`` = time of the last frame before and ``end`` = first frame after, and a
  ``"reconnect"`` event. Failed attempts and lost connections are ``"error"`` events.

Sampling and time: every packet is decoded (never dropped before decode: inter-frame
codecs need them all), and decoded frames are sampled at ``fps`` on their presentation
time, like ``pystream.decode.decode_frames``; a backwards pts jump (encoder restart, MPEG-TS
wrap) restarts the grid instead of stalling. ``Frame.t`` is wall clock (``_WallClock``):
anchored to ``time.time()`` and advanced by pts, clamped never to run ahead of arrival and
re-anchored when it falls more than ``resync_s`` behind (pts jumps). The seconds libav
buffers while probing a live stream arrive at once when the connection starts; those frames
are held until the stream's own pace shows (one sample period, at most) and dated back from
there, instead of being squeezed into the instant they arrived. (Later bursts, e.g. an HLS
client fetching a few segments at once, get arrival times.) ``Frame.pts_s`` stays relative to
the connection start.

If the consumer falls behind, the queue (``queue_frames`` sampled frames) drops the oldest
frame rather than stopping the reader: for a live source, blocking would only move the loss
into the network buffers and make every later frame late. Drops are counted in status.

Decoding only what is needed (``decode``): at 1 sampled frame per second most decoded frames
are thrown away. With ``auto`` (the default) the reader measures the stream's keyframe
interval and, when keyframes come at least as often as samples are taken, tells the decoder to
skip every non-key frame (libav's ``skip_frame``: a decoder setting, so nothing is corrupted,
unlike dropping packets); it switches back to full decoding if the GOP grows (at the first
keyframe of the longer GOP: the samples of the GOP before it, never decoded, are lost). Keyframes-only
decoding runs in a decoder of its own that also skips H.264's in-loop deblocking filter: a
keyframe references no other frame, so the skipped filter cannot spread. It saves 13% of the
decode time of a file's keyframes (2-6% of a live reader's CPU, where waking up and cache
misses weigh more) for a mean difference of 0.3/255 after the resize to 224 px; with many
cameras decoding is about 40% of the box (benchmarks/cameras.py). ``keyframes`` forces it,
``all`` decodes everything. ``decode_threads`` (default 1) keeps many cameras from
spawning a frame-thread pool each. ``index_url`` names a low-resolution substream to index
(cameras offer one; we resize to the model's 224 px anyway) while ``url`` stays the stream
that rows point at, for playback and recording.

Priority (``decode_nice``, default 10): each camera's reader thread (and the libav threads it
starts) runs at that niceness. With dozens of cameras the readers wake up all the time and
would preempt the encoder's two compute threads in the middle of a parallel operation, which
then waits for both; decoding has slack (socket and libav buffers), the encoder serves every
camera. Measured on the project's 2-core box, 76 live 720p cameras, default config, two
interleaved pairs of 120 s runs: at niceness 0 neither held real time (p95 lag 6.3 s with the
queue growing; a collapse), at 10 both did (p95 4.4 and 5.6 s, queue shrinking), with the same
decode CPU (0.61-0.63 cores). 0 keeps the readers at the daemon's own priority.

File URLs (``file:///x.mp4`` or a plain path) are paced in real time (like ``ffmpeg -re``),
which simulates a camera; when the file ends the source ends (no reconnect).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Iterator

import av

from pystream.decode import Frame, PtsSampler
from pystream.sources import Segment, SourceEvent
from pystream.sources._util import Backoff, RateMeter
from pystream.sources.recorder import open_recorder

log = logging.getLogger(__name__)

_POLL_S = 0.2  # consumer poll period: bounds how late `stop` and stalls are noticed
_BURST_FRAMES, _BURST_S = 64, 30.0  # at most this much of a connect burst is held (_WallClock)
_EPS = 1e-6


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "file"


UDP_FIFO_PACKETS = 32768


def default_options(url: str) -> dict:
    """libav options we want unless the user overrides them."""
    s = _scheme(url)
    if s in ("rtsp", "rtsps"):
        # design.md: with vlc's server TCP-interleaved gave only a few frames.
        return {"rtsp_transport": "udp"}
    if s == "udp":
        # A slow consumer must not turn a full socket buffer into a fatal error. libav's UDP
        # ring buffer is fifo_size x 188 bytes and its pages stay resident once written: 1e6
        # (188 MB) made every camera's RSS creep up at its bitrate until the ring wrapped (half
        # an hour at 0.8 Mbit/s). 32768 (6 MB) holds 12 s at 4 Mbit/s.
        return {"overrun_nonfatal": "1", "fifo_size": str(UDP_FIFO_PACKETS)}
    return {}


def keyframe_decoder(template):
    """A decoder for keyframes alone, like ``template`` (the stream's): it skips non-key frames
    and the in-loop deblocking filter (no other frame references a keyframe decoded alone)."""
    dec = av.CodecContext.create(template.name, "r")
    if template.extradata:  # SPS/PPS of an mp4/RTSP stream (MPEG-TS carries them in band)
        dec.extradata = template.extradata
    dec.options = {"skip_loop_filter": "all"}
    dec.thread_type = template.thread_type
    dec.thread_count = template.thread_count
    dec.skip_frame = "NONKEY"
    return dec


def _lower_priority(nice: int) -> None:
    """This thread (and threads it starts: libav's UDP receiver) ``nice`` steps below the
    process's priority (Linux: niceness is per thread). Raising niceness needs no privilege;
    where it is not supported the reader runs at the process's priority."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except (AttributeError, OSError) as e:
        log.debug("could not lower the reader's priority: %s", e)


def _redact(url: str) -> str:
    """Hides a password in rtsp://user:pass@host/ URLs for logs and events."""
    if "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = url.split("://", 1)
        cred, host = rest.split("@", 1)
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


class _Reader(threading.Thread):
    """One connection: open, demux, decode everything, sample at fps, queue frames."""

    def __init__(self, src: "StreamSource"):
        super().__init__(name=f"pystream-src-{src.name}", daemon=True)
        self.src = src
        self.q: queue.Queue = queue.Queue(maxsize=src.queue_frames)
        self.abandoned = threading.Event()
        self.started_at = time.monotonic()
        self.opened_at: float | None = None
        self.last_decoded: float | None = None  # monotonic time of the last decoded frame
        self.dropped = 0
        self.resize_cpu_s = 0.0  # CPU seconds in libav's scale + RGB conversion (benchmarks)
        self.keyframes_only = False  # the decoder skips non-key frames (decode: auto|keyframes)
        self.gop_s: float | None = None  # measured keyframe interval
        self.decode_switches = 0  # decode: auto's changes of mode on this connection
        self.recorder = None  # pystream.sources.recorder.Recorder when `record:` is set

    def abandon(self) -> None:
        self.abandoned.set()

    def stalled(self, now: float) -> str | None:
        """Why the watchdog should give up on this reader, or None."""
        s = self.src
        if self.opened_at is None:
            if now - self.started_at > s.open_timeout_s + 2.0:
                return f"open did not finish within {s.open_timeout_s + 2.0:.0f} s"
            return None
        since = self.last_decoded or self.opened_at
        if now - since > s.stall_timeout_s:
            return f"no frame decoded for {s.stall_timeout_s:g} s (stalled)"
        return None

    def _put(self, item) -> None:
        while not self.abandoned.is_set():
            try:
                self.q.put_nowait(item)
                return
            except queue.Full:
                try:
                    self.q.get_nowait()  # drop the oldest: stay live
                    self.dropped += 1
                except queue.Empty:
                    pass

    def run(self) -> None:
        s = self.src
        container = None
        if s.decode_nice:
            _lower_priority(s.decode_nice)
        try:
            container = av.open(s.decode_url, mode="r", options=dict(s.options),
                                timeout=(s.open_timeout_s, s.read_timeout_s))
            if self.abandoned.is_set():
                return
            if not container.streams.video:
                kinds = sorted({st.type for st in container.streams}) or ["no streams"]
                self._put(("error", f"no video stream (found: {', '.join(kinds)})"))
                return
            stream = container.streams.video[0]
            if s.decode_threads != 1:
                stream.thread_type = "AUTO"
                stream.codec_context.thread_count = s.decode_threads  # 0 = libav's choice
            else:
                stream.codec_context.thread_count = 1
            if s.decode_mode == "keyframes":
                self.keyframes_only = True
            self.opened_at = time.monotonic()
            self.recorder = open_recorder(s.name, s.record, stream)
            self._put(("open", None))
            self._loop(container, stream)
        except (av.error.FFmpegError, OSError, EOFError) as e:
            if not self.abandoned.is_set():
                self._put(("error", _describe(e)))
        except Exception as e:  # never die silently: the consumer would only see a stall
            log.exception("source %s: reader crashed", s.name)
            self._put(("error", f"reader crashed: {e!r}"))
        finally:
            if self.recorder is not None:
                self.recorder.close()
            if container is not None:
                try:
                    container.close()
                except Exception:
                    pass

    def _loop(self, container, stream) -> None:
        s = self.src
        fps = s.fps
        sampler = PtsSampler(fps, rewind_s=1.0)
        clock = _WallClock(s.resync_s, live=not (s.finite or s.realtime))
        index = 0
        pace0 = time.monotonic() if s.realtime else None
        period = 1.0 / fps
        last_key = None  # pts (s) of the last keyframe packet, for decode: auto
        full = stream.codec_context
        key_decoder = None  # made at the first keyframe decoded in keyframes-only mode
        for packet in container.demux(stream):
            if self.abandoned.is_set():
                return
            if s.decode_mode == "auto" and packet.is_keyframe and packet.pts is not None:
                kt = float(packet.pts * packet.time_base)
                if last_key is not None and kt > last_key:
                    self.gop_s = kt - last_key
                    only = self.gop_s <= period * 1.05 + _EPS if not self.keyframes_only \
                        else self.gop_s <= period * 1.5
                    if only != self.keyframes_only:
                        self.keyframes_only = only
                        self.decode_switches += 1
                        if not only:  # back to every frame, from this keyframe on
                            full.flush_buffers()
                last_key = kt
            if self.recorder is not None:  # every packet, also those the decoder skips
                self.recorder.write(packet)
            if self.keyframes_only and not packet.is_keyframe:
                # The decoder would discard it (skip_frame NONKEY); not even parsing it saves a
                # third of the decode cost. Key frames decode on their own, so nothing breaks.
                continue
            if self.keyframes_only and key_decoder is None:
                key_decoder = keyframe_decoder(full)
            try:
                frames = (key_decoder if self.keyframes_only else full).decode(packet)
            except av.error.FFmpegError as e:  # corrupt packet: the decoder resyncs
                log.debug("source %s: skipping undecodable packet (%s)", s.name, e)
                continue
            for frame in frames:
                self.last_decoded = time.monotonic()
                pts_s = sampler.sample(frame)  # backwards pts jumps continue the grid
                if pts_s is None:
                    continue
                if pace0 is not None:  # file URL: behave like a camera
                    delay = pace0 + pts_s - time.monotonic()
                    if delay > 0 and self.abandoned.wait(delay):
                        return
                c0 = time.thread_time()
                rgb = frame.reformat(width=s._w, height=s._h, format="rgb24").to_ndarray()
                self.resize_cpu_s += time.thread_time() - c0
                for f in clock.add(Frame(index=index, pts_s=pts_s, t=0.0, rgb=rgb), time.time()):
                    self._put(("frame", f))
                index += 1
        for f in clock.flush(time.time()):
            self._put(("frame", f))
        self._put(("end", "stream ended (end of file or server closed it)"))


class _WallClock:
    """``Frame.t`` for one connection: wall clock anchored to the stream's pts.

    ``t = anchor + pts_s``, clamped never to run ahead of arrival and re-anchored when it falls
    more than ``resync_s`` behind (pts jumps). At a live connect, libav hands over the seconds
    it buffered while probing the stream all at once; stamped on arrival they would squeeze
    several seconds into one instant (windows of 0.3 s). So a live connection holds its first
    sampled frames while they arrive faster than real time (a burst: less than half their pts
    spacing apart) and, at the first frame that comes at the stream's pace, dates the held ones
    back from it. At most ``_BURST_FRAMES`` frames or ``_BURST_S`` seconds of pts are held."""

    def __init__(self, resync_s: float, live: bool):
        self.resync_s = resync_s
        self.anchor: float | None = None
        self.held: list | None = [] if live else None
        self.last: tuple | None = None  # (wall, pts_s) of the previous frame

    def add(self, f: Frame, now: float) -> list:
        if self.held is not None:
            paced = self.last is not None and now - self.last[0] >= 0.5 * (f.pts_s - self.last[1])
            self.last = (now, f.pts_s)
            span = f.pts_s - self.held[0].pts_s if self.held else 0.0
            if not paced and len(self.held) < _BURST_FRAMES and span <= _BURST_S:
                self.held.append(f)
                return []
            return self.flush(now, f)
        f.t = self._stamp(f.pts_s, now)
        return [f]

    def flush(self, now: float, last: Frame | None = None) -> list:
        """The held frames (and ``last``), dated back from ``last`` (or the newest held)."""
        out = (self.held or []) + ([last] if last is not None else [])
        self.held = None
        if not out:
            return []
        self.anchor = now - out[-1].pts_s
        t_prev = -float("inf")
        for f in out:
            f.t = t_prev = max(min(self.anchor + f.pts_s, now), t_prev)
        return out

    def _stamp(self, pts_s: float, now: float) -> float:
        a = self.anchor
        if a is None or a + pts_s > now or a + pts_s < now - self.resync_s:
            self.anchor = a = now - pts_s
        return a + pts_s


def _describe(e: BaseException) -> str:
    if isinstance(e, av.error.FFmpegError):
        return e.strerror or str(e)
    return str(e) or type(e).__name__


class StreamSource:
    """A live stream (see the module docstring for reconnect, stall and time rules).

    options: libav options for ``av.open`` (merged over ``default_options(url)``; e.g.
        ``{"rtsp_transport": "tcp"}``).
    realtime: pace reading to the stream's pts (default: True for files, False otherwise).
    """

    CONFIG_KEYS = ("fps", "size", "open_timeout_s", "read_timeout_s", "backoff_initial_s",
                   "backoff_max_s", "options", "stall_timeout_s", "resync_s", "queue_frames",
                   "realtime", "index_url", "decode", "decode_threads", "decode_nice", "record")
    DECODE_MODES = ("auto", "all", "keyframes")

    def __init__(self, name: str, url: str, fps: float = 1.0, size=224,
                 open_timeout_s: float = 10, read_timeout_s: float = 10,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30,
                 options: dict | None = None, stall_timeout_s: float = 15,
                 resync_s: float = 5.0, queue_frames: int = 256, realtime: bool | None = None,
                 index_url: str | None = None, decode: str = "auto", decode_threads: int = 1,
                 decode_nice: int = 10, record: dict | None = None):
        if not fps or fps <= 0:
            raise ValueError(f"source {name!r}: fps must be > 0, got {fps!r}")
        if decode not in self.DECODE_MODES:
            raise ValueError(f"source {name!r}: decode must be one of {', '.join(self.DECODE_MODES)}, "
                             f"got {decode!r}")
        if int(decode_threads) < 0:
            raise ValueError(f"source {name!r}: decode_threads must be >= 0, got {decode_threads!r}")
        if not 0 <= int(decode_nice) <= 19:
            raise ValueError(f"source {name!r}: decode_nice must be 0..19, got {decode_nice!r}")
        self.decode_mode = decode
        self.decode_threads = int(decode_threads)
        self.decode_nice = int(decode_nice)
        # `record:` settings (plain values); each reader builds its own Recorder from them.
        self.record = dict(record) if record else None
        if options is not None and not isinstance(options, dict):
            raise ValueError(f"source {name!r}: options must be a mapping of libav options")
        self.name = name
        self.url = os.fspath(url)
        self.index_url = os.fspath(index_url) if index_url else None
        self.decode_url = self.index_url or self.url  # what the reader opens
        self.fps = float(fps)
        self.size = size
        if size is None:
            self._w = self._h = None
        elif isinstance(size, int):
            self._w = self._h = int(size)
        else:
            self._h, self._w = (int(v) for v in size)
        self.open_timeout_s = float(open_timeout_s)
        self.read_timeout_s = float(read_timeout_s)
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self.options = {**default_options(self.decode_url),
                        **{k: str(v) for k, v in (options or {}).items()}}
        # A stall shorter than the sampling period would fire between sampled frames.
        self.stall_timeout_s = float(stall_timeout_s)
        self.resync_s = float(resync_s)
        self.queue_frames = max(int(queue_frames), 1)
        self.finite = _scheme(self.decode_url) == "file"
        self.realtime = self.finite if realtime is None else bool(realtime)
        self._display = _redact(self.url)
        self._binds_locally = _scheme(self.decode_url) in ("udp", "rtp")

        self._lock = threading.Lock()
        self._state = "idle"
        self._last_error: str | None = None
        self._reconnects = 0       # connection attempts after the first one
        self._connects = 0         # successful connections (first frame received)
        self._failures = 0         # failed attempts + lost connections
        self._frames = 0
        self._dropped = 0
        self._decode_switches = 0  # of the connections that ended (decode: auto)
        self._last_t: float | None = None
        self._backoff_s = 0.0
        self._down_since: float | None = None
        self._rate = RateMeter()
        self._reader: _Reader | None = None

    # -- status -------------------------------------------------------------------------
    def _set(self, **kw) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self, "_" + k, v)

    def status(self) -> dict:
        with self._lock:
            r = self._reader
            dropped = self._dropped + (r.dropped if r is not None else 0)
            return {
                "state": self._state,
                "last_error": self._last_error,
                "reconnects": self._reconnects,
                "connects": self._connects,
                "failures": self._failures,
                "files_seen": 0,
                "frames": self._frames,
                "fps": self._rate.rate(),
                "lag_s": (round(time.time() - self._last_t, 3) if self._last_t is not None else None),
                "dropped": dropped,
                "backoff_s": round(self._backoff_s, 3),
                "down_since": self._down_since,
                "url": self._display,
                "index_url": _redact(self.index_url) if self.index_url else None,
                "decode": ("keyframes" if r is not None and r.keyframes_only else "all"),
                "gop_s": (round(r.gop_s, 3) if r is not None and r.gop_s else None),
                "decode_switches": self._decode_switches + (r.decode_switches if r is not None else 0),
                "resize_cpu_s": round(r.resize_cpu_s, 3) if r is not None else 0.0,
            }

    # -- main loop ----------------------------------------------------------------------
    def segments(self, stop: threading.Event) -> Iterator[Segment | SourceEvent]:
        backoff = Backoff(self.backoff_initial_s, self.backoff_max_s)
        last_frame_t: float | None = None  # t of the last frame of the previous connection
        attempt = 0
        prev: _Reader | None = None
        try:
            while not stop.is_set():
                attempt += 1
                if attempt > 1:
                    with self._lock:
                        self._reconnects += 1
                self._set(state="connecting")
                if prev is not None and self._binds_locally:
                    # udp:// binds the local port: wait for an abandoned reader to let go of
                    # it (its read timeout ends it) instead of failing with EADDRINUSE.
                    deadline = time.monotonic() + self.read_timeout_s + 2.0
                    while prev.is_alive() and time.monotonic() < deadline and not stop.wait(_POLL_S):
                        pass
                    if stop.is_set():
                        return
                reader = prev = _Reader(self)
                with self._lock:
                    self._reader = reader
                reader.start()
                kind, val = self._first_frame(reader, stop)
                if stop.is_set():
                    reader.abandon()
                    return
                if kind != "frame":
                    reader.abandon()
                    if kind == "end" and self.finite:
                        self._set(state="idle")
                        return
                    delay = backoff.next_delay()
                    msg = f"{self._display}: cannot connect ({val}); retry {backoff.failures} in {delay:.1f} s"
                    yield self._fail(msg, delay)
                    if stop.wait(delay):
                        return
                    continue

                # Connected: report the outage, then hand over the frames.
                first: Frame = val
                with self._lock:
                    self._connects += 1
                    self._down_since = None
                    self._backoff_s = 0.0
                if last_frame_t is not None:
                    down = first.t - last_frame_t
                    yield SourceEvent(self.name, "reconnect", self._display,
                                      f"{self._display}: reconnected after {backoff.failures} failed attempt(s); "
                                      f"down {down:.1f} s")
                    yield SourceEvent(self.name, "gap", self._display,
                                      f"{self._display}: no frames for {down:.1f} s",
                                      start=last_frame_t, end=first.t)
                connected_at = time.monotonic()
                end = {"reason": None, "message": None}
                self._set(state="running")
                yield Segment(source=self.name, uri=self._display, stream_id=self.name, live=True,
                              start_time=first.t, frames=self._frames_of(reader, first, stop, end),
                              file_key=None)
                # The consumer is back: the connection ended (or it stopped iterating).
                reader.abandon()
                with self._lock:
                    self._dropped += reader.dropped
                    self._decode_switches += reader.decode_switches
                    self._reader = None
                    if self._last_t is not None:
                        last_frame_t = self._last_t
                if stop.is_set():
                    return
                if end["reason"] == "end" and self.finite:
                    self._set(state="idle")
                    return
                if time.monotonic() - connected_at >= 5.0:
                    backoff.reset()
                delay = backoff.next_delay()
                why = end.get("message") or "consumer stopped reading"
                yield self._fail(f"{self._display}: stream lost ({why}); reconnecting in {delay:.1f} s", delay)
                if stop.wait(delay):
                    return
        finally:
            r = self._reader
            if r is not None:
                r.abandon()
            with self._lock:
                self._reader = None
                self._state = "idle"

    def _fail(self, msg: str, delay: float) -> SourceEvent:
        log.warning("source %s: %s", self.name, msg)
        with self._lock:
            self._state = "down"
            self._last_error = msg
            self._failures += 1
            self._backoff_s = delay
            if self._down_since is None:
                self._down_since = time.time()
        return SourceEvent(self.name, "error", self._display, msg)

    def _first_frame(self, reader: _Reader, stop: threading.Event):
        """Waits for the reader's first frame: ("frame", Frame) or ("error"|"end", message)."""
        while not stop.is_set():
            try:
                kind, val = reader.q.get(timeout=_POLL_S)
            except queue.Empty:
                why = reader.stalled(time.monotonic())
                if why:
                    return "error", why
                if not reader.is_alive() and reader.q.empty():
                    return "error", "reader exited without a frame"
                continue
            if kind == "open":
                continue
            if kind == "frame":
                self._count(val)
            return kind, val
        return "stopped", None

    def _count(self, f: Frame) -> None:
        with self._lock:
            self._frames += 1
            self._last_t = f.t
        self._rate.tick()

    def _frames_of(self, reader: _Reader, first: Frame, stop: threading.Event, end: dict) -> Iterator[Frame]:
        end["message"] = None
        try:
            yield first
            while True:
                if stop.is_set():
                    end["reason"], end["message"] = "stopped", "stopping"
                    return
                try:
                    kind, val = reader.q.get(timeout=_POLL_S)
                except queue.Empty:
                    why = reader.stalled(time.monotonic())
                    if why is None and not reader.is_alive() and reader.q.empty():
                        why = "reader exited"
                    if why:
                        end["reason"], end["message"] = "stall", why
                        return
                    continue
                if kind == "frame":
                    self._count(val)
                    yield val
                elif kind in ("error", "end"):
                    end["reason"], end["message"] = kind, val
                    return
        finally:
            reader.abandon()
