"""Bipartite soft matching merge in plain PyTorch: the specification of ``pystream._core``.

This file is the readable definition of what the C++/CUDA core computes. The core must pick
exactly the same merges and match the values to fp32 rounding (see tests/test_core_merge.py).

One merge step, for each sequence (row) b with ``n = lengths[b]`` valid tokens:

1. The first ``protected`` tokens (CLS tokens) are never merged and stay in front.
2. The remaining ``m = n - protected`` tokens are split alternately: set A holds positions
   protected, protected+2, ... and set B holds protected+1, protected+3, ...
   So |A| = ceil(m/2), |B| = floor(m/2), and at most ``r_max = m // 2`` tokens can merge.
3. Metric rows are L2-normalised in fp32 (norm clamped to >= 1e-12); score[i, j] = a_i . b_j.
4. Each A token picks its best B token (highest score; ties -> smallest j).
5. A tokens are ranked by that best score, descending (ties -> smallest i). The first ``r[b]``
   are merged into their chosen B tokens by size-weighted average (fp32); sizes add.
6. Output order: protected tokens, then the unmerged A tokens in ascending position, then all
   B tokens in ascending position. Output length is ``n - r[b]``; rows are padded with zeros
   to the longest output in the batch.
7. ``index_map[b, k]`` gives, for old token k, its position in the output row (a merged A token
   points at the B token it went into); padding positions map to -1.

Provenance (the frame/time span a token stands for) follows the index map: a merged token's
span is the union (min of starts, max of ends) of the spans of the tokens it absorbed.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import torch

NORM_EPS = 1e-12


class MergeResult(NamedTuple):
    x: torch.Tensor  # [B, M, C], dtype of the input tokens, zero padded
    sizes: torch.Tensor  # [B, M] float32, zero padded
    lengths: torch.Tensor  # [B] int64, valid output tokens per row
    index_map: torch.Tensor  # [B, N] int64, old position -> new position, -1 for padding


def check_merge_args(x, sizes, metric, r, protected, lengths):
    """Validate inputs; return (lengths [B] int64, r [B] int64) on the CPU. Raises ValueError."""
    if x.dim() != 3:
        raise ValueError(f"tokens must have shape [B, N, C], got rank {x.dim()}")
    B, N, _ = x.shape
    if sizes.dim() != 2 or tuple(sizes.shape) != (B, N):
        raise ValueError(f"sizes must have shape [{B}, {N}], got {tuple(sizes.shape)}")
    if metric.dim() != 3 or tuple(metric.shape[:2]) != (B, N):
        raise ValueError(f"metric must have shape [{B}, {N}, Cm], got {tuple(metric.shape)}")
    for name, t in (("tokens", x), ("metric", metric)):
        if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")
    if sizes.dtype != torch.float32:
        raise ValueError(f"sizes must be float32, got {sizes.dtype}")
    if not (x.device == sizes.device == metric.device):
        raise ValueError(
            f"all tensors must be on one device, got {x.device}, {sizes.device}, {metric.device}"
        )
    if protected < 0:
        raise ValueError(f"protected must be >= 0, got {protected}")
    if lengths is None:
        lengths = torch.full((B,), N, dtype=torch.int64)
    else:
        lengths = torch.as_tensor(lengths, dtype=torch.int64).cpu()
        if tuple(lengths.shape) != (B,):
            raise ValueError(f"lengths must have shape [{B}], got {tuple(lengths.shape)}")
        if B and (int(lengths.min()) < 0 or int(lengths.max()) > N):
            raise ValueError(f"lengths must lie in [0, {N}]")
    r = torch.as_tensor(r, dtype=torch.int64).cpu()
    if r.dim() == 0:
        r = r.expand(B).clone()
    if tuple(r.shape) != (B,):
        raise ValueError(f"r must be an int or have shape [{B}], got {tuple(r.shape)}")
    if B:
        if int(r.min()) < 0:
            raise ValueError("r must be >= 0")
        short = lengths < protected
        if bool(short.any()):
            b = int(short.nonzero()[0])
            raise ValueError(
                f"row {b} has {int(lengths[b])} tokens, fewer than protected={protected}"
            )
        r_max = (lengths - protected) // 2
        over = r > r_max
        if bool(over.any()):
            b = int(over.nonzero()[0])
            raise ValueError(
                f"r={int(r[b])} in row {b} is above the maximum {int(r_max[b])} "
                f"({int(lengths[b])} tokens, {protected} protected)"
            )
        if not bool(torch.isfinite(metric.float()).all()):
            raise ValueError("metric contains NaN or inf")
    return lengths, r


def _merge_row(x, sizes, metric, r: int, protected: int):
    """One row, valid tokens only: returns (x_out [n-r, C] fp32, sizes_out, index_map [n])."""
    n = x.shape[0]
    P = protected
    a_pos = torch.arange(P, n, 2)
    b_pos = torch.arange(P + 1, max(n, P + 1), 2)  # empty (not an error) when n == P
    nB = b_pos.numel()
    xf = x.float()
    index_map = torch.empty(n, dtype=torch.int64)
    index_map[:P] = torch.arange(P)
    if r == 0 or nB == 0:
        index_map[P:] = torch.arange(P, n)
        keep = torch.cat([torch.arange(P), a_pos, b_pos])
        index_map[keep] = torch.arange(n)
        return xf[keep], sizes[keep].clone(), index_map

    m = metric.float()
    m = m / m.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)
    scores = m[a_pos] @ m[b_pos].T  # [nA, nB]
    best, best_j = scores.max(dim=-1)  # first maximal index on ties
    order = torch.sort(best, descending=True, stable=True).indices
    src = order[:r]
    unm = order[r:].sort().values

    # Size-weighted average into the chosen B tokens, in fp32.
    w_b = sizes[b_pos].clone()
    acc_b = xf[b_pos] * w_b[:, None]
    dst = best_j[src]
    acc_b.index_add_(0, dst, xf[a_pos[src]] * sizes[a_pos[src]][:, None])
    w_b.index_add_(0, dst, sizes[a_pos[src]])

    out_x = torch.cat([xf[:P], xf[a_pos[unm]], acc_b / w_b[:, None]])
    out_s = torch.cat([sizes[:P], sizes[a_pos[unm]], w_b])
    n_unm = unm.numel()
    index_map[a_pos[unm]] = P + torch.arange(n_unm)
    index_map[b_pos] = P + n_unm + torch.arange(nB)
    index_map[a_pos[src]] = P + n_unm + dst
    return out_x, out_s, index_map


def bipartite_merge(
    x: torch.Tensor,
    sizes: torch.Tensor,
    metric: torch.Tensor,
    r: Union[int, torch.Tensor],
    protected: int = 0,
    lengths: Optional[torch.Tensor] = None,
) -> MergeResult:
    """Merge ``r`` tokens in each row of ``x`` (see the module docstring for the exact rule)."""
    lengths, r = check_merge_args(x, sizes, metric, r, protected, lengths)
    B, N, C = x.shape
    if B and bool((lengths == N).all()) and bool((r == r[0]).all()):
        return _merge_uniform(x, sizes, metric, int(r[0]), protected)
    out_len = lengths - r
    M = int(out_len.max()) if B else 0
    out_x = x.new_zeros(B, M, C)
    out_s = sizes.new_zeros(B, M)
    index_map = torch.full((B, N), -1, dtype=torch.int64, device=x.device)
    for b in range(B):
        n = int(lengths[b])
        xb, sb, ib = _merge_row(
            x[b, :n].cpu(), sizes[b, :n].cpu(), metric[b, :n].cpu(), int(r[b]), protected
        )
        out_x[b, : n - int(r[b])] = xb.to(x.dtype).to(x.device)
        out_s[b, : n - int(r[b])] = sb.to(x.device)
        index_map[b, :n] = ib.to(x.device)
    return MergeResult(out_x, out_s, out_len.to(x.device), index_map)


def _merge_uniform(x, sizes, metric, r: int, protected: int) -> MergeResult:
    """The common case, batched like ToMe: every row full length, one r for all rows."""
    B, N, C = x.shape
    P = protected
    dev = x.device
    a_pos = torch.arange(P, N, 2, device=dev)
    b_pos = torch.arange(P + 1, max(N, P + 1), 2, device=dev)  # empty when N == P
    nA, nB = a_pos.numel(), b_pos.numel()
    lengths = torch.full((B,), N - r, dtype=torch.int64, device=dev)
    xf = x.float()
    if r == 0:
        keep = torch.cat([torch.arange(P, device=dev), a_pos, b_pos])
        index_map = torch.empty(N, dtype=torch.int64, device=dev)
        index_map[keep] = torch.arange(N, device=dev)
        return MergeResult(
            x[:, keep].clone(), sizes[:, keep].clone(), lengths, index_map.expand(B, N).clone()
        )

    m = metric.float()
    m = m / m.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)
    scores = m[:, a_pos] @ m[:, b_pos].transpose(1, 2)  # [B, nA, nB]
    best, best_j = scores.max(dim=-1)
    order = torch.sort(best, dim=-1, descending=True, stable=True).indices
    src = order[:, :r]  # [B, r] indices into A
    unm = order[:, r:].sort(dim=-1).values  # [B, nA - r]
    dst = best_j.gather(1, src)  # [B, r] indices into B

    xa, xb = xf[:, a_pos], xf[:, b_pos]
    sa, sb = sizes[:, a_pos], sizes[:, b_pos]
    w_b = sb.scatter_add(1, dst, sa.gather(1, src))
    acc_b = (xb * sb[..., None]).scatter_add(
        1, dst[..., None].expand(B, r, C), (xa * sa[..., None]).gather(1, src[..., None].expand(B, r, C))
    )
    out_x = torch.cat(
        [xf[:, :P], xa.gather(1, unm[..., None].expand(B, nA - r, C)), acc_b / w_b[..., None]], dim=1
    )
    out_s = torch.cat([sizes[:, :P], sa.gather(1, unm), w_b], dim=1)

    n_unm = nA - r
    map_a = torch.empty(B, nA, dtype=torch.int64, device=dev)
    map_a.scatter_(1, unm, (P + torch.arange(n_unm, device=dev)).expand(B, n_unm).contiguous())
    map_a.scatter_(1, src, P + n_unm + dst)
    index_map = torch.empty(B, N, dtype=torch.int64, device=dev)
    index_map[:, :P] = torch.arange(P, device=dev)
    index_map[:, a_pos] = map_a
    index_map[:, b_pos] = P + n_unm + torch.arange(nB, device=dev)
    return MergeResult(out_x.to(x.dtype), out_s, lengths, index_map)


def merge_spans(spans: torch.Tensor, index_map: torch.Tensor, out_tokens: int) -> torch.Tensor:
    """Union of provenance spans under a merge: ``spans[B, N, 2]`` (start, end; int64 frame
    indices or float64 seconds) -> ``[B, out_tokens, 2]``: min of starts, max of ends.
    Output positions that receive no token (padding) are 0."""
    B, N, _ = spans.shape
    out = spans.new_zeros(B, out_tokens, 2)
    if out_tokens == 0:  # nothing to fill (scatter would index slot 0 for padding entries)
        return out
    valid = index_map >= 0
    idx = index_map.clamp_min(0)
    big = torch.finfo(spans.dtype).max if spans.dtype.is_floating_point else torch.iinfo(spans.dtype).max
    start = torch.full((B, out_tokens), big, dtype=spans.dtype, device=spans.device)
    end = torch.full((B, out_tokens), -big, dtype=spans.dtype, device=spans.device)
    start.scatter_reduce_(1, idx, torch.where(valid, spans[..., 0], big), reduce="amin")
    end.scatter_reduce_(1, idx, torch.where(valid, spans[..., 1], -big), reduce="amax")
    filled = start != big
    out[..., 0] = torch.where(filled, start, 0)
    out[..., 1] = torch.where(filled, end, 0)
    return out
