"""pystream._core bipartite merge == pystream.merge_reference (same merges, same values)."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pystream import merge
from pystream import merge_reference as ref

pytestmark = pytest.mark.skipif(not merge.HAVE_CORE, reason="pystream._core not built")

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def assert_same(a, b, dtype=torch.float32):
    assert a.x.shape == b.x.shape and a.x.dtype == b.x.dtype
    assert a.sizes.shape == b.sizes.shape and a.sizes.dtype == torch.float32
    assert torch.equal(a.index_map, b.index_map)
    assert torch.equal(a.lengths, b.lengths)
    assert a.lengths.dtype == torch.int64 and a.index_map.dtype == torch.int64
    torch.testing.assert_close(a.sizes, b.sizes, rtol=1e-6, atol=1e-6)
    tol = TOL[dtype]
    torch.testing.assert_close(a.x.float(), b.x.float(), rtol=tol, atol=tol)


def both(x, s, m, r, P=0, lengths=None):
    a = merge.bipartite_merge(x, s, m, r, P, lengths)
    b = ref.bipartite_merge(x, s, m, r, P, lengths)
    return a, b


def rand_inputs(B, N, C, Cm=None, seed=0, dtype=torch.float32, mdtype=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, C, generator=g).to(dtype)
    s = torch.randint(1, 5, (B, N), generator=g).float()
    m = torch.randn(B, N, Cm or C, generator=g).to(mdtype or dtype)
    return x, s, m


@pytest.mark.parametrize(
    "B,N,C,P,r",
    [
        (8, 50, 768, 1, 2),  # ImgMe ViT-B/32
        (4, 168, 768, 12, 50),  # ClipMe
        (1, 197, 768, 1, 16),  # ViT-B/16
        (3, 11, 5, 2, 4),  # odd N, r = r_max
        (3, 12, 5, 0, 6),  # even N, r = r_max, nothing protected
        (2, 9, 3, 0, 0),  # r = 0 still reorders (protected, A, B)
        (0, 10, 4, 0, 3),  # empty batch
        (2, 3, 4, 3, 0),  # everything protected
        (2, 4, 4, 3, 0),  # one A token, no B token
        (5, 1, 7, 0, 0),
    ],
)
def test_matches_reference(B, N, C, P, r):
    x, s, m = rand_inputs(B, N, C, seed=B * 1000 + N)
    assert_same(*both(x, s, m, r, P))


def test_ragged_lengths_and_per_row_r():
    x, s, m = rand_inputs(6, 20, 7, Cm=6, seed=3)
    lengths = torch.tensor([20, 3, 10, 11, 2, 5])
    r = torch.tensor([4, 0, 0, 4, 0, 1])
    a, b = both(x, s, m, r, 2, lengths)
    assert_same(a, b)
    assert a.x.shape[1] == int((lengths - r).max())
    assert (a.index_map[1, 3:] == -1).all() and (a.index_map[4, 2:] == -1).all()
    lengths = torch.tensor([20, 3, 10, 11, 0, 2])
    r = torch.tensor([4, 1, 0, 5, 0, 0])
    a, b = both(x, s, m, r, 0, lengths)
    assert_same(a, b)
    assert (a.index_map[4] == -1).all() and (a.x[4] == 0).all()


def test_r_as_tensor_scalar_list_and_lengths_list():
    x, s, m = rand_inputs(3, 14, 4, seed=4)
    for r in (3, torch.tensor(3), [3, 3, 3], torch.tensor([1, 2, 3])):
        assert_same(*both(x, s, m, r, 1))
    assert_same(*both(x, s, m, 2, 1, [14, 10, 7]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mdtype", [torch.float32, "same"])
def test_half_precision(dtype, mdtype):
    x, s, m = rand_inputs(4, 33, 16, seed=5, dtype=dtype, mdtype=dtype if mdtype == "same" else mdtype)
    a, b = both(x, s, m, 7, 1)
    assert a.x.dtype == dtype
    assert_same(a, b, dtype)


def test_exact_ties_broken_by_index():
    # every metric row identical: all scores tie -> every A picks B 0, ranking keeps A order
    x, s, _ = rand_inputs(2, 11, 3, seed=6)
    m = torch.ones(2, 11, 4)
    a, b = both(x, s, m, 5, 1)
    assert_same(a, b)
    # A positions 1,3,5,7,9 all merge into B position 2 (output position 1)
    assert a.index_map[0].tolist() == [0, 1, 1, 1, 2, 1, 3, 1, 4, 1, 5]


def test_zero_metric_rows_tie():
    x, s, m = rand_inputs(2, 16, 3, seed=7)
    m[:, 3:9] = 0  # zero norm -> clamped, scores exactly 0
    assert_same(*both(x, s, m, 6, 1))


def test_sizes_conserved_and_weighted_average():
    x, s, m = rand_inputs(3, 40, 8, seed=8)
    out = merge.bipartite_merge(x, s, m, 12, 2)
    torch.testing.assert_close(out.sizes.sum(1), s.sum(1))
    # size-weighted sums are conserved too
    torch.testing.assert_close((out.x * out.sizes[..., None]).sum(1), (x * s[..., None]).sum(1), rtol=1e-4, atol=1e-4)


def test_inference_mode_and_no_grad_paths():
    x, s, m = rand_inputs(2, 20, 8, seed=9)
    with torch.inference_mode():
        assert_same(*both(x, s, m, 5, 1))
    xg = x.clone().requires_grad_(True)
    out = merge.bipartite_merge(xg, s, m, 5, 1)  # autograd: differentiable reference path
    assert out.x.requires_grad
    out.x.sum().backward()
    assert xg.grad is not None
    with torch.no_grad():
        out2 = merge.bipartite_merge(xg, s, m.requires_grad_(True), 5, 1)
    assert torch.equal(out2.index_map, out.index_map)


def test_repeated_merges_like_a_model():
    x, s, m = rand_inputs(4, 50, 32, seed=10)
    a_x, a_s, b_x, b_s = x, s, x, s
    for _ in range(8):
        a = merge.bipartite_merge(a_x, a_s, a_x, 2, 1)
        b = ref.bipartite_merge(b_x, b_s, b_x, 2, 1)
        assert_same(a, b)
        a_x, a_s, b_x, b_s = a.x, a.sizes, b.x, b.sizes
    assert a_x.shape[1] == 34


# ----------------------------------------------------------------------------------------------
# property tests


@st.composite
def merge_cases(draw):
    B = draw(st.integers(0, 4))
    N = draw(st.integers(0, 24))
    C = draw(st.integers(1, 9))
    P = draw(st.integers(0, N))
    ragged = draw(st.booleans())
    if ragged:
        lengths = [draw(st.integers(P, N)) for _ in range(B)]
    else:
        lengths = [N] * B
    per_row = draw(st.booleans())
    if per_row:
        r = [draw(st.integers(0, (n - P) // 2)) for n in lengths]
    else:
        r = draw(st.integers(0, (min(lengths) - P) // 2)) if B else draw(st.integers(0, 3))
    exact = draw(st.booleans())
    Cm = draw(st.sampled_from([1, 4, 16, 64])) if exact else draw(st.integers(1, 12))
    pool = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    dtype = draw(st.sampled_from([torch.float32, torch.float32, torch.float16, torch.bfloat16]))
    return B, N, C, P, lengths if ragged else None, r, exact, Cm, pool, seed, dtype


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(merge_cases())
def test_property_matches_reference(case):
    B, N, C, P, lengths, r, exact, Cm, pool, seed, dtype = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, C, generator=g).to(dtype)
    s = torch.randint(1, 5, (B, N), generator=g).float()
    if exact:
        # entries +-1 with Cm a power of 4: normalised dot products are exact, so duplicated
        # rows produce exact ties, which must be broken by index like torch does
        vecs = torch.randint(0, 2, (pool, Cm), generator=g).float() * 2 - 1
        m = vecs[torch.randint(0, pool, (B, N), generator=g)]
    else:
        m = torch.randn(B, N, Cm, generator=g)
    m = m.to(dtype)
    lt = None if lengths is None else torch.tensor(lengths, dtype=torch.int64)
    rt = r if isinstance(r, int) else torch.tensor(r, dtype=torch.int64)
    a, b = both(x, s, m, rt, P, lt)
    assert_same(a, b, dtype)
    # sizes are conserved row by row
    valid = (torch.arange(N)[None] < (lt if lt is not None else torch.full((B,), N))[:, None])
    torch.testing.assert_close(a.sizes.sum(1), (s * valid).sum(1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_conversions_bitwise_over_all_values(dtype):
    # every finite 16-bit pattern, averaged with a shuffled partner: the fp32 math is exact
    # (sizes 1), so the output tests the core's own float <-> half/bfloat16 rounding bitwise
    vals = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype)
    vals = vals[torch.isfinite(vals.float())]
    g = torch.Generator().manual_seed(0)
    partner = vals[torch.randperm(vals.numel(), generator=g)]
    x = torch.stack([vals, partner, vals, partner.flip(0)], 1)[..., None]  # [K, 4, 1]
    K = x.shape[0]
    s = torch.ones(K, 4)
    m = torch.ones(K, 4, 1)
    a, b = both(x, s, m, 1, 0)
    assert torch.equal(a.index_map, b.index_map)
    assert torch.equal(a.x.view(torch.int16), b.x.view(torch.int16))
