"""The indexing engine in stages (see pystream.pipeline for the behaviour as a whole).

    messages  queue items and the bounded ChunkQueue (the protocol between the threads)
    ingest    one SourceRunner thread per source: skip done files, resume, chunk, backpressure,
              supervised restart of a crashed source
    encode    the encoder thread: batching, per-stream fault isolation, end of stream
    rows      emissions -> ClipRows with thumbnails (encoder thread)
    commit    markers, commit watermark, checkpoints, restore (no threads; unit-tested)
    stats     SourceStats (thread-safe per-source numbers)
    indexer   the Indexer facade that composes them
"""

from .commit import ENCODER_KEY
from .indexer import Indexer, load_video_model, model_settings
from .ingest import RestartPolicy
from .stats import SourceStats

__all__ = ["ENCODER_KEY", "Indexer", "RestartPolicy", "SourceStats", "load_video_model",
           "model_settings"]
