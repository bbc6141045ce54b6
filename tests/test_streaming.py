"""Streaming TempMe with carried state equals offline TempMe on the same windows."""

import numpy as np
import pytest
import torch

from pystream.model.streaming import Chunk, StreamingEncoder
from model_fixtures import video_model

FPS = 1.0


def _stream_pixels(seed, n_frames, size=64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_frames, 3, size, size, generator=g)


def _chunks(stream, pixels, k=4, t0=1000.0):
    for first in range(0, pixels.shape[0] - k + 1, k):
        times = [t0 + (first + j) / FPS for j in range(k)]
        yield Chunk(stream, pixels[first:first + k], times, first, 1.0 / FPS)


@pytest.mark.parametrize("schedule", ["default", "fast", "off"])
def test_streaming_equals_offline_at_every_window(schedule):
    m = video_model("tiny", schedule)
    enc = StreamingEncoder(m, coarse_windows=0)
    streams = {f"cam{i}": _stream_pixels(i, 28) for i in range(3)}  # 7 chunks each
    per_stream = {s: list(_chunks(s, px)) for s, px in streams.items()}
    emitted = []
    # Feed all streams together, sometimes two chunks of a stream in one call.
    calls = [[0], [1, 2], [3], [4, 5], [6]]
    for idx in calls:
        batch = [per_stream[s][i] for i in idx for s in streams]
        emitted += enc.encode(batch)
    assert len(emitted) == 3 * (7 - 3 + 1)
    with torch.no_grad():
        for e in emitted:
            px = streams[e.stream][e.first_frame:e.last_frame + 1]
            assert px.shape[0] == 12
            ref = m.encode_video(px[None])[0].numpy()
            assert np.abs(e.vector - ref).max() < 1e-4, (e.stream, e.first_frame)
            # Exact times: the first frame's start to the last frame's end.
            assert e.start == 1000.0 + e.first_frame / FPS
            assert e.end == 1000.0 + (e.last_frame + 1) / FPS
    firsts = sorted({e.first_frame for e in emitted})
    assert firsts == [0, 4, 8, 12, 16]


def test_short_stream_and_tail_are_flushed_with_exact_times():
    m = video_model("tiny")
    enc = StreamingEncoder(m, coarse_windows=0)
    px = _stream_pixels(5, 10)  # 2 full chunks + 2 frames
    chunks = list(_chunks("f", px))
    assert enc.encode(chunks) == []  # no full window yet
    tail = Chunk("f", px[8:10], [1008.0, 1009.0], 8, 1.0)
    out = enc.finish("f", tail)
    assert len(out) == 1
    e = out[0]
    assert (e.first_frame, e.last_frame) == (0, 9)
    assert (e.start, e.end) == (1000.0, 1010.0)
    assert abs(np.linalg.norm(e.vector) - 1) < 1e-5
    assert "f" not in enc.states


def test_finish_after_full_windows_covers_the_end():
    m = video_model("tiny")
    enc = StreamingEncoder(m, coarse_windows=0)
    px = _stream_pixels(6, 18)
    out = enc.encode(list(_chunks("s", px)))  # chunks 0..3 -> windows ending at chunk 2, 3
    assert [e.first_frame for e in out] == [0, 4]
    tail = Chunk("s", px[16:18], [1016.0, 1017.0], 16, 1.0)
    last = enc.finish("s", tail)
    assert [(e.first_frame, e.last_frame, e.end) for e in last] == [(8, 17, 1018.0)]


def test_state_round_trip_resumes_identically():
    m = video_model("tiny")
    px = _stream_pixels(7, 32)
    chunks = list(_chunks("cam", px))
    a = StreamingEncoder(m, coarse_windows=2)
    full = a.encode(chunks)
    b = StreamingEncoder(m, coarse_windows=2)
    first = b.encode(chunks[:4])
    blob = b.state_bytes()
    c = StreamingEncoder(m, coarse_windows=2)
    c.load_state_bytes(blob)
    rest = c.encode(chunks[4:])
    got = first + rest
    assert [(e.level, e.start, e.end) for e in got] == [(e.level, e.start, e.end) for e in full]
    for x, y in zip(got, full):
        assert np.abs(x.vector - y.vector).max() < 1e-5
    assert any(e.level == 1 for e in full)


def test_state_of_some_streams_resumes_them_and_leaves_the_others_out():
    m = video_model("tiny")
    cam = list(_chunks("cam", _stream_pixels(3, 32)))
    file = list(_chunks("file", _stream_pixels(7, 32)))
    full = StreamingEncoder(m, coarse_windows=2).encode(file)
    b = StreamingEncoder(m, coarse_windows=2)
    first = [e for e in b.encode(cam[:4] + file[:4]) if e.stream == "file"]
    c = StreamingEncoder(m, coarse_windows=2)
    c.load_state_bytes(b.state_bytes(["file"]))
    assert c.states.streams() == ["file"] and list(c.progress) == ["file"]
    assert len(c.state_bytes()) < len(b.state_bytes())
    got = first + c.encode(file[4:])
    assert [(e.level, e.start, e.end) for e in got] == [(e.level, e.start, e.end) for e in full]
    for x, y in zip(got, full):
        assert np.abs(x.vector - y.vector).max() < 1e-5


@pytest.mark.parametrize("schedule", ["default", "fast", "off"])
def test_state_is_bounded_and_cost_per_window_constant(schedule):
    """One stream, one new chunk per call, 16 calls: from the first window on, every call does
    exactly the same compute (matmul/attention FLOPs counted by torch), carries the same number
    of tokens and bytes, and costs well under re-encoding the 12-frame window (each frame runs
    the chunk-local layers once)."""
    from torch.utils.flop_counter import FlopCounterMode

    m = video_model("tiny", schedule)
    enc = StreamingEncoder(m, coarse_windows=0)
    px = _stream_pixels(8, 64)
    flops, carried, nbytes, emitted = [], [], [], []
    for i, c in enumerate(_chunks("cam", px)):
        with FlopCounterMode(display=False) as fc:
            out = enc.encode([c])
        flops.append(fc.get_total_flops())
        carried.append(int(enc.states.windows(["cam"]).lengths[0]))
        nbytes.append(enc.states.nbytes)
        emitted.append(len(out))
    assert emitted == [0, 0] + [1] * 14
    steady = flops[2:]
    assert len(set(steady)) == 1, flops  # the same work for window 1 and window 14
    assert len(set(carried[2:])) == 1 and len(set(nbytes[2:])) == 1, (carried, nbytes)
    assert enc.states.num_chunks("cam") == 3
    with FlopCounterMode(display=False) as fc:
        m.encode_video(px[None, :12])
    assert steady[0] < 0.45 * fc.get_total_flops(), (steady[0], fc.get_total_flops())


def test_bad_inputs():
    m = video_model("tiny")
    enc = StreamingEncoder(m)
    px = _stream_pixels(9, 4)
    with pytest.raises(ValueError, match="needs 4 frames"):
        enc.encode([Chunk("x", px[:3], [0.0, 1.0, 2.0], 0, 1.0)])
    with pytest.raises(ValueError, match="NaN"):
        bad = px.clone()
        bad[1, 0, 0, 0] = float("nan")
        enc.encode([Chunk("x", bad, [0.0, 1.0, 2.0, 3.0], 0, 1.0)])
    enc.encode([Chunk("x", px, [0.0, 1.0, 2.0, 3.0], 0, 1.0)])
    blob = bytearray(enc.state_bytes())
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(ValueError):
        StreamingEncoder(m).load_state_bytes(bytes(blob))
    with pytest.raises(ValueError, match="hop_chunks"):
        StreamingEncoder(m, hop_chunks=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device and a CUDA torch")
@pytest.mark.parametrize("schedule", ["default", "fast", "off"])
def test_streaming_on_cuda_equals_cpu(schedule, no_tf32):
    """The streaming encoder with the model on the GPU emits what it emits on the CPU (carried
    windows, merges and heads on the model's device), for uint8 frames from the decoder."""
    import copy

    cpu = video_model("b32", schedule)
    gpu = copy.deepcopy(cpu).cuda()
    rng = np.random.default_rng(0)
    frames = {f"cam{i}": rng.integers(0, 256, (20, 224, 224, 3), dtype=np.uint8) for i in range(3)}
    res = {}
    for name, m in (("cpu", cpu), ("cuda", gpu)):
        enc = StreamingEncoder(m, coarse_windows=2)
        out = []
        for first in range(0, 16, 4):
            out += enc.encode([Chunk(s, f[first:first + 4], [first + j for j in range(4)], first, 1.0)
                               for s, f in frames.items()])
        for s, f in frames.items():
            out += enc.finish(s, Chunk(s, f[16:18], [16.0, 17.0], 16, 1.0))
        res[name] = out
    a, b = res["cpu"], res["cuda"]
    assert [(e.stream, e.level, e.start, e.end, e.first_frame, e.last_frame) for e in a] == \
        [(e.stream, e.level, e.start, e.end, e.first_frame, e.last_frame) for e in b]
    for x, y in zip(a, b):
        assert np.abs(x.vector - y.vector).max() < 2e-3, (x.stream, x.level, x.start)


@pytest.fixture
def no_tf32():
    """fp32 on the GPU as on the CPU: TF32 convolutions/matmuls would move merge decisions."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.parametrize("schedule", ["default", "fast"])
def test_streaming_equals_offline_with_temporal_embeddings(schedule):
    """TempMe's learned per-slot embeddings (model/adapter.py), non-zero: the chunk-local
    ClipMe layers index slots within the chunk, the last one by chunk position in the window,
    so every window still equals offline TempMe on its frames, and the embeddings do change
    the result."""
    from pystream.model.adapter import add_temporal

    m = video_model("tiny", schedule)
    streams = {f"cam{i}": _stream_pixels(10 + i, 20) for i in range(2)}  # 5 chunks each
    with torch.no_grad():
        plain = m.encode_video(streams["cam0"][None, :12])[0]
        add_temporal(m)
        g = torch.Generator().manual_seed(3)
        for e in m.temporal.embeddings:
            e.copy_(torch.randn(e.shape, generator=g))
    enc = StreamingEncoder(m, coarse_windows=0)
    per_stream = {s: list(_chunks(s, px)) for s, px in streams.items()}
    emitted = []
    for idx in ([0, 1], [2], [3, 4]):
        emitted += enc.encode([per_stream[s][i] for i in idx for s in streams])
    assert len(emitted) == 2 * 3
    with torch.no_grad():
        for e in emitted:
            px = streams[e.stream][e.first_frame:e.last_frame + 1]
            ref = m.encode_video(px[None])[0].numpy()
            assert np.abs(e.vector - ref).max() < 1e-4, (e.stream, e.first_frame)
        assert (m.encode_video(streams["cam0"][None, :12])[0] - plain).abs().max() > 1e-3
