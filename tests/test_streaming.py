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


def test_state_is_bounded_and_cost_per_window_constant():
    m = video_model("tiny")
    enc = StreamingEncoder(m, coarse_windows=0)
    px = _stream_pixels(8, 12)
    sizes = []
    for i in range(12):
        t0 = 1000.0 + 12 * i
        enc.encode(list(_chunks("cam", px, t0=t0)))
        sizes.append(enc.states.nbytes)
    assert len(set(sizes[1:])) == 1  # three chunks carried, whatever the stream length
    assert enc.states.num_chunks("cam") == 3


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
