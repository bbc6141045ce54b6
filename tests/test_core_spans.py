"""Span union under an index map: core == merge_reference.merge_spans."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pystream import merge
from pystream import merge_reference as ref

pytestmark = pytest.mark.skipif(not merge.HAVE_CORE, reason="pystream._core not built")


def merged_index_map(B, N, P, r, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, 3, generator=g)
    lengths = torch.randint(P, N + 1, (B,), generator=g)
    rr = torch.minimum(torch.full((B,), r), (lengths - P) // 2)
    out = ref.bipartite_merge(x, torch.ones(B, N), x, rr, P, lengths)
    return out.index_map, out.x.shape[1]


@pytest.mark.parametrize("dtype", [torch.int64, torch.float64])
def test_spans_match_reference(dtype):
    im, M = merged_index_map(5, 31, 1, 9, seed=1)
    g = torch.Generator().manual_seed(2)
    start = torch.randint(0, 1000, (5, 31), generator=g)
    spans = torch.stack([start, start + torch.randint(0, 50, (5, 31), generator=g)], -1).to(dtype)
    got = merge.merge_spans(spans, im, M)
    assert got.dtype == dtype and got.shape == (5, M, 2)
    assert torch.equal(got, ref.merge_spans(spans, im, M))
    # extra output slots receive nothing -> zeros
    wide = merge.merge_spans(spans, im, M + 3)
    assert torch.equal(wide[:, M:], torch.zeros_like(wide[:, M:]))
    assert torch.equal(wide, ref.merge_spans(spans, im, M + 3))


def test_spans_union_semantics():
    spans = torch.tensor([[[0, 3], [10, 12], [2, 5], [7, 7]]])
    im = torch.tensor([[0, 1, 0, -1]])
    out = merge.merge_spans(spans, im, 3)
    assert out.tolist() == [[[0, 5], [10, 12], [0, 0]]]


def test_other_dtypes_fall_back_to_reference():
    spans = torch.tensor([[[0.5, 1.0], [2.0, 3.0]]], dtype=torch.float32)
    im = torch.tensor([[0, 0]])
    assert torch.equal(merge.merge_spans(spans, im, 1), ref.merge_spans(spans, im, 1))


def test_empty():
    for B, N, M in [(0, 5, 3), (2, 0, 0), (2, 0, 3)]:
        spans = torch.zeros(B, N, 2, dtype=torch.int64)
        im = torch.full((B, N), -1, dtype=torch.int64)
        assert torch.equal(merge.merge_spans(spans, im, M), ref.merge_spans(spans, im, M))


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 4), st.integers(0, 30), st.integers(0, 5), st.integers(0, 12),
    st.integers(0, 2**31 - 1), st.sampled_from([torch.int64, torch.float64]),
)
def test_property_spans(B, N, P, r, seed, dtype):
    P = min(P, N)
    im, M = merged_index_map(B, N, P, r, seed)
    g = torch.Generator().manual_seed(seed + 1)
    a = torch.randn(B, N, generator=g) * 100
    spans = torch.stack([a, a + torch.rand(B, N, generator=g) * 10], -1)
    spans = spans.to(dtype)
    assert torch.equal(merge.merge_spans(spans, im, M), ref.merge_spans(spans, im, M))
