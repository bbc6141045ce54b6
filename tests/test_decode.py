"""pystream.decode on real files encoded here with PyAV (H.264 via libx264 when PyAV's
bundled ffmpeg has it, else MPEG-4 part 2)."""


import av
import numpy as np
import pytest

from pystream.decode import DecodeError, Frame, chunk_frames, decode_frames, probe

CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"
RED = (255, 0, 0)
CONTAINERS = [("mp4", None), ("mkv", None), ("ts", "mpegts")]


def make_video(path, fmt=None, fps=30, seconds=4, w=64, h=48, color=RED):
    """Solid-colour video with one moving black pixel (so frames differ)."""
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(CODEC, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(int(fps * seconds)):
            a = np.empty((h, w, 3), np.uint8)
            a[:] = color
            a[0, i % w] = 0
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {ext: make_video(d / f"red.{ext}", fmt) for ext, fmt in CONTAINERS}


@pytest.mark.parametrize("ext", [e for e, _ in CONTAINERS])
@pytest.mark.parametrize("fps", [1, 2])
def test_sample_count_and_timestamps(videos, ext, fps):
    frames = list(decode_frames(videos[ext], fps=fps, size=32))
    expected = [k / fps for k in range(4 * fps)]  # 30 fps, 4 s
    assert [f.index for f in frames] == list(range(len(expected)))
    assert [f.pts_s for f in frames] == pytest.approx(expected, abs=1e-6)


def test_start_time_offsets_t(videos):
    frames = list(decode_frames(videos["mp4"], fps=1, size=16, start_time=1000.0))
    assert [f.t for f in frames] == pytest.approx([1000.0, 1001.0, 1002.0, 1003.0])
    assert isinstance(frames[0], Frame)


@pytest.mark.parametrize(
    "size,shape", [(32, (32, 32, 3)), ((24, 40), (24, 40, 3)), (None, (48, 64, 3))]
)
def test_resize_shape(videos, size, shape):
    f = next(iter(decode_frames(videos["mkv"], fps=1, size=size)))
    assert f.rgb.shape == shape and f.rgb.dtype == np.uint8


@pytest.mark.parametrize("ext", [e for e, _ in CONTAINERS])
def test_colour_preserved(videos, ext):
    for f in decode_frames(videos[ext], fps=1, size=32):
        mean = f.rgb[4:, :].reshape(-1, 3).mean(0)  # skip row 0 (moving black pixel)
        assert mean[0] > 200 and mean[1] < 40 and mean[2] < 40, mean


def test_options_and_timeout_pass_through(videos):
    # A demuxer option libav knows; unknown ones are ignored by libav, known ones applied.
    frames = list(decode_frames(videos["ts"], 1, 16, options={"probesize": "100000"}, timeout=(5, 5)))
    assert len(frames) == 4


def test_sampling_skips_gaps_instead_of_bursting(tmp_path):
    # Frames at 0..1 s, then nothing until 3 s (a stalled camera).
    path = tmp_path / "gap.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream(CODEC, rate=10)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        s.codec_context.time_base = s.time_base = __import__("fractions").Fraction(1, 10)
        for pts in list(range(0, 11)) + list(range(30, 41)):
            vf = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            vf.pts = pts
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    ts = [f.pts_s for f in decode_frames(path, fps=2, size=16)]
    assert ts == pytest.approx([0.0, 0.5, 1.0, 3.0, 3.5, 4.0])


def test_chunk_frames():
    items = list(range(10))
    assert list(chunk_frames(items, 4)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert list(chunk_frames(items, 4, keep_partial=True))[-1] == [8, 9]
    assert list(chunk_frames(iter(items), 5)) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    with pytest.raises(ValueError):
        list(chunk_frames(items, 0))


@pytest.mark.parametrize("ext", [e for e, _ in CONTAINERS])
def test_probe(videos, ext):
    info = probe(videos[ext])
    assert info["duration_s"] == pytest.approx(4.0, abs=0.1)
    assert info["fps"] == pytest.approx(30.0)
    assert (info["width"], info["height"]) == (64, 48)
    assert info["codec"] == ("h264" if CODEC == "libx264" else "mpeg4")


def test_probe_creation_time(tmp_path):
    path = tmp_path / "meta.mp4"
    with av.open(str(path), "w") as c:
        c.metadata["creation_time"] = "2024-05-01T12:00:00.000000Z"
        s = c.add_stream(CODEC, rate=5)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        for _ in range(5):
            for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    assert probe(path)["creation_time"].startswith("2024-05-01T12:00:00")


def _bad_files(tmp_path, videos):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 100)
    data = videos["mp4"].read_bytes()
    trunc = tmp_path / "truncated.mp4"  # moov atom is at the end: nothing decodable
    trunc.write_bytes(data[: len(data) // 2])
    audio = tmp_path / "audio.mkv"
    with av.open(str(audio), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        af = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        af.sample_rate = 8000
        for p in s.encode(af):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    return {
        "empty": (empty, "empty"),
        "text": (text, "cannot open"),
        "truncated": (trunc, "cannot open"),
        "audio": (audio, "no video stream"),
        "missing": (tmp_path / "missing.mp4", "does not exist"),
    }


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "audio", "missing"])
def test_bad_files_raise_decode_error_naming_file(tmp_path, videos, kind):
    path, why = _bad_files(tmp_path, videos)[kind]
    for call in (lambda: probe(path), lambda: list(decode_frames(path, 1, 16))):
        with pytest.raises(DecodeError) as ei:
            call()
        assert str(path) in str(ei.value) and why in str(ei.value)
        assert isinstance(ei.value, ValueError)


@pytest.mark.parametrize("ext", ["ts", "mkv"])
def test_truncated_stream_yields_good_frames(videos, tmp_path, ext):
    data = videos[ext].read_bytes()
    path = tmp_path / f"half.{ext}"
    path.write_bytes(data[: len(data) // 2])
    frames = list(decode_frames(path, fps=2, size=16))
    assert 1 <= len(frames) < 8
    assert [f.pts_s for f in frames] == pytest.approx([k / 2 for k in range(len(frames))])


def test_generator_closes_container_early(videos, monkeypatch):
    """Closing the generator after one frame closes the container at once (not at GC)."""
    import pystream.decode as dec

    opened = []
    real_open = dec._open

    def spy(*a, **kw):
        c = real_open(*a, **kw)
        opened.append(c)
        return c

    monkeypatch.setattr(dec, "_open", spy)
    gen = decode_frames(videos["mp4"], fps=2, size=16)
    next(gen)
    (container,) = opened
    assert container.streams.video[0].codec_context.width > 0  # open while frames flow
    gen.close()  # runs the finally: container.close()
    with pytest.raises(IndexError):
        container.streams.video[0]  # a closed container has no streams left


def test_bad_fps():
    with pytest.raises(ValueError):
        next(decode_frames("x.mp4", fps=0, size=16))


def test_http_url_with_timeout(videos):
    """URLs go through the same path (open/read timeouts passed to av.open)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(videos["ts"].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/red.ts"
        frames = list(decode_frames(url, fps=1, size=16, timeout=(5.0, 5.0)))
        assert [f.pts_s for f in frames] == pytest.approx([0, 1, 2, 3])
        with pytest.raises(DecodeError, match="missing.ts"):
            list(decode_frames(url.replace("red", "missing"), 1, 16, timeout=(5.0, 5.0)))
    finally:
        server.shutdown()
        server.server_close()
