"""The indexing engine: sources -> chunks -> one batched encoder -> one writer -> checkpoints.

The stages live in pystream.engine (one module per thread that owns them); this module keeps
the engine's behaviour in one place and re-exports the ``Indexer`` facade.

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
- ONE writer thread (pystream.writer.ClipWriter) batches rows into LanceDB.

Exactly once. Row ids are deterministic, and the writer upserts on them, so replaying is always
harmless; checkpoints make replay rare and bounded. After every encode batch the encoder thread
records a marker: the number of rows enqueued so far, the encoder's carried state and every open
stream's position (next frame to encode). When the writer's on_commit hook reports that all rows
up to a marker are in LanceDB, that marker is checkpointed (one SQLite transaction), and files
finished in it are marked done. On restart the carried state is restored and a file resumes at
its next frame with its carried tokens, so neither rows nor work are repeated beyond one commit.
Live streams are not resumed mid-window: they restart live and the downtime is recorded as a gap.

Supervision: a source whose ``segments()`` raises is restarted after a backoff (1 s doubling to
60 s by default, ``Indexer(restart=RestartPolicy(...))``) instead of staying dead until the
service restarts; its status shows "restarting" meanwhile.

Shutdown (SIGTERM): sources stop; chunks already queued are encoded; live streams are finished
(their tail is encoded); files cut short are NOT finished (their checkpoint resumes them); the
writer flushes; the last marker is checkpointed.
"""

from __future__ import annotations

from .engine import ENCODER_KEY, Indexer, RestartPolicy, SourceStats, load_video_model
from .engine.stats import MAX_GAPS_KEPT

__all__ = ["ENCODER_KEY", "Indexer", "MAX_GAPS_KEPT", "RestartPolicy", "SourceStats",
           "load_video_model"]
