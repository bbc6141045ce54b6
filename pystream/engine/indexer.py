"""The ``Indexer`` facade: builds the stages, starts their threads, drains them, reports status.

    source threads (ingest.SourceRunner, one per source)
        -> messages.ChunkQueue (bounded: backpressure)
        -> encoder thread (encode.EncodeStage, rows.RowBuilder)
        -> writer thread (writer.ClipWriter, its on_commit hook runs commit.CommitLog.committed)
        -> checkpoints (commit.CommitLog.apply)

The facade itself holds no per-stream state; see pystream.pipeline for the behaviour.

Backpressure end to end: the writer's pending rows are bounded (writer.max_pending_rows); when
the store stalls (a full disk) the encoder waits in ``CommitLog.add``, the chunk queue fills,
files pause in ``put`` and live sources record a gap (ingest.SourceRunner); when the store
comes back everything resumes by itself. ``status()["writer"]`` says so at once (state
"stalled", the error, since when) and ``status()["disk"]`` warns of low free space.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from typing import Callable, Dict, Iterable, List

from ..alerts.engine import make_alert_engine
from ..checkpoint import CheckpointStore
from ..config import Config
from ..memory import use_system_arrow_pool
from ..retention import RetentionPolicy
from ..store import ClipRow, portable_model_ref
from ..writer import ClipWriter
from ..model.streaming import StreamingEncoder
from .commit import CommitLog, restore
from .encode import EncodeStage
from .ingest import RestartPolicy, SourceRunner, make_sources, source_fps
from .messages import ChunkQueue
from .rows import RowBuilder
from .stats import SourceStats, connection_state

log = logging.getLogger("pystream.pipeline")


def model_settings(cfg: Config) -> tuple:
    """What ``load_video_model`` depends on: a reload with the same settings keeps the model."""
    return (cfg.model, cfg.device, cfg.threads, repr(cfg.merge.schedule_dict()))


def load_video_model(cfg: Config):
    """The configured CLIP with its TempMe schedule (ModelLoadError says what is wrong)."""
    import torch

    from ..model.tempme import ClipVideoModel

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = ClipVideoModel.from_pretrained(cfg.model, schedule=cfg.merge.schedule_dict())
    return model.to(cfg.device)


class Indexer:
    """Runs the configured sources into the archive. See pystream.pipeline's docstring.

    ``restart``: how crashed sources are restarted (ingest.RestartPolicy)."""

    def __init__(self, config: Config, *, model=None, sources: Iterable | None = None,
                 on_rows: Callable[[List[ClipRow]], None] | None = None,
                 restart: RestartPolicy | None = None):
        use_system_arrow_pool()  # before the archive is opened (memory.py)
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
        self.restart = restart or RestartPolicy()

        self.sources = list(sources) if sources is not None else self._make_sources()
        self.stats: Dict[str, SourceStats] = {}
        for s in self.sources:
            kind = getattr(s, "kind", None) or type(s).__name__
            self.stats.setdefault(s.name, SourceStats(s.name, str(kind)))

        self._encoder_done = threading.Event()
        self._chunks = ChunkQueue(config.batching.queue_chunks, self._encoder_done)
        plan = restore(self.checkpoints, self.encoder, self.stats)
        self._resume: Dict[str, dict] = plan.resume
        self.commit = CommitLog(self.checkpoints, self.stats)
        self.rows = RowBuilder(self.model_id, self.window_frames, self.k)
        self.alerts = make_alert_engine(config, self.model, self.model_id)  # None: no triggers
        b = config.batching
        self.encode = EncodeStage(self.encoder, self.rows, self.commit, self._chunks, self.stats,
                                  self.stop_event, max_batch_chunks=b.max_batch_chunks,
                                  max_wait_s=b.max_wait_s, restored=plan)
        w = config.writer
        self.writer = ClipWriter(config.archive, config.table, dim=self.model.dim,
                                 model_id=self.model_id, batch_rows=w.batch_rows,
                                 flush_interval_s=w.flush_interval_s,
                                 optimize_every_s=w.optimize_interval_s,
                                 index_min_rows=w.index_min_rows, on_commit=self._on_commit,
                                 on_retry=self.commit.apply, retry_max_s=w.retry_max_s,
                                 max_pending_rows=w.max_pending_rows, cancel=self.stop_event,
                                 keep_versions_s=w.keep_versions_s,
                                 retention=RetentionPolicy.from_config(config),
                                 after_retention=self.checkpoints.forget_files,
                                 append=config.writer_append(),
                                 maintenance=config.node.maintenance,
                                 storage_options=config.storage_options or None,
                                 model_fingerprint=getattr(self.model, "fingerprint", None))
        self.commit.attach(self.writer)
        self._disk_low: Dict[str, bool] = {}
        self.runners: List[SourceRunner] = []
        self.started = time.time()

    # ------------------------------------------------------------------ setup

    def _make_sources(self):
        return make_sources(self.cfg, self.model.image_size, self.checkpoints.is_file_done)

    def _on_commit(self, batch: List[ClipRow]):
        """Writer thread, after `batch` is in LanceDB."""
        self.commit.committed(batch, self.on_rows)
        if self.alerts is not None:
            self.alerts.committed(batch)  # evaluated on the alerts thread, never blocks

    # ------------------------------------------------------------------ the encoder's numbers

    @property
    def stage_s(self) -> collections.Counter:
        return self.encode.stage_s

    @property
    def encode_batches(self) -> int:
        return self.encode.encode_batches

    @property
    def last_batch_s(self) -> float:
        return self.encode.last_batch_s

    @property
    def batch_latency_observer(self):
        return self.encode.batch_latency_observer

    @batch_latency_observer.setter
    def batch_latency_observer(self, fn: Callable[[float, int], None] | None):
        self.encode.batch_latency_observer = fn

    @property
    def _fatal(self) -> BaseException | None:
        return self.encode.fatal

    # ------------------------------------------------------------------ lifecycle

    def start(self):
        if self.alerts is not None:
            self.alerts.start()
        for src in self.sources:
            r = SourceRunner(src, self._chunks, self.stats[src.name], k=self.k,
                             fps=source_fps(self.cfg, src), stop_event=self.stop_event,
                             is_file_done=self.checkpoints.is_file_done, resume=self._resume,
                             restart=self.restart, backpressure=self.writer.backpressure)
            r.start()
            self.runners.append(r)
        self.encode.start()

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
        # was requested, sources get a while to notice (encode.STOP_GRACE_S).
        self.encode.thread.join()
        code = 0
        if self.writer.stalled:  # a full disk at shutdown: retry a while, not the whole minute
            flush_timeout = min(flush_timeout, 10.0)
        try:
            self.writer.close(optimize=not self.stop_event.is_set(), timeout=flush_timeout)
        except Exception as e:
            log.error("writer did not flush cleanly: %s", e)
            code = 1
        try:
            self.commit.apply()
        except Exception as e:
            log.error("last checkpoint not written: %s", e)
            code = 1
        self.checkpoints.close()
        if self.alerts is not None:
            self.alerts.close()
        if self._fatal is not None:
            log.error("indexer stopped on an internal error: %r", self._fatal)
            code = 1
        return code

    def run(self) -> int:
        self.start()
        return self.wait()

    # ------------------------------------------------------------------ status

    def status(self) -> dict:
        sources = {}
        by_name = {getattr(s, "name", None): s for s in self.sources}
        reused = collections.defaultdict(list)
        for key, ref in list(self.encode.open.items()):
            reused[ref.source].append(self.encoder.reused_share(key))
        for name, st in self.stats.items():
            snap = st.snapshot()
            connection_state(snap, by_name.get(name))
            r = reused.get(name)
            snap["reused"] = round(sum(r) / len(r), 4) if r else None  # share of patches reused
            sources[name] = snap
        enc = self.encode
        return dict(
            pid=os.getpid(), started=self.started, updated=time.time(),
            archive=self.cfg.archive, model=self.model_id,
            running=not self._encoder_done.is_set(), stopping=self.stop_event.is_set(),
            encoder=dict(batches=enc.encode_batches, last_batch_s=round(enc.last_batch_s, 4),
                         queued_chunks=self._chunks.qsize(), open_streams=len(enc.open),
                         precision=self.encoder.precision,
                         reuse_threshold=(self.encoder.reuse.settings.threshold
                                          if self.encoder.reuse is not None else 0.0),
                         stage_s={k: round(v, 3) for k, v in enc.stage_s.items()}),
            writer=self.writer_status(),
            disk=self.disk_status(),
            sources=sources,
            **({"alerts": self.alerts.status()} if self.alerts is not None else {}),
        )

    def writer_status(self) -> dict:
        """The writer's numbers and health; a checkpoint failure the writer has not seen yet
        (the encoder's own checkpoint of a batch without rows) counts as a stall too."""
        w = self.writer.stats()
        c = self.commit
        w["checkpoint_error"] = c.error
        w["checkpoint_failures"] = c.failures
        w["checkpoint_bytes"] = self.checkpoints.size_bytes()
        if c.error is not None and w["state"] == "ok":
            w.update(state="stalled", error=f"checkpoint: {c.error}", since=c.failing_since)
        return w

    def disk_status(self) -> dict:
        """Free space where the archive and the state directory live; ``low`` below
        disk.warn_free_mb (logged once when it happens, once when it is over)."""
        import shutil

        out = {}
        limit = self.cfg.disk.warn_free_mb * 2**20
        for what, path in (("archive", self.cfg.archive), ("state", self.cfg.state_dir)):
            if "://" in str(path):
                continue  # object storage: no filesystem to watch
            try:
                usage = shutil.disk_usage(path)
            except OSError:
                continue
            low = usage.free < limit
            if low != self._disk_low.get(what, False):
                if low:
                    log.warning("low disk space: %s (%s) has %.0f MB free (warn below %.0f MB)",
                                what, path, usage.free / 2**20, self.cfg.disk.warn_free_mb)
                else:
                    log.info("disk space: %s (%s) has %.0f MB free again", what, path,
                             usage.free / 2**20)
                self._disk_low[what] = low
            out[what] = dict(path=str(path), free_bytes=usage.free, total_bytes=usage.total,
                             low=low)
        return out
