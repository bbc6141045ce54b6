"""StreamSource against real servers on 127.0.0.1: VLC's RTSP server (as user nobody),
ffmpeg pushing MPEG-TS over UDP, ffmpeg writing live HLS served by http.server; plus
unreachable and hanging endpoints."""

import os
import re
import signal
import socket
import threading
import time

import pytest

from pystream.sources import Segment, SourceEvent, StreamSource, make_source
from streams import (Collector, HlsServer, RtspServer, ffmpeg_udp, free_port, have,
                     make_video, shared_copy)

need_vlc = pytest.mark.skipif(not have("cvlc"), reason="needs vlc (scripts/install_test_deps.sh)")
need_ffmpeg = pytest.mark.skipif(not have("ffmpeg"), reason="needs ffmpeg (scripts/install_test_deps.sh)")

FPS = 2


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("live")
    return make_video(d / "live.mp4", seconds=10, fps=10)


@pytest.fixture
def cleanup():
    """Things to stop at the end of the test, whatever happens (servers, collectors)."""
    items = []
    yield items.append
    for it in reversed(items):
        if isinstance(it, Collector):
            it.close(5)
        else:
            it.stop()


def live_source(url, **kw):
    kw.setdefault("fps", FPS)
    kw.setdefault("size", 32)
    kw.setdefault("open_timeout_s", 5)
    kw.setdefault("read_timeout_s", 3)
    kw.setdefault("stall_timeout_s", 4)
    kw.setdefault("backoff_initial_s", 0.3)
    kw.setdefault("backoff_max_s", 2)
    return StreamSource("cam", url, **kw)


def check_live_frames(frames, n):
    assert len(frames) >= n
    ts = [f.t for f in frames]
    assert ts == sorted(ts), "wall-clock times go backwards"
    assert abs(ts[-1] - time.time()) < 3, "t is not wall clock"
    # sampled at ~FPS by pts: consecutive samples ~1/FPS apart in stream time
    d = [b.pts_s - a.pts_s for a, b in zip(frames, frames[1:])]
    assert all(0.05 < x < 1.5 for x in d), d
    assert all(f.rgb.shape == (32, 32, 3) for f in frames)
    assert len({f.rgb.tobytes() for f in frames}) > 1, "frames should differ (moving shapes)"


@pytest.mark.slow
@need_vlc
def test_rtsp_live_kill_restart_reconnects_with_gap(clip, cleanup, tmp_path):
    media = shared_copy(clip)
    server = RtspServer(media, log=tmp_path / "vlc.log").start()
    cleanup(server)
    src = live_source(server.url)
    c = Collector(src).start()
    cleanup(c)

    c.wait_for(lambda: len(c.frames()) >= 6, 30, "RTSP frames")
    seg: Segment = c.segments[0]["seg"]
    assert seg.live and seg.stream_id == "cam" and seg.file_key is None and seg.uri == server.url
    assert abs(seg.start_time - time.time()) < 10
    check_live_frames(c.segments[0]["frames"], 6)
    assert src.status()["state"] == "running" and src.status()["lag_s"] < 3

    # Server dies: the source notices, reports, and keeps trying with backoff.
    server.stop()
    killed = time.time()
    c.wait_for(lambda: c.kinds("error"), 15, "stream-lost error")
    c.wait_for(lambda: src.status()["reconnects"] >= 2, 20, "reconnect attempts")
    st = src.status()
    assert st["state"] in ("down", "connecting") and st["last_error"]
    assert len(c.segments) == 1
    n_before = len(c.frames())
    last_t = c.segments[0]["frames"][-1].t

    # Server comes back on the same port: frames flow again, the outage is a gap.
    server.start()
    c.wait_for(lambda: len(c.segments) >= 2 and len(c.segments[1]["frames"]) >= 4, 40, "frames after restart")
    [gap] = c.kinds("gap")
    assert gap.start == pytest.approx(last_t) and gap.end == c.segments[1]["frames"][0].t
    assert gap.start <= killed + 0.5 < gap.end  # the outage lies inside the gap
    assert c.kinds("reconnect")
    assert c.segments[1]["seg"].stream_id == "cam"  # same carried-state key after reconnect
    check_live_frames(c.segments[1]["frames"], 4)
    assert len(c.frames()) > n_before
    assert src.status()["state"] == "running" and src.status()["connects"] == 2
    assert c.close(5) < 1.5, "stop not honoured promptly"


@pytest.mark.slow
@need_ffmpeg
def test_udp_mpegts_live_frames(clip, cleanup, tmp_path):
    port = free_port(socket.SOCK_DGRAM)
    src = make_source({"type": "stream", "name": "cam", "url": f"udp://127.0.0.1:{port}",
                       "fps": FPS, "size": 32, "open_timeout_s": 5, "read_timeout_s": 3})
    c = Collector(src).start()  # the receiver binds first, as a real UDP listener would
    cleanup(c)
    cleanup(ffmpeg_udp(clip, port, log=tmp_path / "ffmpeg.log").start())
    c.wait_for(lambda: len(c.frames()) >= 8, 30, "UDP frames")
    check_live_frames(c.frames()[:8], 8)
    # ~FPS samples per second of real time once flowing (not every decoded frame)
    n0, t0 = len(c.frames()), time.monotonic()
    time.sleep(4)
    rate = (len(c.frames()) - n0) / (time.monotonic() - t0)
    assert 0.6 * FPS < rate < 1.6 * FPS, rate
    assert src.status()["fps"] > 0 and src.status()["frames"] == len(c.frames())
    # The reader runs decode_nice (default 10) below the process, and so does the UDP receiver
    # thread libav started from it: the encoder comes first.
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    reader = [t for t in threading.enumerate() if t.name.startswith("pystream-src-cam")]
    assert reader and os.getpriority(os.PRIO_PROCESS, reader[0].native_id) == min(19, base + 10)
    niced = [int(t) for t in os.listdir("/proc/self/task")
             if os.getpriority(os.PRIO_PROCESS, int(t)) == min(19, base + 10)]
    assert len(niced) >= 2, niced
    assert c.close(5) < 1.5
    with pytest.raises(ValueError, match="decode_nice"):
        StreamSource("cam", f"udp://127.0.0.1:{port}", decode_nice=20)


@pytest.mark.slow
@need_ffmpeg
def test_stall_watchdog_reconnects_when_stream_freezes(clip, cleanup, tmp_path):
    # read_timeout_s is long on purpose: libav would sit in the read for 6 s; the watchdog
    # must notice after stall_timeout_s. ffmpeg is frozen with SIGSTOP (socket stays open).
    port = free_port(socket.SOCK_DGRAM)
    src = live_source(f"udp://127.0.0.1:{port}", read_timeout_s=6, stall_timeout_s=2)
    c = Collector(src).start()
    cleanup(c)
    sender = ffmpeg_udp(clip, port, log=tmp_path / "ffmpeg.log").start()
    cleanup(sender)
    c.wait_for(lambda: len(c.frames()) >= 4, 30, "UDP frames")
    sender.signal(signal.SIGSTOP)
    frozen = time.monotonic()
    c.wait_for(lambda: any("stalled" in e.message for e in c.kinds("error")), 8, "stall detected")
    assert time.monotonic() - frozen < 2 + 3  # stall_timeout_s + last frames in flight + poll
    time.sleep(2)
    sender.signal(signal.SIGCONT)
    c.wait_for(lambda: len(c.segments) >= 2 and len(c.segments[1]["frames"]) >= 3, 30, "frames after thaw")
    [gap] = c.kinds("gap")
    assert gap.end - gap.start > 2


@pytest.mark.slow
@need_ffmpeg
def test_hls_live_frames(clip, cleanup, tmp_path):
    server = HlsServer(clip, tmp_path / "hls", log=tmp_path / "hls.log").start()
    cleanup(server)
    src = live_source(server.url)
    c = Collector(src).start()
    cleanup(c)
    c.wait_for(lambda: len(c.frames()) >= 8, 30, "HLS frames")
    frames = c.frames()
    assert [f.t for f in frames] == sorted(f.t for f in frames)
    assert all(abs(f.t - time.time()) < 15 for f in frames)
    assert len({f.rgb.tobytes() for f in frames}) > 1
    assert not c.kinds("error")
    assert c.close(5) < 1.5


def delays(events):
    return [float(re.search(r"in ([0-9.]+) s", e.message).group(1)) for e in events]


def test_unreachable_url_errors_backoff_grows_and_stop_is_prompt(cleanup):
    url = "rtsp://127.0.0.1:1/none"  # nothing listens on port 1: connection refused
    src = live_source(url, backoff_initial_s=0.2, backoff_max_s=1.6)
    c = Collector(src).start()
    cleanup(c)
    c.wait_for(lambda: len(c.kinds("error")) >= 4, 15, "4 failed attempts")
    errs = c.kinds("error")
    for e in errs:
        assert e.source == "cam" and e.uri == url and url in e.message and "cannot connect" in e.message
    d = delays(errs)
    # equal jitter: attempt n waits in [b/2, b], b = 0.2 * 2**n capped at 1.6
    for n, x in enumerate(d):
        b = min(1.6, 0.2 * 2 ** n)
        assert b / 2 - 1e-3 <= x <= b + 0.05, (n, d)
    assert d[3] > d[0]
    st = src.status()
    assert st["state"] in ("down", "connecting") and st["reconnects"] >= 3 and st["failures"] >= 4
    assert st["last_error"] and st["frames"] == 0 and not c.segments
    assert c.close(5) < 1.0, "stop not honoured promptly while backing off"


def test_hanging_server_open_timeout_and_prompt_stop(cleanup):
    # Accepts TCP connections and never answers: av.open blocks until its open timeout.
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    conns = []
    stop_accept = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop_accept.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        src = live_source(f"http://127.0.0.1:{port}/cam.ts", open_timeout_s=1, read_timeout_s=1,
                          backoff_initial_s=0.2, backoff_max_s=0.4)
        c = Collector(src).start()
        cleanup(c)
        c.wait_for(lambda: len(c.kinds("error")) >= 2, 15, "open timeouts")
        assert conns, "the source never connected"
        # stop while a connection attempt is blocked in libav: still prompt
        c.wait_for(lambda: src.status()["state"] == "connecting", 5, "connecting")
        assert c.close(5) < 1.0
        assert not c.thread.is_alive()
    finally:
        stop_accept.set()
        t.join(2)
        srv.close()
        for s in conns:
            s.close()


def test_file_url_is_paced_and_ends(tmp_path):
    path = make_video(tmp_path / "cam.mkv", seconds=2, fps=10)
    src = StreamSource("sim", f"file://{path}", fps=FPS, size=16)
    t0 = time.monotonic()
    items, frames = [], []
    for item in src.segments(threading.Event()):
        items.append(item)
        if isinstance(item, Segment):
            frames += list(item.frames)
    segs = [i for i in items if isinstance(i, Segment)]
    assert len(segs) == 1 and segs[0].live
    # the consumer drives segments(): it ends after the file does
    assert not [i for i in items if isinstance(i, SourceEvent)]
    assert len(frames) == 2 * FPS
    assert time.monotonic() - t0 >= 1.0  # paced like a camera, not read at disk speed
    assert src.status()["state"] == "idle"


def _frames_and_decode_modes(src, n=None):
    frames, modes = [], set()
    for item in src.segments(threading.Event()):
        if isinstance(item, Segment):
            for f in item.frames:
                frames.append(f)
                modes.add(src.status()["decode"])
    return frames, modes


@pytest.mark.parametrize("gop,expect", [(5, "keyframes"), (20, "all")])
def test_decode_auto_skips_non_key_frames_only_when_keyframes_come_often_enough(tmp_path, gop, expect):
    """10 fps video sampled at 2 fps: a 0.5 s GOP has a keyframe at every sample time, so the
    decoder skips the rest; with a 2 s GOP it must keep decoding everything."""
    path = make_video(tmp_path / "cam.mp4", seconds=4, fps=10, gop=gop)
    src = StreamSource("sim", f"file://{path}", fps=FPS, size=16, realtime=False)
    frames, modes = _frames_and_decode_modes(src)
    assert expect in modes
    if expect == "all":
        assert modes == {"all"}
    # Samples stay on the grid either way: one per 1/FPS of stream time.
    assert 7 <= len(frames) <= 8, len(frames)
    d = [b.pts_s - a.pts_s for a, b in zip(frames, frames[1:])]
    assert all(abs(x - 1 / FPS) < 0.06 for x in d), d


def test_decode_keyframes_and_all_give_the_same_samples_on_a_keyframe_grid(tmp_path):
    path = make_video(tmp_path / "cam.mp4", seconds=3, fps=10, gop=5)
    a, _ = _frames_and_decode_modes(StreamSource("a", f"file://{path}", fps=FPS, size=16,
                                                 realtime=False, decode="all"))
    k, modes = _frames_and_decode_modes(StreamSource("k", f"file://{path}", fps=FPS, size=16,
                                                     realtime=False, decode="keyframes"))
    assert modes == {"keyframes"}
    assert [f.pts_s for f in a] == [f.pts_s for f in k]
    for x, y in zip(a, k):  # keyframes decode to the same pixels
        assert (x.rgb.astype(int) - y.rgb.astype(int)).__abs__().max() <= 2
    with pytest.raises(ValueError, match="decode must be one of"):
        StreamSource("bad", f"file://{path}", decode="some")


def test_decode_auto_goes_back_to_every_frame_when_the_gop_grows(tmp_path):
    """Keyframes every 0.5 s for 2 s, then every 2 s: sampled at 2 fps the reader decodes
    keyframes alone (its own decoder), then switches back to the stream's decoder at a
    keyframe."""
    import av
    import numpy as np
    if "libx264" not in av.codecs_available:
        pytest.skip("needs libx264 (forced keyframes)")
    path = tmp_path / "cam.mp4"
    from av.video.frame import PictureType
    keys = {0, 5, 10, 15, 20, 40, 60}
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=10)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        st.options = {"g": "1000", "keyint_min": "1000", "sc_threshold": "0", "bf": "0",
                      "preset": "ultrafast"}
        for i in range(80):
            img = np.full((48, 64, 3), (i * 3) % 255, np.uint8)
            fr = av.VideoFrame.from_ndarray(img, "rgb24")
            fr.pict_type = PictureType.I if i in keys else PictureType.NONE
            for p in st.encode(fr):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    src = StreamSource("sim", f"file://{path}", fps=FPS, size=16, realtime=False)
    frames, _ = _frames_and_decode_modes(src)
    # Counted by the reader itself: sampling its current mode as frames are consumed races
    # with the reader, which may have switched back before the consumer looks.
    assert src.status()["decode_switches"] == 2  # all -> keyframes (0.5 s) -> all (4.0 s)
    # The samples between the last keyframe of the short GOP (2.0 s) and the first of the long
    # one (4.0 s) were skipped before the reader could know the GOP had grown: one GOP is lost.
    # From there on every sample is there, on the grid.
    assert [round(f.pts_s, 2) for f in frames] == [0.0, 0.5, 1.0, 1.5, 2.0, 4.0, 4.5, 5.0,
                                                    5.5, 6.0, 6.5, 7.0, 7.5]


def test_keyframes_only_decoding_skips_the_deblocking_filter_at_a_small_cost_in_pixels(tmp_path):
    """Keyframes decode in a decoder of their own without H.264's in-loop filter (nothing
    references them): the samples differ a little from full decoding, and only a little."""
    import av
    import numpy as np
    if "libx264" not in av.codecs_available:
        pytest.skip("needs libx264 (a deblocking encoder)")
    path = tmp_path / "cam.mp4"
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    with av.open(str(path), "w") as c:  # preset veryfast deblocks (ultrafast does not)
        st = c.add_stream("libx264", rate=10)
        st.width, st.height, st.pix_fmt = 320, 240, "yuv420p"
        st.options = {"g": "5", "preset": "veryfast", "crf": "40", "bf": "0"}
        for i in range(30):
            img = np.roll(base, 4 * i, axis=1)
            for p in st.encode(av.VideoFrame.from_ndarray(img, "rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    a, _ = _frames_and_decode_modes(StreamSource("a", f"file://{path}", fps=FPS, size=224,
                                                 realtime=False, decode="all"))
    k, modes = _frames_and_decode_modes(StreamSource("k", f"file://{path}", fps=FPS, size=224,
                                                     realtime=False, decode="keyframes"))
    assert modes == {"keyframes"} and len(a) == len(k) == 6
    diff = [np.abs(x.rgb.astype(int) - y.rgb.astype(int)).mean() for x, y in zip(a, k)]
    assert 0 < max(diff) < 3, diff


def test_index_url_is_decoded_and_url_is_what_rows_point_at(tmp_path):
    path = make_video(tmp_path / "sub.mp4", seconds=2, fps=10)
    src = StreamSource("cam", "rtsp://127.0.0.1:1/main", index_url=f"file://{path}", fps=FPS,
                       size=16, realtime=False)
    segs, frames = [], []
    for item in src.segments(threading.Event()):
        if isinstance(item, Segment):
            segs.append(item)
            frames += list(item.frames)
    assert len(frames) == 2 * FPS
    assert [s.uri for s in segs] == ["rtsp://127.0.0.1:1/main"]
    assert src.status()["index_url"] == f"file://{path}"


def test_connect_burst_is_dated_back_not_squeezed():
    """Frames libav buffered while probing a live stream arrive at once: they are held until
    the stream's own pace shows, then dated back from there (not all stamped 'now')."""
    import numpy as np
    from pystream.decode import Frame
    from pystream.sources.stream import _BURST_FRAMES, _WallClock

    def fr(i, pts):
        return Frame(index=i, pts_s=pts, t=0.0, rgb=np.zeros((1, 1, 3), np.uint8))

    clock = _WallClock(resync_s=5.0, live=True)
    out = []
    for i in range(5):  # 5 s of stream in 5 ms
        out += clock.add(fr(i, float(i)), 100.0 + 0.001 * i)
    assert out == []
    out += clock.add(fr(5, 5.0), 101.0)  # the first frame at the stream's pace
    assert [f.t for f in out] == [96.0, 97.0, 98.0, 99.0, 100.0, 101.0]
    nxt = clock.add(fr(6, 6.0), 102.05)  # afterwards: anchored as before
    assert nxt[0].t == 102.0
    assert clock.add(fr(7, 20.0), 103.0)[0].t == 103.0  # a pts jump ahead: clamped to arrival

    fast = _WallClock(resync_s=5.0, live=True)  # not a probe burst: a fast replay
    got = []
    for i in range(_BURST_FRAMES + 3):
        got += fast.add(fr(i, i * 0.1), 200.0)
    assert len(got) == _BURST_FRAMES + 3 and max(f.t for f in got) <= 200.0
    assert [f.t for f in got] == sorted(f.t for f in got)

    ended = _WallClock(resync_s=5.0, live=True)  # the connection ends mid-burst: nothing lost
    ended.add(fr(0, 0.0), 50.0)
    ended.add(fr(1, 1.0), 50.0)
    assert [f.t for f in ended.flush(50.5)] == [49.5, 50.5]

    files = _WallClock(resync_s=5.0, live=False)  # paced files: stamped at once, as before
    assert files.add(fr(0, 0.0), 10.0)[0].t == 10.0
