"""The queue protocol between the source threads and the encoder thread (no behaviour of its own).

Source threads put ``ChunkItem`` (k sampled frames of one stream) and ``EndItem`` (a stream's
end: finish it, keep it for resume, or forget it) on one bounded ``ChunkQueue``; the encoder
thread takes them in order. ``Marker`` is what the encoder thread hands to the commit log after
every batch (what to checkpoint once its rows are in LanceDB).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from ..model.streaming import Chunk


@dataclass
class StreamRef:
    key: str  # encoder stream key: stable across restarts for files
    source: str
    uri: str
    live: bool
    file_key: Optional[tuple]


@dataclass
class ChunkItem:
    ref: StreamRef
    chunk: Chunk
    rgb: List[np.ndarray]  # the chunk's frames, for thumbnails
    queued: float = field(default_factory=time.monotonic)


@dataclass
class EndItem:
    ref: StreamRef
    tail: Optional[ChunkItem]  # last partial chunk, or None
    finish: bool  # False: a file cut short by shutdown, keep its state for resume
    mark_done: bool  # a file read to its end (or unreadable): never index it again
    drop: bool = False  # forget the stream's carried state (its file changed since)


@dataclass
class Marker:
    target_rows: int  # checkpoint once this many rows are committed
    streams: Dict[str, dict]  # open streams' positions
    state: Optional[bytes]  # carried encoder state of those streams
    files_done: List[tuple]  # (source, path, size, mtime)
    source_progress: Dict[str, float]  # per source: end of its latest row


def chunk_item(ref: StreamRef, frames: list, dt: float) -> ChunkItem:
    """k (or fewer, for a tail) decoded Frames of one stream as a queue item."""
    rgb = [f.rgb for f in frames]
    chunk = Chunk(ref.key, np.stack(rgb), [f.t for f in frames], frames[0].index, dt,
                  [f.index for f in frames], replayable=not ref.live)
    return ChunkItem(ref, chunk, rgb)


class ChunkQueue:
    """The bounded queue plus the count of producers still running.

    ``put`` blocks while the queue is full (backpressure: a slow encoder slows the decoders
    instead of buffering without bound; ``offer`` is the non-blocking form live sources use
    while the writer is stalled) and gives up once the consumer has ended
    (``consumer_done``), so a source thread never hangs on a dead encoder."""

    def __init__(self, maxsize: int, consumer_done: threading.Event):
        self._q: "queue.Queue" = queue.Queue(maxsize=maxsize)
        self.consumer_done = consumer_done
        self._producers = 0
        self._lock = threading.Lock()

    # producers
    def add_producer(self) -> None:
        with self._lock:
            self._producers += 1

    def remove_producer(self) -> None:
        with self._lock:
            self._producers -= 1

    @property
    def producers(self) -> int:
        with self._lock:
            return self._producers

    def offer(self, item, timeout: float = 0.0) -> bool:
        """Queue ``item`` if there is room within ``timeout`` seconds; False otherwise."""
        try:
            if timeout > 0:
                self._q.put(item, timeout=timeout)
            else:
                self._q.put_nowait(item)
            return True
        except queue.Full:
            return False

    def put(self, item) -> None:
        while True:
            try:
                self._q.put(item, timeout=0.5)
                return
            except queue.Full:
                if self.consumer_done.is_set():
                    return

    # consumer
    def get(self, timeout: float):
        """The next item; raises queue.Empty after ``timeout`` (<= 0: do not wait)."""
        return self._q.get(timeout=timeout) if timeout > 0 else self._q.get_nowait()

    def empty(self) -> bool:
        return self._q.empty()

    def qsize(self) -> int:
        return self._q.qsize()

    def has_room(self) -> bool:
        """At most half full (hysteresis for a live source resuming after a gap)."""
        return self._q.qsize() <= self._q.maxsize // 2
