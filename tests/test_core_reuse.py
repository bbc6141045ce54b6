"""pystream._core.ReuseStates (through pystream.merge.ReuseStates): the static-patch reuse
caches' C++ home. Fixed-size records, bounded, exact round trips, clear errors."""

import pytest
import torch

from pystream.merge import ReuseStates

L, N, C = 3, 5, 8


def _rec(S, seed, tok=torch.float32, kv=torch.bfloat16):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(S, N, C, generator=g).to(tok), torch.randn(S, L, N, C, generator=g).to(kv),
            torch.randn(S, L, N, C, generator=g).to(kv), torch.randn(S, N, C, generator=g).to(tok))


def _put(st, ids, seed, age=1, patches=10, reused=4):
    S = len(ids)
    one = torch.ones(S, dtype=torch.int64)
    st.put(ids, *_rec(S, seed), one * age, one * patches, one * reused)


def test_gather_returns_what_was_put_and_zeros_for_unknown_streams():
    st = ReuseStates(L, N, C, torch.float32, torch.bfloat16)
    ref, k, v, out = _rec(2, 0)
    st.put(["a", "b"], ref, k, v, out, torch.tensor([3, 5]), torch.tensor([10, 20]),
           torch.tensor([1, 2]))
    r = st.gather(["b", "x", "a", "b"])
    assert r.ref.shape == (4, N, C) and r.k.shape == (4, L, N, C)
    assert r.ref.dtype == torch.float32 and r.k.dtype == torch.bfloat16
    assert torch.equal(r.ref[0], ref[1]) and torch.equal(r.ref[2], ref[0])
    assert torch.equal(r.k[3], k[1]) and torch.equal(r.v[2], v[0]) and torch.equal(r.out[0], out[1])
    assert r.age.tolist() == [5, -1, 3, 5]
    assert not r.ref[1].any() and not r.k[1].any()
    assert st.counts("b") == (20, 2) and st.age("a") == 3
    _put(st, ["b"], 1)  # counters add up, the record is replaced
    assert st.counts("b") == (30, 6)
    before = st.gather(["a"])
    st.advance(["a"], torch.tensor([4]), torch.tensor([7]), torch.tensor([7]))  # values kept
    after = st.gather(["a"])
    assert after.age.tolist() == [4] and st.counts("a") == (17, 8)
    assert all(torch.equal(x, y) for x, y in zip(before[:4], after[:4]))
    with pytest.raises(KeyError):
        st.advance(["a", "nope"], torch.tensor([1, 1]), torch.tensor([1, 1]), torch.tensor([1, 1]))
    assert st.counts("a") == (17, 8)  # nothing changed


def test_record_size_is_constant_and_bounded():
    st = ReuseStates(L, N, C, torch.float32, torch.bfloat16, max_bytes=10_000)
    per = 2 * N * C * 4 + 2 * L * N * C * 2
    assert st.record_bytes == per
    _put(st, ["a"], 0)
    _put(st, ["a"], 1)
    assert st.nbytes == per and len(st) == 1
    big = ReuseStates(L, N, C, torch.float32, torch.bfloat16, max_bytes=2 * per)
    _put(big, ["a", "b"], 0)
    with pytest.raises(MemoryError, match="max_bytes"):
        _put(big, ["c"], 1)
    assert sorted(big.streams()) == ["a", "b"]  # nothing changed
    big.drop("a")
    _put(big, ["c"], 1)
    big.drop("nope")  # dropping an unknown stream is a no-op


def test_bad_input_is_refused_by_name():
    st = ReuseStates(L, N, C, torch.float32, torch.bfloat16)
    ref, k, v, out = _rec(1, 0)
    one = torch.ones(1, dtype=torch.int64)
    with pytest.raises(ValueError, match="ref must have shape"):
        st.put(["a"], ref[:, :2], k, v, out, one, one, one)
    with pytest.raises(ValueError, match="k"):
        st.put(["a"], ref, k.float(), v, out, one, one, one)
    with pytest.raises(ValueError, match="repeat"):
        st.put(["a", "a"], *_rec(2, 0), one.repeat(2), one.repeat(2), one.repeat(2))
    with pytest.raises(KeyError):
        st.counts("nope")
    with pytest.raises(ValueError, match="dtype"):
        ReuseStates(L, N, C, torch.int64, torch.bfloat16)
    with pytest.raises(ValueError, match=">= 1"):
        ReuseStates(0, N, C, torch.float32, torch.float32)


def test_serialisation_round_trips_exactly_and_rejects_corruption():
    st = ReuseStates(L, N, C, torch.float32, torch.bfloat16)
    _put(st, ["cam1", "cam2"], 4, age=2)
    blob = st.to_bytes()
    back = ReuseStates.from_bytes(blob)
    assert back.streams() == st.streams() and back.shape == (L, N, C)
    assert back.dtypes == (torch.float32, torch.bfloat16)
    a, b = st.gather(["cam1", "cam2"]), back.gather(["cam1", "cam2"])
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert back.counts("cam2") == st.counts("cam2")
    only = ReuseStates.from_bytes(st.to_bytes(["cam2", "cam9"]))  # just cam2; cam9 not held
    assert only.streams() == ["cam2"] and only.counts("cam2") == st.counts("cam2")
    for x, y in zip(st.gather(["cam2"]), only.gather(["cam2"])):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="checksum"):
        ReuseStates.from_bytes(blob[:40] + bytes([blob[40] ^ 1]) + blob[41:])
    with pytest.raises(ValueError, match="truncated"):
        ReuseStates.from_bytes(blob[:-3])
    with pytest.raises(ValueError, match="bad magic"):
        ReuseStates.from_bytes(b"X" * 64)
