"""Live recording: a stream source's packets, remuxed into rolling segment files.

A stream source with a ``record:`` setting hands every packet it demuxes to a
:class:`Recorder` (before any decoding decision: the keyframes-only mode skips non-key packets
for the decoder, not for the recording). The recorder copies them into segment files without
re-encoding, which costs a memcpy and a write per packet (``benchmarks/recording.py`` measures
it). A new segment starts on the first keyframe after ``segment_s`` seconds; segments older than
``max_age_h`` hours and, past ``max_size_mb`` in total, the oldest ones are deleted whenever a
segment is completed (the one being written is never deleted).

Layout: ``DIR/SOURCE/20261203T101530.250Z.ts`` (MPEG-TS for H.264/HEVC/MPEG-2, Matroska for
codecs MPEG-TS cannot carry, e.g. VP9). The name is the wall-clock time (UTC) of the segment's
first packet: the same clock as the rows' ``start``/``end`` (anchored at the first packet of a
connection and advanced by pts, re-anchored when that drifts from the clock by more than
``RESYNC_S``), so ``segment_at(dir, source, t)`` finds the file and offset of an indexed moment.
MPEG-TS stays readable while it is written and after a crash (no index at the end), so the
segment being written can be played too.

The recorder is built from plain settings inside the reader thread (so the reader can move to
another process), owns its files, and never raises into the reader: a write error (disk full)
is logged and counted, and the recorder retries with a new segment at the next keyframe.

    from pystream.sources.recorder import list_segments
    print(list_segments("pystream-data/recordings", "gate"))   # [] until something was recorded
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import av

log = logging.getLogger(__name__)

RESYNC_S = 5.0  # re-anchor the segment clock to arrival time past this drift
_NAME = re.compile(r"^(\d{8}T\d{6}\.\d{3})Z\.(ts|mkv)$")
_TS_CODECS = {"h264", "hevc", "mpeg2video", "mpeg1video", "mpeg4"}


@dataclass
class RecordSettings:
    """What a stream source's ``record:`` setting says (plain values, see config.RecordConfig)."""

    dir: str
    segment_s: float = 60.0
    max_age_h: float | None = 24.0
    max_size_mb: float | None = None

    @classmethod
    def of(cls, value) -> "RecordSettings | None":
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls(**value)
        raise ValueError(f"record must be a mapping (dir, segment_s, max_age_h, max_size_mb), "
                         f"got {type(value).__name__}")


@dataclass(frozen=True)
class SegmentFile:
    path: str
    start: float  # wall clock (epoch seconds) of its first packet
    size: int


def segment_name(t: float, ext: str) -> str:
    d = datetime.fromtimestamp(t, timezone.utc)
    return d.strftime("%Y%m%dT%H%M%S.") + f"{d.microsecond // 1000:03d}Z.{ext}"


def parse_segment_name(name: str) -> float | None:
    m = _NAME.match(name)
    if not m:
        return None
    d = datetime.strptime(m.group(1), "%Y%m%dT%H%M%S.%f").replace(tzinfo=timezone.utc)
    return d.timestamp()


def source_dir(root: str | os.PathLike, source: str) -> Path:
    return Path(root) / source


def list_segments(root: str | os.PathLike, source: str) -> list[SegmentFile]:
    """A source's segment files, oldest first."""
    out = []
    d = source_dir(root, source)
    try:
        entries = list(os.scandir(d))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for e in entries:
        t = parse_segment_name(e.name)
        if t is None or not e.is_file(follow_symlinks=False):
            continue
        try:
            size = e.stat(follow_symlinks=False).st_size
        except FileNotFoundError:  # deleted by retention meanwhile
            continue
        out.append(SegmentFile(e.path, t, size))
    out.sort(key=lambda s: s.start)
    return out


def enforce_retention(root, source: str, max_age_h: float | None, max_size_mb: float | None,
                      keep: str | None = None, now: float | None = None) -> int:
    """Deletes a source's segments older than max_age_h, then the oldest while the total is
    over max_size_mb; never ``keep`` (the segment being written). Returns the number deleted."""
    now = time.time() if now is None else now
    segs = list_segments(root, source)
    doomed = []
    if max_age_h is not None:
        # A segment ends where the next one starts: delete it once that is too old.
        for a, b in zip(segs, segs[1:] + [None]):
            end = b.start if b is not None else now
            if now - end > max_age_h * 3600:
                doomed.append(a)
    if max_size_mb is not None:
        left = [s for s in segs if s not in doomed]
        total = sum(s.size for s in left)
        for s in left:
            if total <= max_size_mb * 1e6:
                break
            doomed.append(s)
            total -= s.size
    removed = 0
    for s in doomed:
        if keep is not None and os.path.abspath(s.path) == os.path.abspath(keep):
            continue
        try:
            os.unlink(s.path)
            removed += 1
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("recording: cannot delete %s: %s", s.path, e)
    return removed


class Recorder:
    """Remuxes one connection's video packets into rolling segments (see the module doc).

    ``write(packet)`` takes every demuxed packet of ``stream`` (the input video stream); the
    packet itself is not modified (the reader still decodes it)."""

    def __init__(self, source: str, settings, stream, clock=time.time):
        self.settings = RecordSettings.of(settings)
        self.source = source
        self.dir = source_dir(self.settings.dir, source)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.template = stream
        self.time_base: Fraction = stream.time_base
        self.ext = "ts" if stream.codec_context.name in _TS_CODECS else "mkv"
        self.clock = clock
        self.packets = 0
        self.bytes = 0
        self.segments = 0
        self.errors = 0
        self.dropped = 0  # packets not written (before the first keyframe, after an error)
        self.last_error: str | None = None
        self.path: str | None = None  # the segment being written
        self._out = None
        self._ostream = None
        self._base_ts = 0  # input ts of the segment's first packet (output starts at 0)
        self._seg_start = 0.0  # wall clock of the segment's first packet
        self._anchor: tuple[float, int] | None = None  # (wall clock, pts) of the clock anchor
        self._last_dts: int | None = None

    # ------------------------------------------------------------------ the hook
    def write(self, packet) -> None:
        """Record one demuxed packet (never raises)."""
        try:
            self._write(packet)
        except Exception as e:  # noqa: BLE001 - recording must never stop indexing
            self._error(f"{type(e).__name__}: {e}")

    def _wall(self, ts: int | None) -> float:
        now = self.clock()
        if ts is None:
            return now
        if self._anchor is None:
            self._anchor = (now, ts)
        t = self._anchor[0] + float((ts - self._anchor[1]) * self.time_base)
        if abs(t - now) > RESYNC_S:  # pts jumped (encoder restart, wrap): the clock wins
            self._anchor = (now, ts)
            t = now
        return t

    def _write(self, packet) -> None:
        if packet.size == 0 or (packet.pts is None and packet.dts is None):
            return  # flush packets at the end of a demux
        ts = packet.dts if packet.dts is not None else packet.pts
        key = bool(packet.is_keyframe)
        if self._out is None:
            if not key:
                self.dropped += 1
                return
            self._open(self._wall(packet.pts if packet.pts is not None else ts), ts)
        elif key and float((ts - self._base_ts) * self.time_base) >= self.settings.segment_s:
            start = self._wall(packet.pts if packet.pts is not None else ts)
            self._close()
            self._retention()
            self._open(start, ts)
        if self._last_dts is not None and ts <= self._last_dts:
            # Timestamps went back (wrap, encoder restart): the muxer would refuse them.
            # Start a new segment at the next keyframe.
            if key:
                self._close()
                self._open(self._wall(packet.pts if packet.pts is not None else ts), ts)
            else:
                self.dropped += 1
                return
        out = av.Packet(packet)  # a copy: the reader still decodes the original
        out.stream = self._ostream
        out.time_base = self.time_base
        out.dts = None if packet.dts is None else packet.dts - self._base_ts
        out.pts = None if packet.pts is None else packet.pts - self._base_ts
        out.duration = packet.duration
        out.is_keyframe = key
        self._out.mux(out)
        self._last_dts = ts
        self.packets += 1
        self.bytes += packet.size

    def _open(self, start: float, ts: int) -> None:
        self.path = str(self.dir / segment_name(start, self.ext))
        fmt = "mpegts" if self.ext == "ts" else "matroska"
        self._out = av.open(self.path, "w", format=fmt)
        self._ostream = self._out.add_stream_from_template(self.template)
        self._ostream.time_base = self.time_base
        self._base_ts = ts
        self._seg_start = start
        self._last_dts = None
        self.segments += 1

    def _close(self) -> None:
        out, self._out = self._out, None
        if out is not None:
            try:
                out.close()
            except Exception as e:  # noqa: BLE001
                self._error(f"closing {self.path}: {e}")

    def _retention(self) -> None:
        s = self.settings
        if s.max_age_h is None and s.max_size_mb is None:
            return
        enforce_retention(s.dir, self.source, s.max_age_h, s.max_size_mb, keep=self.path)

    def _error(self, message: str) -> None:
        self.errors += 1
        if message != self.last_error:
            log.warning("source %s: recording: %s", self.source, message)
        self.last_error = message
        out, self._out = self._out, None  # start over at the next keyframe
        if out is not None:
            try:
                out.close()
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        """Finish the current segment (the reader calls this when the connection ends)."""
        self._close()
        try:
            self._retention()
        except Exception as e:  # noqa: BLE001
            self._error(f"retention: {e}")

    def stats(self) -> dict:
        return dict(packets=self.packets, bytes=self.bytes, segments=self.segments,
                    errors=self.errors, dropped=self.dropped, last_error=self.last_error,
                    path=self.path)


def open_recorder(source: str, settings, stream) -> Recorder | None:
    """A Recorder for ``stream`` when ``settings`` ask for one; None without a ``record:``
    setting or when it cannot start (logged: indexing goes on without the recording)."""
    if not settings:
        return None
    try:
        return Recorder(source, settings, stream)
    except Exception as e:  # noqa: BLE001 - e.g. the directory is not writable
        log.warning("source %s: recording disabled for this connection: %s", source, e)
        return None
