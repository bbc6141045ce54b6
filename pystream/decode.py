"""PyAV decoding: sample frames by presentation time, resize inside libav.

Thin on purpose. Three rules from other projects' bug trackers shape it:

* never drop packets before decoding (inter-frame codecs need every packet); we decode
  everything and subsample the *decoded* frames by their presentation time;
* resize and convert to RGB in libav (``frame.reformat``), not in Python;
* always pass open/read timeouts (a dead network stream otherwise blocks forever) and close
  containers explicitly, even when the caller abandons the generator half-way.

Truncated / damaged input: ``decode_frames`` yields every frame it can decode and stops
quietly (with a logged warning) at the first unrecoverable error. It raises
:class:`DecodeError` only when *nothing at all* could be decoded (empty file, not a video,
missing header...), so a recording cut short by a crash is still indexed up to the cut.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import av
import numpy as np

log = logging.getLogger(__name__)

__all__ = ["DecodeError", "Frame", "PtsSampler", "decode_frames", "chunk_frames", "probe"]

# Seconds to wait for the container to open / for each read. Files never hit these;
# live streams (rtsp/udp/http) do when the camera goes away.
DEFAULT_TIMEOUT = (10.0, 10.0)

# Tolerance when comparing a frame's pts to the next sample time: pts are exact rationals
# but the sample grid k/fps is computed in floating point.
_EPS = 1e-6


class DecodeError(ValueError):
    """The source could not be opened or decoded. The message names the source."""


@dataclass
class Frame:
    """One sampled frame.

    index: sample index (0, 1, 2, ... in the order frames are yielded).
    pts_s: presentation time in seconds, relative to the start of the file/stream.
    t:     ``start_time + pts_s`` (e.g. wall-clock seconds of a recording).
    rgb:   uint8 array [H, W, 3].
    """

    index: int
    pts_s: float
    t: float
    rgb: np.ndarray


def _name(src: Any) -> str:
    return os.fspath(src) if isinstance(src, (str, os.PathLike)) else repr(src)


def _is_local_file(src: Any) -> bool:
    if not isinstance(src, (str, os.PathLike)):
        return False
    s = os.fspath(src)
    return "://" not in s or s.startswith("file://")


def _check_file(src: Any) -> None:
    """Cheap checks that give clearer messages than libav's for local files."""
    if not _is_local_file(src):
        return
    path = os.fspath(src).removeprefix("file://")
    if not os.path.exists(path):
        raise DecodeError(f"{path}: file does not exist")
    if os.path.isdir(path):
        raise DecodeError(f"{path}: is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise DecodeError(f"{path}: file is empty (0 bytes)")


def _open(src: Any, options: dict | None, timeout) -> av.container.InputContainer:
    _check_file(src)
    try:
        return av.open(src, mode="r", options=dict(options or {}), timeout=timeout)
    except av.error.FFmpegError as e:
        raise DecodeError(f"{_name(src)}: cannot open as media ({e.strerror or e})") from e
    except OSError as e:  # e.g. permission denied
        raise DecodeError(f"{_name(src)}: cannot open ({e})") from e


def _video_stream(container, src):
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        raise DecodeError(f"{_name(src)}: no video stream (found: {', '.join(kinds)})")
    return container.streams.video[0]


def _target_size(size: int | tuple[int, int] | None) -> tuple[int | None, int | None]:
    """Returns (width, height) for libav. See ``decode_frames`` for the convention."""
    if size is None:
        return None, None
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(w), int(h)


class PtsSampler:
    """The sampling grid by presentation time, shared by files and live streams.

    Sample k is the first decoded frame whose pts >= k / fps (relative to ``origin``, default
    the first frame's pts); after a gap the grid skips ahead to the first point after the frame,
    so a gap never produces a burst of samples. A frame without pts (rare raw streams) counts as
    one period after the previous one. ``rewind_s``: a pts more than this far behind the
    previous frame's (encoder restart, MPEG-TS wrap) continues the grid one period after the
    previous frame instead of stalling it (None: files, where pts never go back that far).

        sampler = PtsSampler(fps)
        for frame in decoded:
            pts_s = sampler.sample(frame)     # seconds since the origin, or None: not a sample
    """

    __slots__ = ("fps", "period", "origin", "rewind_s", "next_t", "_last_pts", "_last_pts_s")

    def __init__(self, fps: float, origin: float | None = None, rewind_s: float | None = None):
        if not fps or fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        self.fps = float(fps)
        self.period = 1.0 / self.fps
        self.origin = origin
        self.rewind_s = rewind_s
        self.next_t = 0.0  # the next grid point (seconds since the origin)
        self._last_pts: float | None = None
        self._last_pts_s = -math.inf

    def position(self, pts: float | None) -> float:
        """Seconds since the origin of a frame with presentation time ``pts`` (s, or None)."""
        if pts is None:  # no timestamp: fall back to the decode order
            pts = self._last_pts + self.period if self._last_pts is not None else 0.0
        self._last_pts = pts
        if self.origin is None:
            self.origin = pts
        pts_s = pts - self.origin
        if self.rewind_s is not None and pts_s < self._last_pts_s - self.rewind_s:
            # Timestamps went backwards: continue the grid one period after the last frame.
            self.origin = pts - (self._last_pts_s + self.period)
            pts_s = self._last_pts_s + self.period
            self.next_t = pts_s
        self._last_pts_s = pts_s
        return pts_s

    def take(self, pts_s: float) -> bool:
        """Whether a frame at ``pts_s`` is the next sample (and if so, advance the grid)."""
        if pts_s + _EPS < self.next_t:
            return False
        # Next grid point strictly after this frame (skips over gaps).
        self.next_t = max(self.next_t + self.period,
                          (math.floor(pts_s * self.fps + _EPS) + 1) / self.fps)
        return True

    def sample(self, frame) -> float | None:
        """A decoded ``av.VideoFrame``'s pts_s if it is a sample, else None."""
        pts = float(frame.pts * frame.time_base) if frame.pts is not None else None
        pts_s = self.position(pts)
        return pts_s if self.take(pts_s) else None


def decode_frames(
    src: Any,
    fps: float,
    size: int | tuple[int, int] | None,
    start_time: float = 0.0,
    options: dict | None = None,
    timeout: float | tuple[float, float] | None = DEFAULT_TIMEOUT,
) -> Iterator[Frame]:
    """Decodes ``src`` and yields frames sampled at ``fps`` by presentation time.

    src:   path or URL (rtsp://, udp://, http://...) or anything ``av.open`` accepts.
    fps:   sample rate. Sample k is the first decoded frame whose pts >= k / fps (pts
           relative to the stream start). If the source has a gap, the grid skips ahead
           rather than emitting a burst of frames to "catch up".
    size:  int -> square ``size x size`` resize (CLIP style: the aspect ratio is NOT kept,
           the whole frame is squashed, nothing is cropped); ``(height, width)`` tuple ->
           that shape (same order as the output array); None -> native size.
    start_time: added to ``pts_s`` to give ``Frame.t`` (e.g. the recording's wall clock).
    options: dict of libav options passed to ``av.open`` (e.g. ``{"rtsp_transport": "udp"}``).
    timeout: ``(open_s, read_s)`` or one float, passed to ``av.open``.

    Yields good frames of a damaged file, then stops; raises DecodeError only if no frame
    at all could be decoded (see module docstring). The container is closed when the
    generator finishes or is closed/garbage-collected.
    """
    if not fps or fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    width, height = _target_size(size)
    container = _open(src, options, timeout)
    try:
        stream = _video_stream(container, src)
        stream.thread_type = "AUTO"  # frame/slice threads inside libav
        tb = stream.time_base
        # Offset so pts_s starts at ~0 (MPEG-TS streams typically start at 1.4 s).
        origin = float(stream.start_time * tb) if stream.start_time is not None and tb else None

        decoded = 0  # frames decoded (before sampling), to tell "empty" from "sparse"
        index = 0
        sampler = PtsSampler(fps, origin)
        error: Exception | None = None
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as e:
                    # A corrupt packet: skip it, the decoder conceals and resyncs.
                    log.debug("%s: skipping undecodable packet (%s)", _name(src), e)
                    continue
                for frame in frames:
                    decoded += 1
                    pts_s = sampler.sample(frame)
                    if pts_s is None:
                        continue
                    rgb = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
                    yield Frame(index=index, pts_s=pts_s, t=start_time + pts_s, rgb=rgb)
                    index += 1
        except (av.error.FFmpegError, EOFError) as e:
            error = e  # demuxer gave up (truncated / corrupt container)

        if decoded == 0:
            why = f" ({error})" if error is not None else ""
            raise DecodeError(f"{_name(src)}: no decodable video frame{why}")
        if error is not None:
            log.warning(
                "%s: stopped after %d decoded frames (%d sampled): %s",
                _name(src), decoded, index, error,
            )
    finally:
        container.close()


def chunk_frames(frames_iter: Iterable[Frame], k: int, keep_partial: bool = False) -> Iterator[list[Frame]]:
    """Groups frames into lists of ``k``. The last, shorter list is yielded only if
    ``keep_partial`` (a live stream's tail is normally carried over, not encoded short)."""
    if k <= 0:
        raise ValueError(f"k must be > 0, got {k!r}")
    chunk: list[Frame] = []
    for f in frames_iter:
        chunk.append(f)
        if len(chunk) == k:
            yield chunk
            chunk = []
    if chunk and keep_partial:
        yield chunk


def probe(
    path: Any,
    options: dict | None = None,
    timeout: float | tuple[float, float] | None = DEFAULT_TIMEOUT,
) -> dict:
    """Reads container/stream metadata and decodes the first frame to prove the file works.

    Returns ``{"duration_s", "fps", "width", "height", "codec", "frames", "creation_time"}``
    (``creation_time`` only if the metadata has one; ``duration_s``/``fps``/``frames`` may be
    None for live streams). Raises DecodeError for empty, non-video, or undecodable input.
    """
    container = _open(path, options, timeout)
    try:
        stream = _video_stream(container, path)
        cc = stream.codec_context
        if stream.duration is not None and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = None
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        info = {
            "duration_s": duration,
            "fps": float(rate) if rate else None,
            "width": cc.width,
            "height": cc.height,
            "codec": cc.name,
            "frames": stream.frames or None,
        }
        created = container.metadata.get("creation_time") or stream.metadata.get("creation_time")
        if created:
            info["creation_time"] = created
        # Headers can look fine while the payload is garbage: decode one frame.
        try:
            first = next(iter(container.decode(stream)), None)
        except (av.error.FFmpegError, EOFError) as e:
            raise DecodeError(f"{_name(path)}: video stream is not decodable ({e})") from e
        if first is None:
            raise DecodeError(f"{_name(path)}: video stream has no decodable frame")
        if not info["width"]:
            info["width"], info["height"] = first.width, first.height
        return info
    finally:
        container.close()
