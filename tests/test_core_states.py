"""StreamStates: carried per-stream chunks owned by C++ (push/evict/window/serialise)."""

import pickle
import struct
from collections import deque

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pystream import merge
from state_oracle import PyStreamStates

# the C++ StreamStates and its pure-Python twin (tests/state_oracle.py) must behave alike
IMPLS = [pytest.param(PyStreamStates, id="python")]
if merge.HAVE_CORE:
    IMPLS.insert(0, pytest.param(merge.StreamStates, id="core"))
impls = pytest.mark.parametrize("SS", IMPLS)

ROW_BYTES = 4 + 16 + 16  # sizes + frames + times per token


def chunk(n, C=8, dtype=torch.float32, seed=0, t0=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(n, C, generator=g).to(dtype)
    sizes = torch.randint(1, 4, (n,), generator=g).float()
    frames = torch.stack([torch.arange(n) + t0, torch.arange(n) + t0 + 1], -1)
    times = frames.double() / 4.0
    return tokens, sizes, frames, times


@impls
def test_push_window_evict(SS):
    s = SS(max_chunks=2, max_bytes=1 << 20)
    chunks = [chunk(3 + k, seed=k, t0=10 * k) for k in range(4)]
    for k, c in enumerate(chunks):
        s.push("cam", *c, seq=k)
    assert s.num_chunks("cam") == 2 and s.last_seq("cam") == 3
    w = s.window("cam")
    assert isinstance(w, merge.Window)
    for got, parts in zip(w[:4], zip(*chunks[2:])):
        assert torch.equal(got, torch.cat(parts))
    assert w.chunk_lengths.tolist() == [5, 6]
    assert w.chunk_lengths.dtype == torch.int64 and w.frames.dtype == torch.int64
    assert w.times.dtype == torch.float64 and w.sizes.dtype == torch.float32
    assert s.nbytes == 11 * (8 * 4 + ROW_BYTES)
    assert len(s) == 1 and "cam" in s and "other" not in s and 3 not in s
    assert s.streams() == ["cam"]


@impls
def test_window_is_a_snapshot(SS):
    s = SS(max_chunks=1)
    s.push("a", *chunk(4), seq=0)
    w = s.window("a")
    s.push("a", *chunk(4, seed=9), seq=1)  # evicts the chunk w came from
    assert torch.equal(w.tokens, chunk(4)[0])
    w.tokens.add_(1)  # writable, owned by the tensor
    assert torch.equal(s.window("a").tokens, chunk(4, seed=9)[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@impls
def test_dtype_kept_bitwise(SS, dtype):
    s = SS()
    c = chunk(5, C=6, dtype=dtype)
    s.push("x", *c, seq=1)
    w = s.window("x")
    assert w.tokens.dtype == dtype and torch.equal(w.tokens, c[0])
    s2 = SS.from_bytes(s.to_bytes())
    assert torch.equal(s2.window("x").tokens, c[0])


@impls
def test_windows_batched_and_padded(SS):
    s = SS(max_chunks=3)
    s.push("a", *chunk(4, seed=1), seq=0)
    s.push("a", *chunk(2, seed=2), seq=1)
    s.push("b", *chunk(3, seed=3), seq=5)
    wb = s.windows(["b", "a", "b"])
    assert wb.tokens.shape == (3, 6, 8) and wb.sizes.shape == (3, 6)
    assert wb.frames.shape == (3, 6, 2) and wb.times.shape == (3, 6, 2)
    assert wb.lengths.tolist() == [3, 6, 3]
    assert wb.chunk_lengths.tolist() == [[3, 0], [4, 2], [3, 0]]
    wa = s.window("a")
    assert torch.equal(wb.tokens[1], wa.tokens) and torch.equal(wb.frames[1], wa.frames)
    assert torch.equal(wb.tokens[0, :3], s.window("b").tokens)
    assert (wb.tokens[0, 3:] == 0).all() and (wb.sizes[0, 3:] == 0).all()
    assert (wb.frames[2, 3:] == 0).all() and (wb.times[2, 3:] == 0).all()
    empty = s.windows([])
    assert empty.tokens.shape[0] == 0 and empty.lengths.shape == (0,)


@impls
def test_windows_reject_mixed_streams(SS):
    s = SS()
    s.push("a", *chunk(2, C=8), seq=0)
    s.push("b", *chunk(2, C=4), seq=0)
    s.push("c", *chunk(2, C=8, dtype=torch.float16), seq=0)
    with pytest.raises(ValueError, match="cannot be batched"):
        s.windows(["a", "b"])
    with pytest.raises(ValueError, match="cannot be batched"):
        s.windows(["a", "c"])


@impls
def test_push_errors_leave_state_unchanged(SS):
    s = SS(max_chunks=2, max_bytes=1000)
    s.push("a", *chunk(4, C=4), seq=3)
    before = s.to_bytes()
    with pytest.raises(ValueError, match="C=4, got C=5"):
        s.push("a", *chunk(2, C=5), seq=4)
    with pytest.raises(ValueError, match="float32 tokens, got torch.float16"):
        s.push("a", *chunk(2, C=4, dtype=torch.float16), seq=4)
    with pytest.raises(ValueError, match="seq must increase"):
        s.push("a", *chunk(2, C=4), seq=3)
    with pytest.raises(MemoryError, match="max_bytes=1000"):
        s.push("b", *chunk(40, C=4), seq=0)
    t, sz, fr, tm = chunk(3, C=4)
    with pytest.raises(ValueError, match="sizes must have shape"):
        s.push("a", t, sz[:2], fr, tm, seq=9)
    with pytest.raises(ValueError, match="frames must be int64"):
        s.push("a", t, sz, fr.int(), tm, seq=9)
    with pytest.raises(ValueError, match="times must be float64"):
        s.push("a", t, sz, fr, tm.float(), seq=9)
    with pytest.raises(ValueError, match="sizes must be float32"):
        s.push("a", t, sz.double(), fr, tm, seq=9)
    with pytest.raises(ValueError, match=r"tokens must have shape \[n, C\]"):
        s.push("a", t[None], sz, fr, tm, seq=9)
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        s.push("a", t.long(), sz, fr, tm, seq=9)
    with pytest.raises(ValueError, match="contiguous"):
        s.push("a", torch.randn(4, 3).t(), sz, fr, tm, seq=9)
    with pytest.raises(TypeError):
        s.push(7, t, sz, fr, tm, seq=9)
    assert s.to_bytes() == before


@impls
def test_memory_bound_counts_eviction(SS):
    per = 4 * (4 * 4 + ROW_BYTES)  # one chunk of 4 tokens, C=4, fp32
    s = SS(max_chunks=2, max_bytes=2 * per)
    for k in range(5):  # the eviction makes room: never above the bound
        s.push("a", *chunk(4, C=4, seed=k), seq=k)
        assert s.nbytes <= 2 * per
    assert s.nbytes == 2 * per
    with pytest.raises(MemoryError):
        s.push("b", *chunk(4, C=4), seq=0)
    s.drop("a")
    assert s.nbytes == 0 and len(s) == 0
    s.push("b", *chunk(4, C=4), seq=0)
    with pytest.raises(ValueError):
        SS(max_chunks=0)
    with pytest.raises(ValueError):
        SS(max_bytes=0)


@impls
def test_unknown_stream_raises_key_error_naming_it(SS):
    s = SS()
    for call in (s.window, s.num_chunks, s.last_seq, s.drop, lambda i: s.windows([i])):
        with pytest.raises(KeyError, match="cam-7"):
            call("cam-7")


@impls
def test_serialise_round_trip_and_pickle(SS):
    s = SS(max_chunks=3, max_bytes=10**7)
    for k in range(4):
        s.push("a", *chunk(3 + k, seed=k), seq=10 + k)
    s.push("b/ü", *chunk(2, C=8, seed=7), seq=1)
    s.push("c", *chunk(0, C=8), seq=1)  # empty chunk is allowed
    blob = s.to_bytes()
    assert isinstance(blob, bytes) and blob[:8] == b"PYSTSTAT"
    for s2 in (SS.from_bytes(blob), SS.from_bytes(bytearray(blob)),
               pickle.loads(pickle.dumps(s))):
        assert s2.streams() == s.streams() and s2.nbytes == s.nbytes
        assert s2.max_chunks == 3 and s2.max_bytes == 10**7
        assert s2.last_seq("a") == 13 and s2.num_chunks("a") == 3
        for i in s.streams():
            for x, y in zip(s.window(i), s2.window(i)):
                assert torch.equal(x, y)
        assert s2.to_bytes() == blob
    s2.push("a", *chunk(1), seq=14)  # a restored state keeps working


@impls
def test_serialise_only_some_streams(SS):
    s = SS(max_chunks=3, max_bytes=10**7)
    s.push("cam", *chunk(4, seed=1), seq=1)
    s.push("file", *chunk(3, seed=2), seq=1)
    s.push("file", *chunk(2, seed=3), seq=2)
    part = SS.from_bytes(s.to_bytes(streams=["file", "not-held"]))  # unknown ids are skipped
    assert part.streams() == ["file"] and part.last_seq("file") == 2
    for x, y in zip(s.window("file"), part.window("file")):
        assert torch.equal(x, y)
    assert part.nbytes == s.nbytes - 4 * (8 * 4 + ROW_BYTES)  # cam: 4 tokens of C=8 float32
    assert SS.from_bytes(s.to_bytes(streams=[])).streams() == []
    assert s.to_bytes(streams=None) == s.to_bytes()  # None: every stream


@impls
def test_corrupt_or_truncated_input_raises_value_error(SS):
    s = SS()
    s.push("a", *chunk(5), seq=0)
    blob = s.to_bytes()
    cases = {
        "empty": b"",
        "short": blob[:20],
        "truncated": blob[:-3],
        "trailing": blob + b"\0",
        "magic": b"XXXXXXXX" + blob[8:],
        "version": blob[:8] + struct.pack("<I", 99) + blob[12:],
        "flipped payload bit": blob[:60] + bytes([blob[60] ^ 0x10]) + blob[61:],
        "flipped checksum": blob[:24] + bytes([blob[24] ^ 1]) + blob[25:],
    }
    for name, bad in cases.items():
        with pytest.raises(ValueError, match="StreamStates.from_bytes"):
            SS.from_bytes(bad)
    with pytest.raises(ValueError, match="version 99"):
        SS.from_bytes(cases["version"])
    with pytest.raises(TypeError):
        SS.from_bytes("not bytes")


@impls
def test_window_to_device_argument(SS):
    s = SS()
    s.push("a", *chunk(3), seq=0)
    s.push("b", *chunk(3, seed=1), seq=0)
    ref = s.window("a")
    for dev in ("cpu", torch.device("cpu")):
        w = s.window("a", device=dev)
        assert w.tokens.device.type == "cpu" and torch.equal(w.tokens, ref.tokens)
    # "meta" exists without a GPU, so this proves the argument is honoured, not ignored:
    # every tensor of the window (and of a batch of windows) lands there, dtypes kept.
    w = s.window("a", device="meta")
    assert all(t.device.type == "meta" for t in w)
    assert [t.dtype for t in w] == [t.dtype for t in ref]
    wb = s.windows(["a", "b"], device="meta")
    assert all(t.device.type == "meta" for t in wb) and wb.tokens.shape == (2, 3, 8)
    for bad in ("gpu", "cuda:x", "not a device"):
        with pytest.raises((RuntimeError, ValueError)):
            s.window("a", device=bad)
        with pytest.raises((RuntimeError, ValueError)):
            s.windows(["a"], device=bad)


@impls
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device and a CUDA torch")
def test_window_to_cuda(SS):
    s = SS()
    s.push("a", *chunk(5), seq=0)
    s.push("a", *chunk(4, seed=1, t0=5), seq=1)
    ref = s.window("a")
    w = s.window("a", device="cuda")
    assert all(t.is_cuda for t in w)
    for a, b in zip(w, ref):
        assert a.dtype == b.dtype and torch.equal(a.cpu(), b)
    wb = s.windows(["a", "a"], device=torch.device("cuda", 0))
    assert all(t.is_cuda for t in wb) and torch.equal(wb.tokens[1].cpu(), ref.tokens)
    # CUDA tensors pushed in come back out equal (the state keeps a host copy).
    s.push("c", *(t.cuda() for t in chunk(3, seed=2)), seq=0)
    assert torch.equal(s.window("c").tokens, chunk(3, seed=2)[0])


# ----------------------------------------------------------------------------------------------
# property test against a tiny Python model


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 6)), max_size=25),
       st.integers(1, 4))
@impls
def test_property_against_python_model(SS, ops, max_chunks):
    s = SS(max_chunks=max_chunks, max_bytes=1 << 24)
    model = {}
    seqs = {}
    for k, (sid, n) in enumerate(ops):
        c = chunk(n, C=3, seed=k, t0=k)
        seqs[sid] = seqs.get(sid, -1) + 1 + (k % 2)
        s.push(sid, *c, seq=seqs[sid])
        model.setdefault(sid, deque(maxlen=max_chunks)).append(c)
    assert s.streams() == sorted(model)
    total = 0
    for sid, dq in model.items():
        w = s.window(sid)
        for got, parts in zip(w[:4], zip(*dq)):
            assert torch.equal(got, torch.cat(parts))
        assert w.chunk_lengths.tolist() == [c[0].shape[0] for c in dq]
        assert s.last_seq(sid) == seqs[sid]
        total += sum(c[0].shape[0] * (3 * 4 + ROW_BYTES) for c in dq)
    assert s.nbytes == total
    if model:
        ids = list(model)
        wb = s.windows(ids)
        for k, sid in enumerate(ids):
            L = int(wb.lengths[k])
            assert torch.equal(wb.tokens[k, :L], s.window(sid).tokens)
    assert SS.from_bytes(s.to_bytes()).to_bytes() == s.to_bytes()


@impls
def test_threads_push_and_read_concurrently(SS):
    # the core releases the GIL; its lock must keep concurrent push/window/to_bytes consistent
    import threading

    s = SS(max_chunks=3, max_bytes=1 << 26)
    errors = []

    def writer(sid):
        try:
            for k in range(200):
                s.push(sid, *chunk(16, C=64, seed=k), seq=k)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader():
        try:
            for _ in range(200):
                ids = [i for i in ("a", "b") if i in s]
                if ids:
                    wb = s.windows(ids)
                    assert int(wb.lengths.max()) <= 48
                SS.from_bytes(s.to_bytes())
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in ("a", "b")]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert s.num_chunks("a") == 3 and s.last_seq("b") == 199
    assert s.nbytes == 6 * 16 * (64 * 4 + ROW_BYTES)


@pytest.mark.skipif(not merge.HAVE_CORE, reason="pystream._core not built")
def test_core_and_python_formats_interchange():
    a, b = merge.StreamStates(max_chunks=2), PyStreamStates(max_chunks=2)
    for s in (a, b):
        for k in range(3):
            s.push("cam/ü", *chunk(2 + k, seed=k, dtype=torch.bfloat16), seq=k)
        s.push("a", *chunk(1, C=8), seq=4)
    assert a.to_bytes() == b.to_bytes()
    c = PyStreamStates.from_bytes(a.to_bytes())
    d = merge.StreamStates.from_bytes(b.to_bytes())
    for x, y in zip(c.windows(["cam/ü"]), d.windows(["cam/ü"])):
        assert torch.equal(x, y)
    assert c.nbytes == d.nbytes == a.nbytes
