"""Prometheus metrics: the same numbers as the status, in the exposition format.

Counters and gauges are read from the indexer's status at scrape time (a custom collector), so
there is one source of truth; only the encoder batch latency is a real histogram, observed by
the encoder thread. A private registry keeps several indexers (tests) from colliding.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StatusCollector:
    def __init__(self, get_status: Callable[[], dict | None]):
        self.get_status = get_status

    def collect(self):
        s = self.get_status() or {}
        sources = s.get("sources") or {}
        fam = {
            "frames": CounterMetricFamily("pystream_frames", "Frames decoded and sampled", labels=["source"]),
            "rows": CounterMetricFamily("pystream_rows", "Clip rows committed to the archive", labels=["source"]),
            "errors": CounterMetricFamily("pystream_errors", "Errors (bad files, decode, encode)", labels=["source"]),
            "files_done": CounterMetricFamily("pystream_files_indexed", "Files fully indexed", labels=["source"]),
            "frames_dropped": CounterMetricFamily("pystream_frames_dropped", "Live frames not indexed while the writer was stalled", labels=["source"]),
            "lag_s": GaugeMetricFamily("pystream_lag_seconds", "Now minus the end of the last indexed window (live sources)", labels=["source"]),
            "fps": GaugeMetricFamily("pystream_fps", "Sampled frames per second", labels=["source"]),
            "reused": GaugeMetricFamily("pystream_reused_patch_share", "Share of patches that reused cached state (static-patch reuse)", labels=["source"]),
        }
        up = GaugeMetricFamily("pystream_source_up", "1 when the source is running", labels=["source"])
        for name, st in sources.items():
            for key, f in fam.items():
                v = st.get(key)
                if v is not None:
                    f.add_metric([name], float(v))
            up.add_metric([name], 1.0 if st.get("state") == "running" else 0.0)
        yield from fam.values()
        yield up
        w = s.get("writer") or {}
        g = GaugeMetricFamily("pystream_writer_pending_rows", "Rows waiting for the writer")
        g.add_metric([], float(w.get("pending", 0)))
        yield g
        # Health (issue 12): a stalled writer (full disk, failing checkpoint) at once.
        g = GaugeMetricFamily("pystream_writer_stalled", "1 while commits or checkpoints fail (rows are queued and retried)")
        g.add_metric([], 1.0 if w.get("state") == "stalled" else 0.0)
        yield g
        c = CounterMetricFamily("pystream_writer_errors", "Failed commit or checkpoint attempts")
        c.add_metric([], float(w.get("errors", 0)))
        yield c
        c = CounterMetricFamily("pystream_retention_deleted_rows", "Rows deleted by retention")
        c.add_metric([], float(w.get("retention_deleted", 0)))
        yield c
        d = GaugeMetricFamily("pystream_disk_free_bytes", "Free bytes on the filesystem", labels=["path"])
        for what, v in (s.get("disk") or {}).items():
            d.add_metric([what], float(v.get("free_bytes", 0)))
        yield d
        e = s.get("encoder") or {}
        q = GaugeMetricFamily("pystream_encoder_queued_chunks", "Chunks waiting for the encoder")
        q.add_metric([], float(e.get("queued_chunks", 0)))
        yield q
        st = CounterMetricFamily("pystream_encoder_stage_seconds", "Encoder-thread seconds per stage", labels=["stage"])
        for stage, v in (e.get("stage_s") or {}).items():
            st.add_metric([stage], float(v))
        yield st
        from .alerts.report import metric_families

        yield from metric_families(s)  # per trigger: fired, last fired, failures; target health


class Metrics:
    """registry + the encoder latency histogram; `render()` gives the /metrics body."""

    def __init__(self, get_status: Callable[[], dict | None]):
        self.registry = CollectorRegistry()
        self.registry.register(_StatusCollector(get_status))
        self.batch_seconds = Histogram(
            "pystream_encoder_batch_seconds", "Wall time of one encoder batch",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry)
        self.batch_chunks = Histogram(
            "pystream_encoder_batch_chunks", "Chunks per encoder batch",
            buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)

    def observe_batch(self, seconds: float, chunks: int) -> None:
        self.batch_seconds.observe(seconds)
        self.batch_chunks.observe(chunks)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "0.0.0.0"):
        """A separate exporter port (metrics.port in the config)."""
        from prometheus_client import start_http_server

        return start_http_server(port, addr=host, registry=self.registry)
