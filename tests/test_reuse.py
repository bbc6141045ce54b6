"""Static-patch reuse (pystream/model/reuse.py): exact when nothing is reused, cheap and close
when the camera is static, bounded and checkpointed state."""

import numpy as np
import pytest
import torch

from pystream.model.reuse import ReuseSettings
from pystream.model.streaming import Chunk, StreamingEncoder
from model_fixtures import video_model


def _chunks(stream, pixels, k=4, t0=1000.0, replayable=False):
    for first in range(0, pixels.shape[0] - k + 1, k):
        yield Chunk(stream, pixels[first:first + k], [t0 + first + j for j in range(k)], first, 1.0,
                    replayable=replayable)


def _static_video(seed, n, size=64, moving=True):
    """A fixed background plus (optionally) a small bright square that moves 4 px a frame."""
    g = torch.Generator().manual_seed(seed)
    bg = torch.randn(3, size, size, generator=g)
    px = bg.expand(n, 3, size, size).clone()
    if moving:
        for f in range(n):
            x = (4 * f) % (size - 8)
            px[f, :, 8:16, x:x + 8] = 3.0
    return px


def _windows(enc, streams):
    per = {s: list(_chunks(s, px)) for s, px in streams.items()}
    out = []
    for i in range(len(next(iter(per.values())))):
        out += enc.encode([per[s][i] for s in streams])
    return out


def test_threshold_zero_is_exactly_todays_tempme():
    m = video_model("tiny")
    streams = {f"cam{i}": _static_video(i, 20) for i in range(2)}
    a = _windows(StreamingEncoder(m, coarse_windows=0), streams)
    b = _windows(StreamingEncoder(m, coarse_windows=0, reuse=ReuseSettings(threshold=0.0)), streams)
    assert len(a) == len(b) == 2 * 3
    for x, y in zip(a, b):
        assert np.array_equal(x.vector, y.vector)


def test_reuse_path_with_nothing_reused_equals_offline_deferred_tempme():
    """Random frames change every patch: the reuse machinery (gather, cached K/V, scatter,
    state hand-over between chunks) must then give offline TempMe with the deferred ImgMe."""
    m = video_model("tiny")
    g = torch.Generator().manual_seed(3)
    streams = {f"cam{i}": torch.randn(20, 3, 64, 64, generator=g) for i in range(3)}
    enc = StreamingEncoder(m, coarse_windows=0, reuse=ReuseSettings(threshold=1e-6))
    out = _windows(enc, streams)
    assert len(out) == 3 * 3
    with torch.no_grad():
        for e in out:
            px = streams[e.stream][e.first_frame:e.last_frame + 1]
            ref = m.encode_video(px[None], defer_imgme=True)[0].numpy()
            assert np.abs(e.vector - ref).max() < 1e-4
            plain = m.encode_video(px[None])[0].numpy()
            assert np.abs(e.vector - plain).max() > 1e-4  # deferred merging is not the same
    assert all(enc.reused_share(s) == 0.0 for s in streams)


def test_static_camera_reuses_most_patches_and_stays_close():
    m = video_model("tiny")
    streams = {"cam": _static_video(7, 48)}
    exact = _windows(StreamingEncoder(m, coarse_windows=0), streams)
    enc = StreamingEncoder(m, coarse_windows=0, reuse=ReuseSettings(threshold=0.05, refresh_chunks=4))
    approx = _windows(enc, streams)
    share = enc.reused_share("cam")
    # 64 patches, the square touches at most 4 of them a frame; refreshes every 4th chunk.
    assert 0.6 < share < 0.99, share
    cos = [float(np.dot(a.vector, b.vector)) for a, b in zip(exact, approx)]
    assert min(cos) > 0.98, cos
    # A changed patch is recomputed: a frame where the square moved differs from a still one.
    still = _windows(StreamingEncoder(m, coarse_windows=0, reuse=ReuseSettings(threshold=0.05)),
                     {"cam": _static_video(7, 48, moving=False)})
    assert max(float(np.dot(a.vector, b.vector)) for a, b in zip(approx, still)) < 0.9999


def test_reuse_state_is_bounded_and_round_trips_through_checkpoints():
    m = video_model("tiny")
    settings = ReuseSettings(threshold=0.05)
    px = _static_video(1, 40)
    chunks = list(_chunks("cam", px))
    a = StreamingEncoder(m, coarse_windows=0, reuse=settings)
    sizes = []
    for c in chunks[:5]:
        a.encode([c])
        sizes.append(a.reuse.nbytes("cam"))
    assert len(set(sizes)) == 1  # constant over time
    blob = a.state_bytes()
    b = StreamingEncoder(m, coarse_windows=0, reuse=settings)
    b.load_state_bytes(blob)
    for c in chunks[5:]:
        ea, eb = a.encode([c]), b.encode([c])
        assert len(ea) == len(eb) == 1
        assert np.array_equal(ea[0].vector, eb[0].vector)
    assert a.reused_share("cam") == b.reused_share("cam") > 0
    with pytest.raises(ValueError):
        b.load_state_bytes(blob[:-10])


def test_bad_reuse_settings_are_errors():
    m = video_model("tiny")
    with pytest.raises(ValueError, match="threshold"):
        StreamingEncoder(m, reuse=ReuseSettings(threshold=-1))
    with pytest.raises(ValueError, match="refresh"):
        StreamingEncoder(m, reuse={"threshold": 0.1, "refresh_chunks": 0})


def test_bf16_precision_is_close_to_fp32():
    m = video_model("tiny")
    streams = {"cam": _static_video(2, 20)}
    a = _windows(StreamingEncoder(m, coarse_windows=0), streams)
    b = _windows(StreamingEncoder(m, coarse_windows=0, precision="bf16"), streams)
    assert min(float(np.dot(x.vector, y.vector)) for x, y in zip(a, b)) > 0.99
    with pytest.raises(ValueError, match="precision"):
        StreamingEncoder(m, precision="fp8")


def test_folded_quick_gelu_is_the_same_mlp_and_leaves_the_model_untouched():
    """The reduced-precision copies fold CLIP's quick GELU into fc1/fc2 (one SiLU instead of
    two multiplies and a sigmoid): in fp32 the MLP's output is unchanged to rounding."""
    from transformers.activations import QuickGELUActivation

    from pystream.model import precision

    m = video_model("tiny")
    mlp = m.layers[0].mlp
    fc1, fc2, act = precision.fold_quick_gelu(mlp)
    x = torch.randn(37, fc1.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = mlp(x)
        got = fc2(act(fc1(x)))
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), (got - want).abs().max()
    b = precision.with_bf16_linears(m)
    assert all(isinstance(layer.mlp.activation_fn, precision.FoldedQuickGELU)
               for layer in b.layers)
    assert all(isinstance(layer.mlp.activation_fn, QuickGELUActivation) for layer in m.layers)
    assert b.layers[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert m.layers[0].mlp.fc1.weight.dtype == torch.float32
    assert torch.equal(m.layers[0].mlp.fc1.weight, mlp.fc1.weight)


def test_fused_qkv_projection_equals_the_three_projections():
    from pystream.model import precision
    from pystream.model.tempme import project_qkv

    m = video_model("tiny")
    a = m.layers[1].self_attn
    x = torch.randn(2, 9, a.q_proj.in_features, generator=torch.Generator().manual_seed(1))
    fused = precision.fuse_linears([a.q_proj, a.k_proj, a.v_proj])
    with torch.no_grad():
        for got, want in zip(fused(x).chunk(3, dim=-1), project_qkv(a, x)):
            assert torch.allclose(got, want, atol=1e-6)
    b = precision.with_bf16_linears(m).layers[1].self_attn
    assert not hasattr(b, "q_proj") and b.qkv_proj.weight.dtype == torch.bfloat16
    assert hasattr(a, "q_proj") and not hasattr(a, "qkv_proj")  # the fp32 model untouched


def test_folded_pixel_normalisation_embeds_raw_pixels_like_normalised_ones():
    """The bf16 copy folds (x/255 - mean)/std into the patch embedding: its preprocess hands
    raw 0-255 values on, and its embeddings match the fp32 model's to bf16 rounding, from uint8
    frames and from normalised pixels alike; the fp32 model keeps normalising."""
    from pystream.model import precision

    m = video_model("tiny")
    b = precision.with_bf16_linears(m)
    s = m.image_size
    frames = torch.randint(0, 256, (3, s, s, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(2))
    raw = b.preprocess(frames)
    assert raw.dtype == torch.bfloat16 and torch.equal(raw.float(), frames.movedim(-1, -3).float())
    pixels = m.preprocess(frames)
    assert pixels.dtype == torch.float32 and m.raw_pixels is None
    with torch.no_grad():
        want = m.embed(pixels).h
        with precision.autocast("bf16", "cpu"):
            got = b.embed(raw, finite=True).h
            from_normalised = b.embed(pixels).h
    for h in (got, from_normalised):
        err = (h.float() - want).norm() / want.norm()
        assert err < 2e-2, err  # bf16 rounding (about 2^-8 relative), not a different function
        cos = torch.nn.functional.cosine_similarity(h.float(), want, dim=-1)
        assert cos.min() > 0.999, cos.min()
    back = b.pixels_for_embed(pixels)  # a batch mixing both kinds of chunk joins these
    assert back.dtype == torch.bfloat16 and (back.float() - raw.float()).abs().max() <= 1.0
    assert m.pixels_for_embed(pixels) is pixels
    assert m.vision.embeddings.patch_embedding.weight.dtype == torch.float32  # untouched
    assert m.vision.embeddings is not b.vision.embeddings


def test_many_chunks_of_one_stream_in_one_batch_run_in_one_pass():
    """A file brings many chunks of one stream per batch: they are all gated against the state
    at the start of the batch (one pass, not one chunk per round). Nothing reused: exactly
    offline deferred TempMe; a static camera: mostly reused and close to exact."""
    m = video_model("tiny")
    g = torch.Generator().manual_seed(5)
    noisy = torch.randn(24, 3, 64, 64, generator=g)
    enc = StreamingEncoder(m, coarse_windows=0, reuse=ReuseSettings(threshold=1e-6))
    out = enc.encode(list(_chunks("file", noisy, replayable=True)) + list(_chunks("cam", noisy[:12])))
    assert [e.stream for e in out].count("file") == 4
    with torch.no_grad():
        for e in out:
            px = noisy[e.first_frame:e.last_frame + 1]
            ref = m.encode_video(px[None], defer_imgme=True)[0].numpy()
            assert np.abs(e.vector - ref).max() < 1e-4

    static = _static_video(7, 48)
    exact = StreamingEncoder(m, coarse_windows=0).encode(list(_chunks("file", static)))
    batched = StreamingEncoder(m, coarse_windows=0, reuse=ReuseSettings(threshold=0.05))
    approx = batched.encode(list(_chunks("file", static, replayable=True)))
    assert len(approx) == len(exact) == 10
    assert 0.5 < batched.reused_share("file") < 0.99
    assert min(float(np.dot(a.vector, b.vector)) for a, b in zip(exact, approx)) > 0.98
    # The state after the batch is the last frame's: the next chunk continues from it.
    more = batched.encode(list(_chunks("file", static[:4], t0=2000.0, replayable=True)))
    assert len(more) == 1


def test_old_checkpoint_format_drops_only_the_reuse_cache():
    from pystream.model.reuse import ReuseState
    st = ReuseState(ReuseSettings(threshold=0.1))
    st.load_bytes(b"PK\x03\x04 an old torch.save zip")
    assert "cam" not in st and st.to_bytes() == b""
    with pytest.raises(ValueError, match="bad magic"):
        st.load_bytes(b"garbage" * 10)


def test_int8_precision_is_close_to_fp32_and_cpu_only():
    m = video_model("tiny")
    streams = {"cam": _static_video(2, 20)}
    a = _windows(StreamingEncoder(m, coarse_windows=0), streams)
    enc = StreamingEncoder(m, coarse_windows=0, precision="int8",
                           reuse=ReuseSettings(threshold=0.05))
    b = _windows(enc, streams)
    assert enc.precision == "int8" and enc.reuse.records.dtypes == (torch.float32, torch.float32)
    assert min(float(np.dot(x.vector, y.vector)) for x, y in zip(a, b)) > 0.98
    from pystream.model import precision
    with pytest.raises(ValueError, match="CPU only"):
        precision.resolve("int8", "cuda")


def test_vectors_do_not_depend_on_how_chunks_fall_into_batches():
    """A resumed or replayed file must give the same vectors as an uninterrupted run, whatever
    the batching: reuse gates every chunk up to the next refresh against the same reference."""
    m = video_model("tiny")
    chunks = list(_chunks("file", _static_video(9, 64), replayable=True))  # refreshes at 0, 8
    settings = ReuseSettings(threshold=0.05, refresh_chunks=8)
    whole = StreamingEncoder(m, coarse_windows=0, reuse=settings).encode(chunks)
    one_by_one = StreamingEncoder(m, coarse_windows=0, reuse=settings)
    split = sum((one_by_one.encode([c]) for c in chunks), [])
    ragged = StreamingEncoder(m, coarse_windows=0, reuse=settings)
    parts = sum((ragged.encode(chunks[a:b]) for a, b in ((0, 3), (3, 10), (10, 11), (11, 16))), [])
    assert len(whole) == len(split) == len(parts) == 14
    for a, b, c in zip(whole, split, parts):
        assert np.abs(a.vector - b.vector).max() < 1e-5 and np.abs(a.vector - c.vector).max() < 1e-5
    assert one_by_one.reused_share("file") == ragged.reused_share("file") > 0.5


def test_live_chunks_chain_and_batched_backlog_equals_one_by_one():
    """A live stream's chunk is gated against the state the previous chunk left (a changed
    patch becomes the reference); a backlog of its chunks in one batch runs chunk by chunk, so
    it gives what encoding them one at a time gives."""
    m = video_model("tiny")
    chunks = list(_chunks("cam", _static_video(4, 48)))
    settings = ReuseSettings(threshold=0.05, refresh_chunks=8)
    live = StreamingEncoder(m, coarse_windows=0, reuse=settings)
    a = sum((live.encode([c]) for c in chunks), [])
    b = StreamingEncoder(m, coarse_windows=0, reuse=settings).encode(chunks)
    assert all(np.abs(x.vector - y.vector).max() < 1e-5 for x, y in zip(a, b))
    assert live.reused_share("cam") > 0.6


def test_the_gated_linears_see_a_small_fixed_set_of_row_counts():
    """Each new bf16 matrix shape costs oneDNN a new kernel (time, and memory kept in its
    primitive cache), so the recomputed tokens are padded to bucket sizes: however many patches
    change, the reused layers' linears see only ``bucket_rows`` sizes."""
    from pystream.model.reuse import bucket_rows

    m = video_model("tiny")
    rows = []

    def seen(mod, inp, out):  # the gated layers' input is [T, C]; the later ones' [B, N, C]
        if inp[0].dim() == 2:
            rows.append(inp[0].shape[0])
    hooks = [layer.self_attn.q_proj.register_forward_hook(seen) for layer in m.layers]
    try:
        enc = StreamingEncoder(m, coarse_windows=0, reuse=ReuseSettings(threshold=0.05))
        g = torch.Generator().manual_seed(5)
        for i in range(6):  # a different number of changed patches every chunk
            px = _static_video(11, 4)
            n = 1 + 5 * i
            px[:, :, :n, :] = torch.randn(4, 3, n, 64, generator=g)
            enc.encode([Chunk("cam", px, [1000.0 + 4 * i + j for j in range(4)], 4 * i, 1.0)])
    finally:
        for h in hooks:
            h.remove()
    buckets = {bucket_rows(n) for n in range(1, 20000)}
    assert rows and set(rows) <= buckets, sorted(set(rows))
    assert len(set(rows)) < len(rows)
    assert bucket_rows(257) == 288 and bucket_rows(256) == 256 and bucket_rows(3) == 16


def test_bucketed_linear_equals_a_linear_and_sees_only_bucket_row_counts(monkeypatch):
    """On the CPU the bf16 copy's linears pad rows to bucket sizes in tiles of ROW_TILE (oneDNN
    keeps ~0.5 MB per new matrix shape, and a TempMe layer's row count is segments x tokens,
    which changes every batch). Padding changes nothing: every row's result is its own."""
    from pystream.model import precision

    lin = torch.nn.Linear(24, 40).to(torch.bfloat16)
    b = precision.BucketedLinear(24, 40, dtype=torch.bfloat16)
    b.load_state_dict(lin.state_dict())
    g = torch.Generator().manual_seed(3)
    with torch.no_grad(), precision.autocast("bf16", "cpu"):
        for shape in [(0, 24), (1, 24), (3, 17, 24), (2 * precision.ROW_TILE + 5, 24)]:
            x = torch.randn(*shape, generator=g)
            got, want = b(x), lin(x)
            assert got.shape == want.shape and torch.equal(got, want), shape

    rows = []  # the row counts of the bf16 matrix multiplies (the fp32 projection head aside)
    forward = torch.nn.Linear.forward
    monkeypatch.setattr(torch.nn.Linear, "forward",
                        lambda self, x: (isinstance(self, precision.BucketedLinear)
                                         and rows.append(x.reshape(-1, x.shape[-1]).shape[0]),
                                         forward(self, x))[1])
    m = video_model("tiny")
    for reuse in (None, ReuseSettings(threshold=0.05)):
        enc = StreamingEncoder(m, coarse_windows=0, precision="bf16", reuse=reuse)
        assert isinstance(enc.model.layers[-1].mlp.fc2, precision.BucketedLinear)
        rows.clear()
        for n in range(1, 6):  # a different number of cameras in every batch
            enc.encode([c for i in range(n)
                        for c in _chunks(f"cam{i}", _static_video(i, 4))][:n])
        assert rows and set(rows) <= set(precision.row_buckets()), sorted(set(rows))
    assert len(precision.row_buckets()) == 40


def test_live_streams_started_together_refresh_in_different_batches():
    """Cameras that start together do not all refresh in one batch (that batch cost 2.8x a
    usual one and set the p95 lag); each still recomputes every position at least every
    refresh_chunks chunks. Files keep their refreshes at multiples of refresh_chunks."""
    m = video_model("tiny")
    refresh = 4
    enc = StreamingEncoder(m, coarse_windows=0,
                           reuse=ReuseSettings(threshold=0.05, refresh_chunks=refresh))
    names = [f"cam{i}" for i in range(8)] + ["file"]
    per = {s: list(_chunks(s, _static_video(i, 48), replayable=(s == "file")))
           for i, s in enumerate(names)}
    full = {s: [] for s in names}  # chunk indices where every position was recomputed
    for i in range(12):
        enc.encode([per[s][i] for s in names])
        for s in names:
            age = enc.reuse.records.age(s)
            assert 1 <= age <= refresh
            if age == 1 or (i == 0):
                full[s].append(i)
    for s in names:
        gaps = np.diff(full[s])
        assert full[s][0] == 0 and (gaps <= refresh).all(), (s, full[s])
    assert full["file"] == [0, 4, 8]
    second = {full[s][1] for s in names if s != "file"}
    assert len(second) > 1, second  # not every camera's first refresh in the same batch
