"""The whole engine on real live streams: Indexer + real StreamSource + real streaming encoder
(tiny random-weight CLIP) + real ClipWriter/LanceDB, fed by real local servers on 127.0.0.1:
VLC's RTSP server (as user nobody) and ffmpeg pushing MPEG-TS over UDP, next to an
unreachable camera.

- both live sources are indexed while the streams run: windows of 12 sampled frames
  (3 chunks of 4) at the sample fps, one every chunk, with wall-clock start/end close to now;
  the unreachable source is shown as down (with its error) and does not hold the others up;
- the RTSP server is killed and restarted on the same port: the source reconnects, the outage
  is a gap in status, new rows arrive after it and no window spans it; row ids are unique;
- stop() + wait() is prompt, returns 0, and the live streams' last (partial) windows are
  committed: the last window of each stream ends with its last decoded frame.

Timing: sample fps 2 -> a chunk is 2 s of stream, a window 6 s, so the first row of a stream
appears ~6-8 s after its first frame. Every wait is bounded.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

import pystream
from pystream.archive import ArchiveNotFoundError
from pystream.config import parse_config
from pystream.pipeline import Indexer

from streams import RtspServer, ffmpeg_udp, free_port, have, make_video, shared_copy
from test_pipeline_fixtures import make_model_dir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (have("cvlc") and have("ffmpeg")),
                       reason="needs vlc and ffmpeg (scripts/install_test_deps.sh)"),
]

FPS = 2.0  # sample rate of every source
K = 4  # frames per chunk (TempMe's schedule)
WINDOW = 12  # frames per window (3 chunks)
DT = 1.0 / FPS
DEAD_URL = "rtsp://127.0.0.1:1/none"  # nothing listens on port 1: connection refused
ROW_COLUMNS = ["id", "source", "uri", "level", "start", "end"]


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A 60 s, 10 fps H.264 clip (keyframe every second) that user nobody (vlc) can read.
    Longer than any test: vlc's RTSP server ends the session when a looped file starts over
    (libav sees the end of the stream), which would add reconnects and gaps to every test."""
    d = tmp_path_factory.mktemp("live")
    path = shared_copy(make_video(d / "live.mp4", seconds=60, fps=10),
                       name=f"pipeline-live-{time.time_ns()}.mp4")
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture
def cleanup():
    """Things to stop when the test ends, whatever happens: indexers first, then servers."""
    items = []
    yield items.append
    for it in reversed(items):
        try:
            if isinstance(it, Indexer):
                if it.status()["running"]:  # not yet stopped by the test itself
                    it.stop()
                    it.wait(flush_timeout=10)
            else:
                it.stop()
        except Exception:  # noqa: BLE001 - the other items must still be stopped
            pass


def stream_cfg(name, url, **kw):
    d = dict(type="stream", name=name, url=url, open_timeout_s=5, read_timeout_s=3,
             stall_timeout_s=4, backoff_initial_s=0.3, backoff_max_s=2)
    d.update(kw)
    return d


def make_cfg(tmp_path, model_dir, sources):
    return parse_config(dict(
        archive=str(tmp_path / "arc"), state_dir=str(tmp_path / "state"), model=model_dir,
        threads=1, sample_fps=FPS, hop_chunks=1, coarse_windows=2,
        batching={"max_batch_chunks": 8, "max_wait_s": 0.05},
        writer={"batch_rows": 4, "flush_interval_s": 0.2, "optimize_interval_s": 3600},
        http={"enabled": False}, sources=sources))


class Rows:
    """The archive as a reader in another process would see it (pystream.open)."""

    def __init__(self, path):
        self.arc = pystream.open(path, read_consistency_interval=0)

    def count(self, source, level=0) -> int:
        try:
            return self.arc.count(sources=[source], level=level)
        except ArchiveNotFoundError:
            return 0

    def all(self) -> list[dict]:
        try:
            t = self.arc.table
        except ArchiveNotFoundError:
            return []
        return t.search().select(ROW_COLUMNS).limit(None).to_arrow().to_pylist()

    def of(self, source, level=0) -> list[dict]:
        rows = [r for r in self.all() if r["source"] == source and r["level"] == level]
        return sorted(rows, key=lambda r: r["start"])


def wait_until(pred, timeout, what, ix=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if ix is not None and ix._fatal is not None:
            raise AssertionError(f"indexer failed: {ix._fatal!r}")
        time.sleep(0.25)
    detail = "" if ix is None else f"; sources={ix.status()['sources']!r}"
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{detail}")


def committed(ix) -> list:
    """Rows the writer committed (Indexer.on_rows hook), in commit order."""
    out = []
    lock = threading.Lock()

    def hook(batch):
        with lock:
            out.extend(batch)

    ix.on_rows = hook
    return out


def check_windows(rows, now, *, max_age, closed=False):
    """Level-0 rows of one connection of a live source, in order: windows of 12 sampled frames
    (6 s at 2 fps), one per chunk (2 s), on the wall clock.

    The first two windows of a connection are shorter on the wall clock: libav's stream probe
    holds back the first ~2 s of frames, which then arrive together, and StreamSource gives
    frames never a time later than their arrival (pystream.sources.stream, "Sampling and
    time"). From the third window on (its first frame is the 9th), every frame arrived in real
    time.

    closed: the connection ended (disconnect or stop): its last window holds the tail chunk,
    padded by repeating its last frame, so it may cover fewer than 12 frames' time."""
    assert len(rows) >= 3, rows
    for r in rows:
        assert r["start"] < r["end"] <= now + 0.5, r
        assert now - r["end"] < max_age, f"row ends {now - r['end']:.1f} s before now: {r}"
        assert r["end"] - r["start"] <= WINDOW * DT + 0.5, r
    steady = rows[2:]
    if closed and len(steady) > 1:
        last = steady.pop()
        assert last["end"] - last["start"] >= 2 * K * DT - 0.5, last
        assert abs(last["start"] - steady[-1]["start"] - K * DT) <= 0.5, (steady[-1], last)
    lengths = [round(r["end"] - r["start"], 3) for r in steady]
    assert all(abs(x - WINDOW * DT) <= 0.5 for x in lengths), lengths
    hops = [round(b["start"] - a["start"], 3) for a, b in zip(steady, steady[1:])]
    assert all(abs(h - K * DT) <= 0.5 for h in hops), hops
    ends = [r["end"] for r in rows]
    assert ends == sorted(ends) and len(set(ends)) == len(ends), ends


# ----------------------------------------------------------------------------- tests

def test_rtsp_and_udp_indexed_live_next_to_a_dead_camera(tmp_path, model_dir, media, cleanup):
    t0 = time.time()  # no frame of any stream can be older than this
    rtsp = RtspServer(media, log=tmp_path / "vlc.log").start()
    cleanup(rtsp)
    udp_port = free_port(socket.SOCK_DGRAM)
    udp_url = f"udp://127.0.0.1:{udp_port}"
    cfg = make_cfg(tmp_path, model_dir, [
        stream_cfg("gate", rtsp.url),
        stream_cfg("dock", udp_url),
        stream_cfg("dead", DEAD_URL),
    ])
    ix = Indexer(cfg)
    rows_seen = committed(ix)
    ix.start()
    cleanup(ix)
    # The UDP receiver binds in its reader thread; the sender may start right away (packets to
    # an unbound port are simply lost, as for a real camera).
    cleanup(ffmpeg_udp(media, udp_port, log=tmp_path / "ffmpeg.log").start())

    arc = Rows(cfg.archive)
    wait_until(lambda: arc.count("gate") >= 3 and arc.count("dock") >= 3, 40,
               "three windows of each live source in the archive", ix)
    now = time.time()
    for name in ("gate", "dock"):
        rows = arc.of(name)
        check_windows(rows, now, max_age=20)
        assert rows[0]["start"] >= t0, (rows[0], t0)
        # Rows arrive while the stream runs: the newest window ended at most about a chunk
        # (2 s) + encode + commit ago.
        assert now - rows[-1]["end"] < K * DT + 4.0, (now, rows[-1])

    st = ix.status()
    assert st["running"] and not st["stopping"]
    dead = st["sources"]["dead"]
    assert dead["state"] in ("down", "connecting"), dead
    assert dead["rows"] == 0 and dead["frames"] == 0 and dead["errors"] >= 1
    assert DEAD_URL in dead["last_error"] and "cannot connect" in dead["last_error"], dead
    for name, url in (("gate", rtsp.url), ("dock", udp_url)):
        s = st["sources"][name]
        assert s["state"] == "running", s
        assert s["uri"] == url and s["frames"] >= WINDOW + 2 * K and s["rows"] >= 3, s
        assert s["lag_s"] is not None and s["lag_s"] < K * DT + 4.0, s
        assert s["errors"] == 0 and not s["gaps"], s
    assert arc.count("dead") == 0

    # Still indexing while the dead camera keeps failing: more windows arrive, one per chunk.
    n = {name: arc.count(name) for name in ("gate", "dock")}
    wait_until(lambda: all(arc.count(name) >= n[name] + 2 for name in n), 20,
               "more windows while the stream runs", ix)
    now = time.time()
    for name in ("gate", "dock"):
        rows = arc.of(name)
        check_windows(rows, now, max_age=30)
        assert now - rows[-1]["end"] < K * DT + 4.0, (now, rows[-1])
    st2 = ix.status()["sources"]
    assert st2["dead"]["errors"] > dead["errors"]  # it keeps retrying
    assert st2["dead"]["state"] in ("down", "connecting")
    assert st2["gate"]["state"] == st2["dock"]["state"] == "running"
    ids = [r.row_id() for r in rows_seen]
    assert len(ids) == len(set(ids))


def test_rtsp_server_killed_and_restarted_gap_and_reconnect(tmp_path, model_dir, media, cleanup):
    rtsp = RtspServer(media, log=tmp_path / "vlc.log").start()
    cleanup(rtsp)
    cfg = make_cfg(tmp_path, model_dir, [stream_cfg("gate", rtsp.url)])
    ix = Indexer(cfg)
    rows_seen = committed(ix)
    ix.start()
    cleanup(ix)
    arc = Rows(cfg.archive)
    wait_until(lambda: arc.count("gate") >= 3, 40, "windows before the outage", ix)

    rtsp.stop()
    killed = time.time()
    wait_until(lambda: ix.status()["sources"]["gate"]["state"] in ("down", "connecting"), 15,
               "the lost stream to show as down", ix)
    s = ix.status()["sources"]["gate"]
    assert "stream lost" in (s["last_error"] or "") or "cannot connect" in (s["last_error"] or ""), s
    n_before = arc.count("gate")
    before = arc.of("gate")
    assert not s["gaps"]

    rtsp.start()  # same port
    restarted = time.time()
    wait_until(lambda: ix.status()["sources"]["gate"]["gaps"], 30, "the gap after reconnecting", ix)
    [gap] = ix.status()["sources"]["gate"]["gaps"]
    assert gap["start"] <= killed + 0.5 and gap["end"] >= restarted - 0.5, (gap, killed, restarted)
    assert gap["uri"] == rtsp.url
    assert any(e["kind"] == "reconnect" for e in ix.status()["sources"]["gate"]["events"])
    # Windows after the restart.
    wait_until(lambda: sum(r["start"] >= gap["end"] for r in arc.of("gate")) >= 3, 30,
               "windows after the restart", ix)
    s = ix.status()["sources"]["gate"]
    assert s["state"] == "running", s

    rows = arc.of("gate")
    assert len(rows) > n_before
    # Every window lies on one side of the gap: a window before it ends with the last frame
    # before the outage (frame time gap.start, lasting 1/FPS); one after starts at or after the
    # first frame after it. (A window containing the last frame before the gap does have
    # start < gap.start < end, legitimately.)
    eps = 1e-3
    for r in rows + arc.of("gate", level=1):
        before_gap = r["end"] <= gap["start"] + DT + eps
        after_gap = r["start"] >= gap["end"] - eps
        assert before_gap or after_gap, (r, gap)
    # The stream was finished at the disconnect: its tail is in the archive.
    last_before = max(r["end"] for r in rows if r["end"] <= gap["start"] + DT + eps)
    assert last_before == pytest.approx(gap["start"] + DT, abs=eps)
    assert {r["id"] for r in before} <= {r["id"] for r in rows}
    check_windows([r for r in rows if r["end"] <= gap["start"] + DT + eps], gap["start"] + DT,
                  max_age=60, closed=True)
    after = [r for r in rows if r["start"] >= gap["end"] - eps]
    check_windows(after, time.time(), max_age=25)
    assert min(r["start"] for r in after) == pytest.approx(gap["end"], abs=eps)
    # Row ids: unique among everything committed, and nothing got overwritten by an id clash.
    ids = [r.row_id() for r in rows_seen]
    assert len(ids) == len(set(ids))
    all_rows = arc.all()
    assert len({r["id"] for r in all_rows}) == len(all_rows)
    assert set(ids) <= {r["id"] for r in all_rows}


def test_clean_stop_commits_the_live_tails(tmp_path, model_dir, media, cleanup):
    rtsp = RtspServer(media, log=tmp_path / "vlc.log").start()
    cleanup(rtsp)
    udp_port = free_port(socket.SOCK_DGRAM)
    cfg = make_cfg(tmp_path, model_dir, [
        stream_cfg("gate", rtsp.url),
        stream_cfg("dock", f"udp://127.0.0.1:{udp_port}"),
        stream_cfg("dead", DEAD_URL),
    ])
    ix = Indexer(cfg)
    rows_seen = committed(ix)
    ix.start()
    cleanup(ix)
    cleanup(ffmpeg_udp(media, udp_port, log=tmp_path / "ffmpeg.log").start())
    arc = Rows(cfg.archive)
    wait_until(lambda: arc.count("gate") >= 3 and arc.count("dock") >= 3, 40,
               "windows of both live sources", ix)
    time.sleep(1.3)  # stop somewhere inside a chunk

    t0 = time.monotonic()
    ix.stop()
    code = ix.wait()
    took = time.monotonic() - t0
    assert code == 0
    assert took < 5.0, f"stop + wait took {took:.1f} s"  # ~0.5 s here
    st = ix.status()
    assert not st["running"] and st["stopping"]
    assert st["writer"]["pending"] == 0
    for name in ("gate", "dock"):
        s = st["sources"][name]
        assert s["state"] == "stopped", s
        rows = arc.of(name)
        # Everything committed is in the archive, and the tail was encoded: the last window
        # ends where the last decoded frame ends.
        assert len(rows) == sum(r.source == name and r.level == 0 for r in rows_seen)
        assert s["rows"] == len(rows) + len(arc.of(name, level=1))
        assert max(r["end"] for r in rows) == pytest.approx(s["last_frame_t"] + DT, abs=1e-3)
        assert s["last_indexed_end"] == pytest.approx(s["last_frame_t"] + DT, abs=1e-3)
        # The coarse level was flushed too.
        assert max(r["end"] for r in arc.of(name, level=1)) == pytest.approx(s["last_frame_t"] + DT,
                                                                            abs=1e-3)
        check_windows(rows, time.time(), max_age=30, closed=True)
    assert arc.count("dead") == 0
    ids = [r.row_id() for r in rows_seen]
    assert len(ids) == len(set(ids)) == len(arc.all())

    # The checkpoint remembers where the live streams were: a restart reports the downtime.
    ix2 = Indexer(cfg)
    try:
        for name in ("gate", "dock"):
            s = ix2.status()["sources"][name]
            [gap] = s["gaps"]
            assert gap["start"] == pytest.approx(st["sources"][name]["last_frame_t"] + DT, abs=1e-3)
            assert "daemon was down" in gap["message"]
    finally:
        ix2.stop()
        ix2.writer.close(optimize=False, timeout=10)
        ix2.checkpoints.close()
