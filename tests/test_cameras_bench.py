"""The figures benchmarks/cameras.py computes (not its timings): fidelity and stage mapping."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import cameras  # noqa: E402


def _unit(v):
    return v / np.linalg.norm(v)


def test_fidelity_identical_is_perfect_and_perturbation_is_measured():
    rng = np.random.default_rng(0)
    ref = {("cam", i): _unit(rng.normal(size=16)) for i in range(30)}
    q = np.stack([_unit(rng.normal(size=16)) for _ in range(8)])
    assert cameras.fidelity(ref, dict(ref), q) == pytest.approx((1.0, 1.0, 1.0))
    # One window replaced by its negation: min cosine -1, mean drops by 2/30.
    got = dict(ref)
    got[("cam", 3)] = -ref[("cam", 3)]
    mean, mn, agree = cameras.fidelity(ref, got, q)
    assert mn == pytest.approx(-1.0)
    assert mean == pytest.approx(1 - 2 / 30)
    assert agree < 1.0  # the negated window left (or entered) some top-10
    # Shuffled vectors: agreement near chance (10 of 30), not 1.
    keys = list(ref)
    perm = rng.permutation(len(keys))
    shuffled = {k: ref[keys[j]] for k, j in zip(keys, perm)}
    assert cameras.fidelity(ref, shuffled, q)[2] < 0.7
    with pytest.raises(ValueError, match="windows differ"):
        cameras.fidelity(ref, {k: v for k, v in list(ref.items())[:-1]}, q)


def test_thread_stages():
    assert cameras._stage_of("pystream-src-cam1") == "decode"
    assert cameras._stage_of(None, "av:h264:df0") == "decode"
    assert cameras._stage_of(None, "python") == "encode"
    assert cameras._stage_of("pystream-encoder") == "encode"
    assert cameras._stage_of("pystream-clip-writer") == "store"
    assert cameras._stage_of("pystream-source-cam1") == "chunking"


def _tiny_clip(path, seconds=3, fps=25):
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = 160, 96, "yuv420p"
        s.options = {"g": str(fps), "bf": "0"}
        for i in range(seconds * fps):
            img = np.full((96, 160, 3), (i * 7) % 255, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, "rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_ts_replay_paces_a_real_stream_by_its_clock(tmp_path):
    """The replay sender's datagrams follow the stream's PCR clock, and what it sends over UDP
    is a stream PyAV decodes frame for frame."""
    import shutil
    import socket
    import threading
    import time

    import av
    import ts_replay

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed (scripts/install_test_deps.sh)")
    _tiny_clip(tmp_path / "c.mp4")
    ts = ts_replay.mux_ts(tmp_path / "c.mp4", tmp_path / "c.ts", 4)  # looped past its 3 s
    times = ts_replay.datagram_times(np.fromfile(ts, np.uint8))
    assert np.all(np.diff(times) >= 0)
    assert 3.5 < times[-1] < 4.1  # the mux's own clock spans the 4 s
    with pytest.raises(ValueError, match="MPEG-TS"):
        ts_replay.datagram_times(np.fromfile(tmp_path / "c.mp4", np.uint8))

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2.0)
    cam = ts_replay.Camera(rx.getsockname()[1], ts, offset_s=1.0)  # joins 1 s in, like -ss 1
    got, arrivals = [], []

    def receive():
        try:
            while True:
                got.append(rx.recv(4096))
                arrivals.append(time.monotonic())
        except socket.timeout:
            pass

    t = threading.Thread(target=receive)
    t.start()
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.monotonic()
    while cam.send_due(tx, time.monotonic() - start):
        time.sleep(0.005)
    t.join()
    span = arrivals[-1] - arrivals[0]
    assert 2.0 < span < 4.5, span  # about 3 s of stream sent in about 3 s, not in a burst
    (tmp_path / "rx.ts").write_bytes(b"".join(got))
    with av.open(str(tmp_path / "rx.ts")) as c:
        frames = sum(1 for _ in c.decode(video=0))
    assert 60 <= frames <= 76  # 3 s at 25 fps, decodable from the first keyframe after joining
