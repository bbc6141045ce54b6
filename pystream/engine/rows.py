"""Emissions -> ClipRows, with thumbnails. Owned by the encoder thread.

Keeps each open stream's most recent frames (one window and a chunk), so a fine row's thumbnail
is the middle frame of its window; a coarse row reuses the thumbnail of its stream's last fine
window (frames further back are gone). Also tracks, per source, the end of its latest row (the
progress a checkpoint records).
"""

from __future__ import annotations

import collections
from typing import Dict, List

from ..model.streaming import Emission
from ..store import ClipRow, make_thumbnail
from .messages import ChunkItem, StreamRef


class RowBuilder:
    def __init__(self, model_id: str, window_frames: int, chunk_frames: int):
        self.model_id = model_id
        self.keep = window_frames + chunk_frames  # frames kept per stream
        self._recent: Dict[str, collections.OrderedDict] = {}  # frame index -> rgb
        self._last_thumb: Dict[str, bytes] = {}
        self.source_end: Dict[str, float] = {}  # per source: end of its latest row

    def remember(self, it: ChunkItem) -> None:
        """Keep the chunk's frames (call before encoding it: its rows may need them)."""
        recent = self._recent.setdefault(it.ref.key, collections.OrderedDict())
        for idx, rgb in zip(it.chunk.indices(), it.rgb):
            recent[idx] = rgb
        while len(recent) > self.keep:
            recent.popitem(last=False)

    def forget(self, key: str) -> None:
        self._recent.pop(key, None)
        self._last_thumb.pop(key, None)

    def rows(self, emissions: List[tuple]) -> List[ClipRow]:
        """``[(StreamRef, Emission)]`` -> rows. Call right away: thumbnails need the stream's
        recent frames, which end of stream forgets."""
        return [self.row(ref, e) for ref, e in emissions]

    def row(self, ref: StreamRef, e: Emission) -> ClipRow:
        if e.level == 0:
            thumb = self.thumbnail(ref.key, (e.first_frame + e.last_frame) // 2)
            if thumb is not None:
                self._last_thumb[ref.key] = thumb
        else:  # coarse: the representative of its last window (frames further back are gone)
            thumb = self._last_thumb.get(ref.key)
        end = self.source_end.get(ref.source)
        self.source_end[ref.source] = e.end if end is None else max(end, e.end)
        return ClipRow(source=ref.source, uri=ref.uri, level=e.level, start=e.start, end=e.end,
                       vector=e.vector, thumbnail=thumb, model=self.model_id,
                       recording=not ref.live)

    def thumbnail(self, key: str, index: int) -> bytes | None:
        recent = self._recent.get(key)
        if not recent:
            return None
        if index not in recent:  # before a resume point: the nearest frame we still have
            index = min(recent, key=lambda i: abs(i - index))
        try:
            return make_thumbnail(recent[index])
        except Exception:
            return None
