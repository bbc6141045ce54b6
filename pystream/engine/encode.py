"""The one encoder thread: batching across sources, per-stream fault isolation, end of stream.

It takes chunks of all sources from the queue, up to ``max_batch_chunks`` but waiting at most
``max_wait_s`` after the first one, so many cameras share one batched forward and a quiet camera
is never starved. An ``EndItem`` ends its stream with ``finish()`` (end of a file, a live
disconnect: a window never spans a gap), or keeps its carried state (a file cut short by
shutdown) or forgets it (a file that changed). A batch that fails to encode is retried stream by
stream, so one bad stream is marked broken (ignored until its end, its file left undone) and the
others go on. After every batch the rows go to the commit log with a marker of every open
stream's position and the carried state.

Everything here is touched only by the encoder thread, except ``open`` (read by status()) and
the counters (read by status()).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
import traceback
from typing import Callable, Dict, List, Optional

from .commit import CommitLog, RestorePlan
from .messages import ChunkItem, ChunkQueue, EndItem, StreamRef
from .rows import RowBuilder
from .stats import SourceStats

log = logging.getLogger("pystream.pipeline")

STOP_GRACE_S = 15.0  # how long sources get to notice a stop (a demux may be blocked in a read)


class EncodeStage:
    def __init__(self, encoder, rows: RowBuilder, commit: CommitLog, chunks: ChunkQueue,
                 stats: Dict[str, SourceStats], stop_event: threading.Event, *,
                 max_batch_chunks: int, max_wait_s: float,
                 restored: Optional[RestorePlan] = None):
        self.encoder = encoder
        self.rows_builder = rows
        self.commit = commit
        self.chunks = chunks
        self.stats = stats
        self.stop_event = stop_event
        self.done = chunks.consumer_done
        self.max_batch_chunks, self.max_wait_s = max_batch_chunks, max_wait_s
        self.fatal: BaseException | None = None
        self.thread: threading.Thread | None = None

        restored = restored or RestorePlan()
        self.open: Dict[str, StreamRef] = dict(restored.open)  # streams with carried state
        self.next_frame: Dict[str, int] = dict(restored.next_frame)  # first frame not encoded
        self._broken: set = set()  # streams whose encoding failed; ignored until their end
        self._files_done_pending: List[tuple] = []

        self.encode_batches = 0
        self.last_batch_s = 0.0
        self.stage_s: collections.Counter = collections.Counter()  # this thread's seconds
        self.batch_latency_observer: Callable[[float, int], None] | None = None

    def start(self) -> threading.Thread:
        self.thread = threading.Thread(target=self.run, daemon=True, name="pystream-encoder")
        self.thread.start()
        return self.thread

    # ------------------------------------------------------------------ loop

    def run(self):
        try:
            stop_seen = None
            while True:
                items = self.next_batch()
                if items:
                    self.process(items)
                    continue
                producers = self.chunks.producers
                if producers == 0 and self.chunks.empty():
                    break
                if self.stop_event.is_set():
                    stop_seen = stop_seen or time.monotonic()
                    if time.monotonic() - stop_seen > STOP_GRACE_S and self.chunks.empty():
                        log.warning("%d source(s) did not stop in time; not waiting", producers)
                        break
        except BaseException as e:  # noqa: BLE001 - reported by Indexer.wait()
            log.exception("encoder thread failed")
            self.fatal = e
        finally:
            self.done.set()

    def next_batch(self) -> list:
        """Up to max_batch_chunks chunks, waiting at most max_wait_s after the first one."""
        try:
            first = self.chunks.get(timeout=0.2)
        except queue.Empty:
            return []
        items = [first]
        n = 1 if isinstance(first, ChunkItem) else 0
        deadline = time.monotonic() + self.max_wait_s
        while n < self.max_batch_chunks:
            try:
                item = self.chunks.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                break
            items.append(item)
            n += isinstance(item, ChunkItem)
        return items

    def process(self, items: list):
        t0 = time.perf_counter()
        rows: list = []
        pending: List[ChunkItem] = []
        n_chunks = 0
        for it in items:
            if isinstance(it, ChunkItem):
                pending.append(it)
                n_chunks += 1
                continue
            if any(p.ref.key == it.ref.key for p in pending):
                rows += self._rows(self.encode(pending))  # its chunks come before its end
                pending = []
            rows += self.end(it)
        rows += self._rows(self.encode(pending))
        t1 = time.perf_counter()
        self._commit(rows)
        self.stage_s["enqueue"] += time.perf_counter() - t1
        dt = time.perf_counter() - t0
        self.encode_batches += 1
        self.last_batch_s = dt
        if self.batch_latency_observer is not None and n_chunks:
            self.batch_latency_observer(dt, n_chunks)

    # ------------------------------------------------------------------ encoding

    def encode(self, items: List[ChunkItem]) -> List[tuple]:
        """``[(StreamRef, Emission)]`` of one batched forward; a failing stream is isolated."""
        items = [it for it in items if it.ref.key not in self._broken]
        if not items:
            return []
        for it in items:
            self.open[it.ref.key] = it.ref
            self.rows_builder.remember(it)
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
            by_stream: Dict[str, List[ChunkItem]] = collections.OrderedDict()
            for it in items:
                by_stream.setdefault(it.ref.key, []).append(it)
            for group in by_stream.values():
                out += [e for _, e in self.encode(group)]
        for it in items:
            if it.ref.key not in self._broken:
                self.next_frame[it.ref.key] = it.chunk.indices()[-1] + 1
        refs = {it.ref.key: it.ref for it in items}
        return [(refs[e.stream], e) for e in out if e.stream in refs]

    def _fail_stream(self, ref: StreamRef, why: str):
        msg = f"{ref.uri}: encoding failed: {why.strip().splitlines()[-1]}"
        log.error("source %s: %s", ref.source, msg)
        self.stats[ref.source].error(msg)
        self._broken.add(ref.key)
        self.encoder.drop(ref.key)

    def end(self, it: EndItem) -> list:
        ref, key = it.ref, it.ref.key
        rows: list = []
        if it.drop or not it.finish:
            if it.drop:
                self._forget(key)
            return rows  # cut short by shutdown: carried state stays for the checkpoint
        # An encoding failure is our fault, not the file's: leave it undone so a restart
        # (after a fix) indexes it; a file that decodes badly is done (decode errors in ingest).
        failed = key in self._broken
        if not failed:
            if it.tail is not None:
                self.rows_builder.remember(it.tail)
            try:
                tail = it.tail.chunk if it.tail is not None else None
                rows = self._rows([(ref, e) for e in self.encoder.finish(key, tail)])
            except Exception:
                self._fail_stream(ref, traceback.format_exc(limit=1))
        failed = failed or key in self._broken
        self._forget(key)
        if it.mark_done and ref.file_key is not None and not failed:
            self._files_done_pending.append((ref.source, *ref.file_key))
        return rows

    def _forget(self, key: str):
        self.encoder.drop(key)
        self.open.pop(key, None)
        self.next_frame.pop(key, None)
        self.rows_builder.forget(key)
        self._broken.discard(key)

    def _rows(self, emissions: List[tuple]) -> list:
        t0 = time.perf_counter()
        rows = self.rows_builder.rows(emissions)
        self.stage_s["rows"] += time.perf_counter() - t0
        return rows

    # ------------------------------------------------------------------ commit

    def positions(self) -> Dict[str, dict]:
        """Every open stream's position (what a checkpoint needs to resume it)."""
        streams = {}
        for key, ref in self.open.items():
            if key in self.next_frame and self.encoder.progress.get(key) is not None:
                streams[key] = dict(source=ref.source, uri=ref.uri, live=ref.live,
                                    file_key=list(ref.file_key) if ref.file_key else None,
                                    next_frame=self.next_frame[key])
        return streams

    def _commit(self, rows: list):
        streams = self.positions()
        # Only files resume with their carried state (commit.plan_restore drops live streams),
        # so only theirs is saved: with many cameras beside a folder, saving every camera's
        # tokens and reuse cache made each commit write MBs (fsynced) while a file was open.
        resuming = [key for key, s in streams.items() if not s["live"]]
        state = self.encoder.state_bytes(resuming) if resuming else None
        self.commit.add(rows, streams, state, self._files_done_pending,
                        self.rows_builder.source_end)
        self._files_done_pending = []
