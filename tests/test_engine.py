"""The engine's stages alone: commit bookkeeping (no model, no threads), restore planning, and
the supervised restart of a crashed source (a SourceRunner without an encoder)."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from pystream.checkpoint import CheckpointStore
from pystream.decode import Frame
from pystream.engine.commit import (ENCODER_KEY, CommitLog, plan_restore, restore,
                                    restore_source_stats, resume_point)
from pystream.engine.ingest import RestartPolicy, SourceRunner
from pystream.engine.messages import ChunkItem, ChunkQueue, EndItem
from pystream.engine.stats import SourceStats
from pystream.sources import Segment


@dataclass
class Row:
    source: str
    level: int
    end: float
    bad: bool = False

    def row_id(self):
        return f"{self.source}|{self.end}"


class FakeWriter:
    """Takes rows like ClipWriter.write (a 'bad' row raises ValueError); commits on demand."""

    def __init__(self):
        self.pending = []

    def write(self, rows):
        if any(r.bad for r in rows):
            raise ValueError("vector has NaN")
        self.pending += rows

    def flush(self, log: CommitLog, n=None):
        n = len(self.pending) if n is None else n
        batch, self.pending = self.pending[:n], self.pending[n:]
        log.committed(batch)


@pytest.fixture
def store(tmp_path):
    s = CheckpointStore(tmp_path)
    yield s
    s.close()


def _log(store, *names):
    stats = {n: SourceStats(n, "test") for n in names}
    w = FakeWriter()
    return CommitLog(store, stats, w), w, stats


STREAM = {"file:cams|a.mp4": dict(source="cams", uri="a.mp4", live=False,
                                  file_key=["a.mp4", 10, 1.5], next_frame=8)}


def test_marker_checkpointed_only_when_all_its_rows_are_committed(store):
    log, w, stats = _log(store, "cams")
    log.add([Row("cams", 0, 12.0), Row("cams", 1, 24.0)], STREAM, b"state1", [], {"cams": 24.0})
    assert store.get(ENCODER_KEY) is None  # nothing committed yet
    w.flush(log, 1)
    assert store.get(ENCODER_KEY) is None and log.pending == 1  # half of the marker's rows
    w.flush(log)
    progress, state = store.get_with_state(ENCODER_KEY)
    assert progress["streams"] == STREAM and state == b"state1" and log.pending == 0
    assert store.get("cams") == {"last_end": 24.0, "live": False, "rows": 2, "files_done": 0}
    assert stats["cams"].rows == 2 and stats["cams"].last_indexed_end == 12.0  # level 0 only


def test_newest_ready_marker_wins_and_files_are_marked_done_first(store):
    log, w, stats = _log(store, "cams")
    log.add([Row("cams", 0, 4.0)], STREAM, b"s1", [("cams", "a.mp4", 10, 1.5)], {"cams": 4.0})
    log.add([Row("cams", 0, 8.0)], {}, None, [("cams", "b.mp4", 20, 2.5)], {"cams": 8.0})
    log.add([Row("cams", 0, 9.0)], {}, b"s3", [], {"cams": 9.0})
    w.flush(log, 2)  # the first two markers are complete, the third is not
    assert store.is_file_done("cams", "a.mp4", 10, 1.5)
    assert store.is_file_done("cams", "b.mp4", 20, 2.5)
    progress, state = store.get_with_state(ENCODER_KEY)
    assert progress["streams"] == {} and state is None
    assert store.get("cams")["last_end"] == 8.0 and stats["cams"].files_done == 2


def test_empty_batch_checkpoints_at_once_when_nothing_is_outstanding(store):
    log, w, _ = _log(store, "cams")
    log.add([], STREAM, b"s", [("cams", "a.mp4", 10, 1.5)], {})
    assert store.is_file_done("cams", "a.mp4", 10, 1.5)
    assert store.get_with_state(ENCODER_KEY)[1] == b"s"
    log.add([Row("cams", 0, 1.0)], {}, None, [], {})
    log.add([], {}, b"later", [], {})  # waits for the row before it
    assert store.get_with_state(ENCODER_KEY)[1] == b"s"
    w.flush(log)
    assert store.get_with_state(ENCODER_KEY)[1] == b"later"


def test_rejected_row_is_dropped_and_counted_as_an_error(store):
    log, w, stats = _log(store, "cams")
    good = log.add([Row("cams", 0, 1.0), Row("cams", 0, 2.0, bad=True), Row("cams", 0, 3.0)],
                   {}, None, [], {"cams": 3.0})
    assert [r.end for r in good] == [1.0, 3.0] and log.rows_enqueued == 2
    assert stats["cams"].errors == 1 and "row rejected" in stats["cams"].last_error
    w.flush(log)
    assert store.get("cams")["rows"] == 2


def test_on_rows_hook_runs_before_the_checkpoint(store):
    log, w, _ = _log(store, "cams")
    seen = []
    log.add([Row("cams", 0, 1.0)], STREAM, b"s", [], {"cams": 1.0})
    log.committed(w.pending, on_rows=lambda b: seen.append(store.get(ENCODER_KEY)))
    assert seen == [None] and store.get(ENCODER_KEY) is not None


def test_live_source_progress_and_downtime_gap(store):
    log, w, stats = _log(store, "cam")
    stats["cam"].update(live=True)
    log.add([Row("cam", 0, 100.0)], {}, None, [], {"cam": 100.0})
    w.flush(log)
    assert store.get("cam")["live"] is True
    fresh = {"cam": SourceStats("cam", "stream")}
    restore_source_stats(store, fresh, now=160.0)
    st = fresh["cam"]
    assert st.live and st.rows == 1 and st.last_indexed_end == 100.0
    (gap,) = st.gaps
    assert gap["start"] == 100.0 and gap["end"] == 160.0 and gap["message"] == "daemon was down"


def test_plan_restore_resumes_files_and_drops_live_and_done_streams():
    progress = {"streams": {
        "file:cams|a.mp4": dict(source="cams", uri="a.mp4", live=False,
                                file_key=["a.mp4", 10, 1.5], next_frame=8),
        "file:cams|b.mp4": dict(source="cams", uri="b.mp4", live=False,
                                file_key=["b.mp4", 20, 2.5], next_frame=4),
        "live:cam|x": dict(source="cam", uri="rtsp://x", live=True, file_key=None, next_frame=3),
    }}
    done = {("cams", "b.mp4", 20, 2.5)}
    plan = plan_restore(progress, lambda *fk: fk in done)
    assert sorted(plan.drop) == ["file:cams|b.mp4", "live:cam|x"]
    assert list(plan.resume) == ["file:cams|a.mp4"]
    ref = plan.open["file:cams|a.mp4"]
    assert ref.source == "cams" and ref.file_key == ("a.mp4", 10, 1.5) and not ref.live
    assert plan.next_frame == {"file:cams|a.mp4": 8}
    assert plan_restore(None, lambda *fk: False).resume == {}


class FakeEncoder:
    def __init__(self, fail=False):
        self.fail, self.loaded, self.dropped = fail, None, []

    def load_state_bytes(self, b):
        if self.fail:
            raise ValueError("state of another model")
        self.loaded = b

    def drop(self, key):
        self.dropped.append(key)


def test_restore_loads_the_state_and_drops_live_streams(store):
    streams = dict(STREAM, **{"live:cam|x": dict(source="cam", uri="rtsp://x", live=True,
                                                 file_key=None, next_frame=3)})
    store.put(ENCODER_KEY, {"streams": streams}, b"carried")
    store.put("cams", {"rows": 5, "files_done": 1, "live": False, "last_end": 9.0})
    enc, stats = FakeEncoder(), {"cams": SourceStats("cams", "folder")}
    plan = restore(store, enc, stats)
    assert enc.loaded == b"carried" and enc.dropped == ["live:cam|x"]
    assert list(plan.resume) == ["file:cams|a.mp4"] and plan.next_frame["file:cams|a.mp4"] == 8
    assert stats["cams"].rows == 5 and stats["cams"].files_done == 1 and not stats["cams"].gaps
    # a state another model wrote: unfinished files start over, nothing is resumed
    plan = restore(store, FakeEncoder(fail=True), {"cams": SourceStats("cams", "folder")})
    assert plan.resume == {} and plan.open == {}


def test_resume_point():
    info = dict(file_key=["a.mp4", 10, 1.5], next_frame=8)
    assert resume_point(None, ("a.mp4", 10, 1.5)) == 0
    assert resume_point(info, ("a.mp4", 10, 1.5)) == 8
    assert resume_point(info, ("a.mp4", 11, 1.5)) is None  # the file changed: start over


# ----------------------------------------------------------------------------- supervision

class CrashingSource:
    """Raises in segments() `crashes` times, then yields one live segment of 5 frames."""

    def __init__(self, crashes):
        self.name, self.crashes, self.calls = "cam", crashes, 0

    def segments(self, stop):
        self.calls += 1
        if self.calls <= self.crashes:
            raise OSError(f"device vanished ({self.calls})")
        frames = (Frame(i, float(i), 100.0 + i, np.zeros((8, 8, 3), np.uint8)) for i in range(5))
        yield Segment(self.name, "rtsp://cam", "cam", True, 100.0, frames)


def _runner(src, stop, policy):
    q = ChunkQueue(100, threading.Event())
    st = SourceStats(src.name, "test")
    r = SourceRunner(src, q, st, k=4, fps=1.0, stop_event=stop,
                     is_file_done=lambda *a: False, resume={}, restart=policy)
    return r, q, st


def _drain(q):
    out = []
    while True:
        try:
            out.append(q.get(timeout=0))
        except queue.Empty:
            return out


def test_crashed_source_is_restarted_with_backoff():
    src, stop = CrashingSource(crashes=2), threading.Event()
    r, q, st = _runner(src, stop, RestartPolicy(initial_s=0.05, max_s=1.0))
    t0 = time.monotonic()
    r.start()
    r.thread.join(10)
    assert not r.thread.is_alive() and time.monotonic() - t0 >= 0.05 + 0.1  # 0.05 s, then 0.1 s
    assert src.calls == 3 and st.state == "finished" and st.restarts == 2 and st.errors == 2
    assert [e["kind"] for e in st.events] == ["restart", "restart"]
    assert "device vanished (2)" in st.last_error
    items = _drain(q)
    assert [type(i) for i in items] == [ChunkItem, EndItem]  # 4 frames, then a tail of 1
    assert items[1].tail is not None and items[1].finish
    assert q.producers == 0


def test_source_gives_up_after_max_failures_and_stop_interrupts_backoff():
    src = CrashingSource(crashes=10)
    r, q, st = _runner(src, threading.Event(), RestartPolicy(initial_s=0.01, max_failures=2))
    r.start()
    r.thread.join(10)
    assert src.calls == 3 and st.state == "error" and st.restarts == 2 and q.producers == 0

    stop = threading.Event()
    src = CrashingSource(crashes=10)
    r, q, st = _runner(src, stop, RestartPolicy(initial_s=30.0))
    r.start()
    deadline = time.monotonic() + 5
    while st.state != "restarting" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert st.state == "restarting"
    stop.set()
    r.thread.join(2)
    assert not r.thread.is_alive() and st.state == "stopped" and src.calls == 1


def test_backoff_doubles_up_to_its_cap():
    p = RestartPolicy(initial_s=1.0, max_s=5.0)
    assert [p.backoff(n) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def _engine_config(tmp_path, model_dir, **writer):
    """A whole-engine config for these tests: tiny model, small batches, no HTTP."""
    from pystream.config import parse_config

    return parse_config(dict(archive=str(tmp_path / "arc"), state_dir=str(tmp_path / "state"),
                             model=model_dir, coarse_windows=2, http={"enabled": False},
                             batching={"max_batch_chunks": 4, "max_wait_s": 0.02},
                             writer=writer))


def test_indexer_restarts_a_crashed_source_and_indexes_everything_once(tmp_path):
    """Through the whole engine: a source dies after its first file (e.g. a folder scan hits a
    vanished share); it is restarted, skips nothing it has not done, and ends finished."""
    import os

    import pystream
    from pystream.decode import decode_frames
    from pystream.pipeline import Indexer

    from test_pipeline_fixtures import expected_windows, make_model_dir, write_video

    model_dir = make_model_dir(tmp_path / "tiny")
    videos = [write_video(tmp_path / "a.mp4", 56, seed=1), write_video(tmp_path / "b.mp4", 36,
                                                                       seed=3)]

    class Flaky:
        name, fps, calls = "cams", 1.0, 0

        def segments(self, stop):
            self.calls += 1
            for i, p in enumerate(videos):
                st = os.stat(p)
                yield Segment(self.name, p, f"cams:{p}", False, 0.0,
                              decode_frames(p, 1.0, 64), (p, st.st_size, st.st_mtime))
                if self.calls == 1 and i == 0:
                    raise OSError("share went away")

        def status(self):
            return {}

    cfg = _engine_config(tmp_path, model_dir, batch_rows=4, flush_interval_s=0.1)
    src = Flaky()
    ix = Indexer(cfg, sources=[src], restart=RestartPolicy(initial_s=0.05))
    assert ix.run() == 0
    s = ix.status()["sources"]["cams"]
    assert src.calls == 2 and s["state"] == "finished" and s["restarts"] == 1
    rows = pystream.open(cfg.archive).table.search().select(["uri", "level"]).limit(None) \
        .to_arrow().to_pylist()
    for v in videos:
        n = sum(1 for _ in decode_frames(v, 1.0, 64))
        assert sum(r["uri"] == v for r in rows) == sum(expected_windows(n, coarse=2))


def test_checkpoints_carry_the_state_of_files_only_not_of_live_cameras(tmp_path):
    """A camera and a file encoded together: the encoder checkpoints written while the file is
    open hold the file's carried state and none of the camera's (a live stream restarts live,
    so its tokens would only make every commit write more)."""
    import os

    from pystream.decode import decode_frames
    from pystream.model.streaming import StreamingEncoder
    from pystream.pipeline import Indexer

    from test_pipeline_fixtures import make_model_dir, write_video

    model_dir = make_model_dir(tmp_path / "tiny")
    video = write_video(tmp_path / "a.mp4", 56, seed=1)

    class Camera:
        name, fps = "cam", 1.0

        def segments(self, stop):
            def frames():
                for i in range(120):
                    yield Frame(i, float(i), 1000.0 + i, np.full((64, 64, 3), i, np.uint8))
                    time.sleep(0.01)
            yield Segment(self.name, "udp://cam", "cam", True, 1000.0, frames())

        def status(self):
            return {}

    class Folder:
        name, fps = "cams", 1.0

        def segments(self, stop):
            time.sleep(0.3)  # the camera has carried state by now

            def frames():
                for f in decode_frames(video, 1.0, 64):
                    time.sleep(0.02)
                    yield f
            st = os.stat(video)
            yield Segment(self.name, video, f"cams:{video}", False, 0.0, frames(),
                          (video, st.st_size, st.st_mtime))

        def status(self):
            return {}

    cfg = _engine_config(tmp_path, model_dir, batch_rows=2, flush_interval_s=0.05)
    ix = Indexer(cfg, sources=[Camera(), Folder()])
    saved, put = [], ix.checkpoints.put

    def recording_put(source, progress, state_bytes=None):
        if source == ENCODER_KEY and state_bytes:
            saved.append((progress, state_bytes))
        return put(source, progress, state_bytes)

    ix.checkpoints.put = recording_put
    assert ix.run() == 0
    assert saved, "no checkpoint was written while the file was open"
    both = 0
    for progress, blob in saved:
        enc = StreamingEncoder.__new__(StreamingEncoder)
        enc.reuse = None  # read the carried tokens and counters only
        enc.load_state_bytes(blob)
        files = {k for k, s in progress["streams"].items() if not s["live"]}
        live = {k for k, s in progress["streams"].items() if s["live"]}
        assert set(enc.states.streams()) <= files and set(enc.progress) <= files
        assert not live & (set(enc.states.streams()) | set(enc.progress))
        both += bool(live) and bool(enc.states.streams())
    assert both, "the camera and the file were never open together: the test proves nothing"


# ----------------------------------------------------------------------------- store faults

class LiveSource:
    """A live camera: one segment of `n` frames, one per 0.01 s of its own clock."""

    def __init__(self, n):
        self.name, self.n, self.read = "cam", n, 0

    def segments(self, stop):
        def frames():
            for i in range(self.n):
                self.read += 1
                yield Frame(i, float(i), 1000.0 + i, np.zeros((8, 8, 3), np.uint8))
                time.sleep(0.002)
        yield Segment(self.name, "udp://cam", "cam", True, 1000.0, frames())


def test_live_source_records_a_gap_while_the_writer_is_stalled():
    """Backpressure set and the queue full: the live runner ends its stream, keeps reading
    (and discarding) frames, and once the writer takes rows again starts a new stream and
    records the gap; nothing waits on the camera meanwhile."""
    src, stop, bp = LiveSource(400), threading.Event(), threading.Event()
    q = ChunkQueue(4, threading.Event())
    st = SourceStats("cam", "stream")
    r = SourceRunner(src, q, st, k=4, fps=1.0, stop_event=stop, is_file_done=lambda *a: False,
                     resume={}, backpressure=bp)
    bp.set()  # the writer is stalled at its bound
    r.start()
    deadline = time.monotonic() + 10
    while src.read < 150 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert src.read >= 150, "the runner stopped reading the camera"
    got = _drain(q)  # the encoder catches up ...
    assert [type(i) for i in got] == [ChunkItem] * 4  # the queue filled, then chunks dropped
    bp.clear()  # ... and the writer takes rows again
    deadline = time.monotonic() + 20
    while (r.thread.is_alive() or not q.empty()) and time.monotonic() < deadline:
        got += _drain(q)
        time.sleep(0.01)
    assert not r.thread.is_alive()
    kinds = [type(i).__name__ for i in got]
    # the interrupted stream ends (its windows close before the gap), a new one starts after
    first_end = kinds.index("EndItem")
    assert kinds[:first_end] == ["ChunkItem"] * 4 and got[first_end].tail is None
    assert got[first_end].finish and not got[first_end].mark_done
    assert kinds[first_end + 1:-1] == ["ChunkItem"] * (len(kinds) - first_end - 2)
    assert kinds[-1] == "EndItem" and len(kinds) - first_end - 2 > 0
    (gap,) = st.gaps
    resumed = got[first_end + 1].chunk.times[0]
    assert gap["start"] == 1000.0 + 16 and gap["end"] == resumed and "writer stalled" in gap["message"]
    assert st.frames_dropped == resumed - gap["start"]
    assert st.frames == 400  # dropped frames were sampled too
    assert st.snapshot()["frames_dropped"] == st.frames_dropped


class FailingTxn(CheckpointStore):
    fail = False

    def transaction(self):
        if self.fail:
            raise OSError(28, "No space left on device")
        return super().transaction()


def test_failed_checkpoint_is_kept_merged_and_retried(tmp_path):
    store = FailingTxn(tmp_path)
    log, w, stats = _log(store, "cams")
    store.fail = True
    log.add([Row("cams", 0, 4.0)], STREAM, b"s1", [("cams", "a.mp4", 10, 1.5)], {"cams": 4.0})
    log.add([Row("cams", 0, 8.0)], {}, b"s2", [("cams", "b.mp4", 20, 2.5)], {"cams": 8.0})
    with pytest.raises(OSError):
        w.flush(log)
    assert log.pending == 1 and "No space" in log.error and log.failing_since is not None
    assert store.get(ENCODER_KEY) is None and stats["cams"].files_done == 0
    store.fail = False
    log.apply()  # the writer's retry
    assert log.pending == 0 and log.error is None
    assert store.is_file_done("cams", "a.mp4", 10, 1.5)
    assert store.is_file_done("cams", "b.mp4", 20, 2.5)
    assert store.get_with_state(ENCODER_KEY)[1] == b"s2" and stats["cams"].files_done == 2
    assert store.get("cams")["files_done"] == 2
    store.close()


def test_markers_waiting_for_rows_are_bounded(store):
    from pystream.engine.commit import MAX_MARKERS

    log, w, _ = _log(store, "cams")
    for i in range(100):
        log.add([Row("cams", 0, float(i))], STREAM, bytes(1000), [("cams", f"{i}.mp4", 1, 1.0)],
                {"cams": float(i)})
    assert log.pending == MAX_MARKERS
    w.flush(log)
    assert log.pending == 0 and len(store.files_done("cams")) == 100


def test_stalled_writer_holds_the_encoder_back_then_recovers(tmp_path):
    """A real ClipWriter whose commits fail for a while: pending rows stop at the bound, the
    encoder (here: the thread calling CommitLog.add) waits with `backpressure` set, the writer
    reports "stalled"; then every row lands once and the checkpoints follow."""
    from pystream.store import ClipRow
    from pystream.writer import ClipWriter

    stats = {"cam": SourceStats("cam", "stream")}
    log = CommitLog(store := CheckpointStore(tmp_path / "state"), stats)
    writer = ClipWriter(str(tmp_path / "arc"), dim=4, model_id="m", batch_rows=4,
                        flush_interval_s=0.02, optimize_every_s=1e9, retry_backoff_s=0.05,
                        retry_max_s=0.1, max_pending_rows=12, on_commit=log.committed,
                        on_retry=log.apply)
    log.attach(writer)
    real, broken = writer._commit, threading.Event()
    broken.set()

    def commit(batch):
        if broken.is_set():
            raise RuntimeError("lance error: LanceError(IO): No space left on device "
                               "(os error 28), /x/y/writer.rs:1:2")
        real(batch)
    writer._commit = commit

    def encoder():
        for i in range(40):
            log.add([ClipRow("cam", "udp://cam", 0, 1e9 + 4 * i, 1e9 + 4 * i + 12,
                             np.ones(4, np.float32))], {}, None, [], {"cam": 1e9 + 4 * i + 12})
    t = threading.Thread(target=encoder, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not (writer.backpressure.is_set() and writer.stalled) and time.monotonic() < deadline:
        time.sleep(0.01)
    s = writer.stats()
    assert writer.backpressure.is_set() and s["backpressure"] and t.is_alive()
    assert s["state"] == "stalled" and s["pending"] == 12 and s["errors"] >= 1
    assert s["error"] == "RuntimeError: LanceError(IO): No space left on device (os error 28)"
    broken.clear()
    t.join(10)
    writer.close(optimize=False, timeout=10)
    assert writer.stats()["state"] == "ok" and writer.rows_written == 40
    ids = [r["id"] for r in writer.table.search().select(["id"]).limit(None).to_arrow().to_pylist()]
    assert len(ids) == len(set(ids)) == 40
    assert store.get("cam")["rows"] == 40 and log.pending == 0
    store.close()
