"""Video for the page: which files may be served, and spans of them a browser can play.

Only files under configured sources' roots are served: a folder source's folder (files matching
its patterns), a file source's file, a recorded stream's segment folder. A request path is
refused (400) when it is absolute, has a `..` or `.` part, a backslash, a NUL, or an encoded
separator / dot / NUL in the raw URL; it is then joined to the root and resolved (symlinks
included), and must still lie under the root (404 otherwise, as for a missing file).

MP4/WebM/M4V files whose codec a browser plays (H.264, VP8, VP9, AV1) are served as they are,
with range requests. Anything else (MPEG-TS, Matroska, recorded segments, codecs a browser
cannot play) is served as a span: ``write_span`` copies the packets from the keyframe at or
before the span's start to its end into an MP4 (remux, no re-encoding), or re-encodes that span
to H.264 when the codec is not one a browser plays. Spans are cached on disk (bounded).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av

BROWSER_CODECS = {"h264", "vp8", "vp9", "av1"}
DIRECT_SUFFIXES = {".mp4", ".m4v", ".webm"}
MAX_REMUX_S = 900.0  # longest span remuxed on request
MAX_TRANSCODE_S = 180.0  # longest span re-encoded on request
MAX_PATH_CHARS = 1024
_ENCODED_BAD = re.compile(rb"%(2f|5c|00|2e)", re.I)


class MediaError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class MediaRoot:
    source: str
    kind: str  # folder | file | recording
    root: str  # resolved directory
    patterns: tuple = ()
    only: str | None = None  # a file source: its resolved file
    record: object | None = None  # a stream source's RecordConfig
    fallback_start: str = "zero"
    start_time: float | None = None


@dataclass
class MediaRoots:
    """The configured sources' roots (from pystream.config.Config)."""

    roots: dict = field(default_factory=dict)  # source name -> MediaRoot
    streams: dict = field(default_factory=dict)  # stream source name -> RecordConfig | None

    @classmethod
    def from_config(cls, cfg) -> "MediaRoots":
        out = cls()
        if cfg is None:
            return out
        for sc in cfg.sources:
            if sc.type == "folder":
                out.roots[sc.name] = MediaRoot(sc.name, "folder", os.path.realpath(sc.path),
                                               tuple(sc.patterns), fallback_start=sc.fallback_start)
            elif sc.type == "file":
                real = os.path.realpath(sc.path)
                out.roots[sc.name] = MediaRoot(sc.name, "file", os.path.dirname(real), only=real,
                                               fallback_start=sc.fallback_start,
                                               start_time=sc.start_time)
            elif sc.type == "stream":
                out.streams[sc.name] = sc.record
                if sc.record is not None:
                    d = os.path.realpath(os.path.join(sc.record.dir, sc.name))
                    out.roots[sc.name] = MediaRoot(sc.name, "recording", d, ("*.ts", "*.mkv"),
                                                   record=sc.record)
        return out

    def get(self, source: str) -> MediaRoot:
        r = self.roots.get(source)
        if r is None:
            raise MediaError(404, f"no configured folder, file or recorded stream source named "
                                  f"{source!r}")
        return r


def check_relative(rel: str, raw_path: bytes | None = None) -> None:
    """400 for a request path that tries to leave its root or hide what it is."""
    if raw_path is not None and _ENCODED_BAD.search(raw_path):
        raise MediaError(400, "encoded separators, dots and NUL bytes are not allowed in media paths")
    if not rel or len(rel) > MAX_PATH_CHARS:
        raise MediaError(400, "empty or too long media path")
    if "\x00" in rel or "\\" in rel:
        raise MediaError(400, "NUL bytes and backslashes are not allowed in media paths")
    if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        raise MediaError(400, "absolute media paths are not allowed")
    if any(part in ("..", ".", "") for part in rel.split("/")):
        raise MediaError(400, "'..', '.' and empty parts are not allowed in media paths")


def within(root: str, real: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def resolve(root: MediaRoot, rel: str, raw_path: bytes | None = None) -> str:
    """The real path of ``rel`` under the source's root, or MediaError."""
    check_relative(rel, raw_path)
    real = os.path.realpath(os.path.join(root.root, rel))
    return _check_file(root, real)


def resolve_uri(root: MediaRoot, uri: str) -> str:
    """The real path of a row's uri (an absolute path) if it lies under the source's root."""
    if not uri or "\x00" in uri or not os.path.isabs(uri):
        raise MediaError(404, "the clip's file is not a local file")
    return _check_file(root, os.path.realpath(uri))


def _check_file(root: MediaRoot, real: str) -> str:
    not_here = MediaError(404, "no such file under the source's root")
    if not within(root.root, real) or real == root.root:
        raise not_here
    if root.only is not None and real != root.only:
        raise not_here
    if root.patterns and not any(fnmatch.fnmatch(os.path.basename(real).lower(), p.lower())
                                 for p in root.patterns):
        raise not_here
    if not os.path.isfile(real):
        raise not_here
    return real


def relative(root: MediaRoot, real: str) -> str:
    return os.path.relpath(real, root.root).replace(os.sep, "/")


# ----------------------------------------------------------------------------- probing

@lru_cache(maxsize=512)
def _probe(path: str, size: int, mtime_ns: int) -> dict:
    from ..decode import probe

    return probe(path)


def probe_cached(path: str) -> dict:
    st = os.stat(path)
    return _probe(path, st.st_size, st.st_mtime_ns)


def file_start_time(root: MediaRoot, path: str) -> float:
    """The start time the indexer gave this file (rows' start = this + seconds into it)."""
    from ..sources.folder import _file_start_time

    return _file_start_time(probe_cached(path), root.start_time, root.fallback_start,
                            os.stat(path))


def playable_directly(path: str) -> bool:
    if Path(path).suffix.lower() not in DIRECT_SUFFIXES:
        return False
    try:
        return probe_cached(path).get("codec") in BROWSER_CODECS
    except Exception:  # noqa: BLE001
        return False


# ----------------------------------------------------------------------------- spans

@dataclass(frozen=True)
class Part:
    """A file on a timeline: ``t0`` is the timeline time of its first packet's pts (0 for a
    file: seconds into it; the wall clock for a recorded segment)."""

    path: str
    t0: float


def _first_pts(container, stream):
    if stream.start_time is not None:
        return stream.start_time
    for p in container.demux(stream):
        if p.pts is not None:
            return p.pts
    return 0


def keyframe_before(parts: list[Part], t: float) -> float:
    """Timeline time of the keyframe at or before ``t`` that a span starting at ``t`` begins
    with (``write_span`` starts there too)."""
    part = _part_at(parts, t)
    with av.open(part.path) as c:
        s = c.streams.video[0]
        p0 = _first_pts(c, s)
        tb = s.time_base
        target = p0 + int(max(0.0, t - part.t0) / tb)
        try:
            c.seek(target, stream=s, backward=True, any_frame=False)
        except av.error.FFmpegError:
            c.seek(p0, stream=s, backward=True, any_frame=False)
        for p in c.demux(s):
            if p.pts is None or not p.is_keyframe:
                continue
            kt = part.t0 + float((p.pts - p0) * tb)
            if kt > t + 1e-3:  # seeking landed after t (no index): start of the file
                return part.t0
            return kt
    return part.t0


def _part_at(parts: list[Part], t: float) -> Part:
    chosen = parts[0]
    for p in parts:
        if p.t0 <= t + 1e-3:
            chosen = p
    return chosen


def write_span(parts: list[Part], start: float, end: float, dst: str,
               transcode: bool = False) -> None:
    """An MP4 at ``dst`` with the timeline from the keyframe at or before ``start``
    (``keyframe_before``) to ``end``: packets copied, or re-encoded to H.264 with
    ``transcode``. Its time 0 is that keyframe."""
    origin = keyframe_before(parts, start)
    tmp = dst + ".part"
    first = _part_at(parts, origin)
    todo = [p for p in parts if p.t0 >= first.t0 and p.t0 < end]
    with av.open(tmp, "w", format="mp4", options={"movflags": "+faststart"}) as out:
        ost = None
        last_dts = None
        enc = None
        for part in todo:
            try:
                c = av.open(part.path)
            except (av.error.FFmpegError, OSError):
                if part is first:
                    raise
                break  # the segment being written has nothing readable yet: the span ends here
            with c:
                s = c.streams.video[0]
                tb = s.time_base
                p0 = _first_pts(c, s)
                if part is first:
                    c.seek(p0 + int(max(0.0, origin - part.t0 + 1e-3) / tb), stream=s,
                           backward=True, any_frame=False)
                if ost is None:
                    if transcode:
                        ost, enc = _h264_stream(out, s)
                    else:
                        ost = out.add_stream_from_template(s)
                        ost.time_base = tb
                started = part is not first
                rate = s.average_rate or s.guessed_rate or 25
                step = max(1, int(1 / (float(rate) * tb)))
                for p, ts_dts in _with_dts(c.demux(s), step):
                    t_dts = part.t0 + float((ts_dts - p0) * tb)
                    if not started:
                        if not p.is_keyframe:
                            continue
                        started = True
                    if t_dts > end:
                        break
                    if transcode:
                        for frame in p.decode():
                            if frame.pts is None:
                                continue
                            ft = part.t0 + float((frame.pts - p0) * tb)
                            if ft < origin - 1e-3 or ft > end:
                                continue
                            frame.pts = int(round((ft - origin) / enc.time_base))
                            frame.time_base = enc.time_base
                            frame = frame.reformat(format="yuv420p")
                            if last_dts is not None and frame.pts <= last_dts:
                                continue
                            last_dts = frame.pts
                            for q in ost.encode(frame):
                                out.mux(q)
                        continue
                    q = av.Packet(p)
                    q.stream = ost
                    q.time_base = tb
                    shift = lambda v: None if v is None else int(round(  # noqa: E731
                        (part.t0 + float((v - p0) * tb) - origin) / tb))
                    q.dts, q.pts = shift(ts_dts), shift(p.pts)
                    q.duration = p.duration
                    q.is_keyframe = p.is_keyframe
                    d = q.dts if q.dts is not None else q.pts
                    if last_dts is not None and d <= last_dts:
                        continue
                    last_dts = d
                    out.mux(q)
        if ost is None:
            raise MediaError(404, "no video in the requested span")
        if transcode:
            for q in ost.encode():
                out.mux(q)
    os.replace(tmp, dst)


def _with_dts(packets, step: int):
    """(packet, dts) with a dts for every packet: Matroska leaves it out on the packets before
    the first one that has it (B-frames), which an MP4 muxer needs; those get the known dts
    minus one frame step each."""
    pending, last = [], None
    for p in packets:
        if p.size == 0 or (p.dts is None and p.pts is None):
            continue
        if p.dts is None and last is None:
            pending.append(p)
            continue
        d = p.dts if p.dts is not None else last + 1
        for i, q in enumerate(pending):
            yield q, d - (len(pending) - i) * step
        pending = []
        last = d
        yield p, d
    for q in pending:  # no packet had a dts
        yield q, q.pts


def _h264_stream(out, template):
    codec = "libx264" if "libx264" in av.codecs_available else "libopenh264"
    ost = out.add_stream(codec, rate=template.average_rate or 25)
    cc = template.codec_context
    ost.width = cc.width - cc.width % 2
    ost.height = cc.height - cc.height % 2
    ost.pix_fmt = "yuv420p"
    if codec == "libx264":
        ost.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "26"}
    ost.codec_context.time_base = Fraction(1, 1000)
    ost.time_base = Fraction(1, 1000)
    return ost, ost.codec_context


class SpanCache:
    """Spans written once, kept on disk (LRU by total size), served with range requests."""

    def __init__(self, max_bytes: int = 512 * 1024 * 1024, ttl_live_s: float = 120.0):
        self.dir = tempfile.mkdtemp(prefix="pystream-spans-")
        self.max_bytes = max_bytes
        self.ttl_live_s = ttl_live_s
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.dir, True)

    def get(self, parts: list[Part], start: float, end: float, transcode: bool,
            live: bool = False) -> str:
        stamp = [] if live else [(os.stat(p.path).st_size, os.stat(p.path).st_mtime_ns)
                                 for p in parts]
        key = hashlib.sha256(repr(([(p.path, p.t0) for p in parts], stamp, round(start, 3),
                                   round(end, 3), transcode)).encode()).hexdigest()[:32]
        path = os.path.join(self.dir, key + ".mp4")
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one writer per span; the other requests wait for it
            if os.path.exists(path):
                age = time.time() - os.path.getmtime(path)
                if not live or age < self.ttl_live_s:
                    os.utime(path, None)
                    return path
            write_span(parts, start, end, path, transcode)
        self._evict(keep=path)
        return path

    def _evict(self, keep: str) -> None:
        with self._lock:
            files = []
            for e in os.scandir(self.dir):
                if e.name.endswith(".mp4"):
                    st = e.stat()
                    files.append((st.st_mtime, st.st_size, e.path))
            total = sum(f[1] for f in files)
            for mtime, size, path in sorted(files):
                if total <= self.max_bytes:
                    break
                if path == keep:
                    continue
                try:
                    os.unlink(path)
                    total -= size
                except FileNotFoundError:
                    pass

    def close(self) -> None:
        self._cleanup()
