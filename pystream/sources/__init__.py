"""Sources: where frames come from (watched folders, live streams, one-off files).

A source turns the outside world into a sequence of :class:`Segment` (one continuous run of
frames: one file, or one connection to a live stream) interleaved with :class:`SourceEvent`
(things the daemon must log, record and show in ``pystream status``: gaps, errors, skipped
files, reconnects)::

    import threading
    from pystream.sources import SourceEvent, make_source

    # {"type": "stream", "name": "gate", "url": "rtsp://cam/1"} or a folder work the same way
    src = make_source({"type": "file", "name": "one", "path": "videos/a.mp4", "size": 112})
    for item in src.segments(threading.Event()):
        if isinstance(item, SourceEvent):
            print("event:", item.kind, item.message)
            continue
        for frame in item.frames:        # pystream.decode.Frame, .t absolute seconds
            print(item.uri, frame.index, frame.t, frame.rgb.shape)

Consume each segment's ``frames`` before asking ``segments()`` for the next item (for a live
stream the next item is only produced after the connection ended). ``stop`` is honoured
within about a second both between segments and inside ``frames``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Union, runtime_checkable

from pystream.decode import Frame

__all__ = [
    "Segment", "SourceEvent", "Source", "FolderSource", "FileSource", "StreamSource",
    "make_source", "SOURCE_TYPES",
]


@dataclass
class Segment:
    """One continuous run of frames: a file, or one connection to a live stream.

    stream_id: key for the encoder's carried state: ``f"{source}:{path}"`` for files, the
        source name for live streams (a reconnect continues the same stream id; the gap
        between is reported as a SourceEvent).
    start_time: wall clock (``time.time()``) of the first frame for live streams; for files
        the configured start, else the container's ``creation_time``, else 0.0.
    frames: iterator of :class:`pystream.decode.Frame`; ``.t`` is absolute seconds
        (``start_time + pts`` for files, wall-clock arrival for live).
    file_key: ``(path, size, mtime)`` for files (what the checkpoint store remembers),
        None for live streams.
    """

    source: str
    uri: str
    stream_id: str
    live: bool
    start_time: float
    frames: Iterator[Frame]
    file_key: tuple | None = None


@dataclass
class SourceEvent:
    """Something for the log and ``pystream status``. kinds:

    "error":        a file that cannot be indexed (names the file), a missing folder, a failed
                    connection attempt or a lost stream (with the retry delay);
    "reconnect":    a live stream is back after failures (sent just before its "gap");
    "gap":          a live stream had no frames from ``start`` (last frame before the outage)
                    to ``end`` (first frame after), absolute seconds;
    "file_skipped": a FileSource whose file is already indexed (folders skip done files
                    quietly, see pystream.sources.folder).
    """

    source: str
    kind: str
    uri: str
    message: str
    start: float | None = None
    end: float | None = None


@runtime_checkable
class Source(Protocol):
    name: str

    def segments(self, stop: threading.Event) -> Iterator[Union[Segment, SourceEvent]]: ...

    def status(self) -> dict: ...


from pystream.sources.folder import FileSource, FolderSource  # noqa: E402
from pystream.sources.stream import StreamSource  # noqa: E402

SOURCE_TYPES = {"folder": FolderSource, "stream": StreamSource, "file": FileSource}

# Config keys that name the location, per type (the constructor's second argument).
_LOCATION = {"folder": "path", "file": "path", "stream": "url"}


def make_source(cfg: dict, **extra: Any) -> Source:
    """Builds a source from a config dict ``{type: folder|stream|file, name, path|url, ...}``.

    Remaining keys are the constructor's keyword arguments (see FolderSource, StreamSource,
    FileSource). ``extra`` is for things that are not configuration, e.g.
    ``is_done=checkpoints.is_done`` for folders. Raises ValueError with a clear message for
    a missing type/name/location or unknown keys.
    """
    if not isinstance(cfg, dict):
        raise ValueError(f"source config must be a mapping, got {type(cfg).__name__}")
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    name = cfg.pop("name", None)
    where = f"source {name!r}" if name else "source"
    if kind not in SOURCE_TYPES:
        raise ValueError(f"{where}: 'type' must be one of {sorted(SOURCE_TYPES)}, got {kind!r}")
    if not name or not isinstance(name, str):
        raise ValueError(f"{where}: 'name' (a non-empty string) is required")
    loc_key = _LOCATION[kind]
    loc = cfg.pop(loc_key, None)
    if not loc:
        raise ValueError(f"{where}: '{loc_key}' is required for type {kind!r}")
    cls = SOURCE_TYPES[kind]
    allowed = set(cls.CONFIG_KEYS)
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {unknown} for type {kind!r}; allowed: {sorted(allowed | {'type', 'name', loc_key})}"
        )
    return cls(name, str(loc), **cfg, **extra)


IsDone = Callable[[str, int, float], bool]
