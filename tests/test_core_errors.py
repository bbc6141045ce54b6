"""Bad input raises a clear Python exception (never a crash), of the reference's kind."""

import pytest
import torch

from pystream import merge
from pystream import merge_reference as ref

pytestmark = pytest.mark.skipif(not merge.HAVE_CORE, reason="pystream._core not built")

IMPLS = [pytest.param(merge.bipartite_merge, id="core"), pytest.param(ref.bipartite_merge, id="ref")]


def good(B=2, N=10, C=4):
    return torch.randn(B, N, C), torch.ones(B, N), torch.randn(B, N, C)


@pytest.mark.parametrize("fn", IMPLS)
@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda x, s, m: (x[0], s, m), "rank"),
        (lambda x, s, m: (x, s[:, :5], m), "sizes must have shape"),
        (lambda x, s, m: (x, s, m[:, :5]), "metric must have shape"),
        (lambda x, s, m: (x.long(), s, m), "float32, float16 or bfloat16"),
        (lambda x, s, m: (x, s, m.double()), "float32, float16 or bfloat16"),
        (lambda x, s, m: (x, s.double(), m), "sizes must be float32"),
    ],
)
def test_bad_shapes_and_dtypes(fn, mutate, match):
    x, s, m = mutate(*good())
    with pytest.raises(ValueError, match=match):
        fn(x, s, m, 2, 1)


@pytest.mark.parametrize("fn", IMPLS)
@pytest.mark.parametrize(
    "r,P,lengths,match",
    [
        (5, 1, None, "above the maximum 4"),  # (10 - 1) // 2 = 4
        (6, 0, None, "above the maximum 5"),
        (11, 0, None, "above the maximum"),
        (-1, 0, None, "r must be >= 0"),
        (torch.tensor([1, -1]), 0, None, "r must be >= 0"),
        (torch.tensor([1, 2, 3]), 0, None, r"r must be an int or have shape \[2\]"),
        (1, -1, None, "protected must be >= 0"),
        (0, 11, None, "fewer than protected=11"),
        (1, 2, torch.tensor([10, 1]), "row 1 has 1 tokens, fewer than protected=2"),
        (2, 0, torch.tensor([10, 3]), "r=2 in row 1 is above the maximum 1"),
        (0, 0, torch.tensor([10, 11]), r"lengths must lie in \[0, 10\]"),
        (0, 0, torch.tensor([10, -1]), r"lengths must lie in \[0, 10\]"),
        (0, 0, torch.tensor([10]), r"lengths must have shape \[2\]"),
    ],
)
def test_bad_r_protected_lengths(fn, r, P, lengths, match):
    x, s, m = good()
    with pytest.raises(ValueError, match=match):
        fn(x, s, m, r, P, lengths)


@pytest.mark.parametrize("fn", IMPLS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", ["merged", "protected", "padding", "r0"])
def test_nonfinite_metric(fn, bad, where):
    x, s, m = good()
    r, lengths = 2, None
    if where == "merged":
        m[1, 5, 2] = bad
    elif where == "protected":
        m[0, 0, 0] = bad
    elif where == "padding":
        lengths = torch.tensor([10, 6])
        m[1, 8, 1] = bad
    else:
        r = 0
        m[1, 3, 3] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        fn(x, s, m, r, 1, lengths)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_nonfinite_half_metric(dtype):
    x, s, m = good()
    m = m.to(dtype)
    m[0, 4, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        merge.bipartite_merge(x, s, m, 2, 1)


@pytest.mark.parametrize("which", ["x", "sizes", "metric"])
def test_non_contiguous_raises_instead_of_copying(which):
    x, s, m = good()
    if which == "x":
        x = torch.randn(2, 4, 10).transpose(1, 2)
    elif which == "sizes":
        s = torch.ones(10, 2).t()
    else:
        m = torch.randn(2, 10, 8)[..., ::2]
    with pytest.raises(ValueError, match="contiguous"):
        merge.bipartite_merge(x, s, m, 2, 1)


def test_not_a_tensor():
    x, s, m = good()
    with pytest.raises(TypeError):
        merge.bipartite_merge(x.numpy(), s, m, 2, 1)
    with pytest.raises(TypeError, match="tensor"):
        merge._core.bipartite_merge([1, 2], s, m, 1, 0, None, x, s, s, s)


def test_core_validates_outputs():
    x, s, m = good()
    core = merge._core
    xo = torch.empty(2, 8, 4)
    with pytest.raises(ValueError, match="x_out"):
        core.bipartite_merge(x, s, m, 2, 0, None, torch.empty(2, 7, 4), torch.empty(2, 8), torch.empty(2, 10, dtype=torch.long), torch.empty(2, dtype=torch.long))
    with pytest.raises(ValueError, match="x_out must have the tokens' dtype"):
        core.bipartite_merge(x, s, m, 2, 0, None, xo.half(), torch.empty(2, 8), torch.empty(2, 10, dtype=torch.long), torch.empty(2, dtype=torch.long))
    with pytest.raises(ValueError, match="index_map must be int64"):
        core.bipartite_merge(x, s, m, 2, 0, None, xo, torch.empty(2, 8), torch.empty(2, 10, dtype=torch.int32), torch.empty(2, dtype=torch.long))
    with pytest.raises(ValueError, match="sizes_out must have shape"):
        core.bipartite_merge(x, s, m, 2, 0, None, xo, torch.empty(2, 9), torch.empty(2, 10, dtype=torch.long), torch.empty(2, dtype=torch.long))


def test_capsule_cannot_be_used_twice():
    x, s, m = good()
    cap = torch.utils.dlpack.to_dlpack(x)
    out = [torch.empty(2, 8, 4), torch.empty(2, 8), torch.empty(2, 10, dtype=torch.long), torch.empty(2, dtype=torch.long)]
    merge._core.bipartite_merge(cap, s, m, 2, 0, None, *out)
    with pytest.raises(TypeError, match="unused DLPack capsule"):
        merge._core.bipartite_merge(cap, s, m, 2, 0, None, *out)


@pytest.mark.skipif(not (torch.cuda.is_available() and merge.core_cuda_available()),
                    reason="needs a CUDA device, a CUDA torch and CUDA kernels")
def test_device_mismatch():
    x, s, m = good()
    with pytest.raises(ValueError, match="one device"):
        merge.bipartite_merge(x.cuda(), s, m.cuda(), 2, 1)
    with pytest.raises(ValueError, match="one device"):
        ref.bipartite_merge(x.cuda(), s, m.cuda(), 2, 1)


def test_spans_errors():
    im = torch.tensor([[0, 1, 5]])
    with pytest.raises(ValueError, match="out of range"):
        merge.merge_spans(torch.zeros(1, 3, 2, dtype=torch.long), im, 3)
    with pytest.raises(ValueError, match=r"\[B, N, 2\]"):
        merge.merge_spans(torch.zeros(1, 3, 3, dtype=torch.long), im, 6)
    with pytest.raises(ValueError, match="index_map must have shape"):
        merge.merge_spans(torch.zeros(1, 4, 2, dtype=torch.long), im, 6)
    with pytest.raises(ValueError, match="out_tokens"):
        merge.merge_spans(torch.zeros(1, 3, 2, dtype=torch.long), im, -1)
    with pytest.raises(ValueError, match="contiguous"):
        merge.merge_spans(torch.zeros(1, 2, 3, dtype=torch.long).transpose(1, 2), im, 6)
