"""Static-patch reuse: the streaming half of temporal token merging (training-free).

A fixed camera's 32x32 patches mostly do not change between sampled frames. In the per-frame
layers (TempMe's ImgMe layers, before ClipMe mixes frames), a patch whose input embedding moved
less than ``threshold`` (relative L2) since it was last computed is not recomputed: it keeps
the keys, values and layer outputs cached for its position, and only the changed patches and
every frame's CLS token (always recomputed) run through the linear layers. Changed tokens
attend to all positions: their own fresh keys/values plus the cached ones of the static
patches. This is Eventful Transformers' token gating (ICCV 2023) with STC-Cacher's cached K/V,
and a frame where nothing moved costs one patch embedding plus the CLS token.

Why merging is deferred. Per-frame ImgMe (ToMe after every layer) reorders tokens each layer,
so no position would still mean "the same patch" in the next frame. With reuse on, the ImgMe
layers keep all positions and ImgMe's whole reduction (``imgme_r`` tokens per layer) happens in
one bipartite merge after the last of them (metric: that layer's keys, as ToMe uses). ClipMe
and later layers then see as many tokens per frame as with per-layer ImgMe. Threshold 0 turns
reuse off and runs exactly the per-layer TempMe schedule.

Bounded drift: a stream's positions are all recomputed every ``refresh_chunks`` chunks (for a
live stream: in the last frame of that chunk, which is what the next chunk gates against), and a
token is compared with the input it was last computed from (not the previous frame), so slow
drift adds up until it crosses the threshold. For a live stream a recomputed patch takes its
new input as the reference (and its new keys, values and output as the cache). For a file
(``Chunk.replayable``) the reference of every position is the frame of the stream's last full
recompute, so that its vectors never depend on batching (below); a patch that changed is then
recomputed in every chunk until the next refresh (on the benchmark's camera clips: 40% of
patches reused instead of 66%). A new live stream's first refresh comes early by an offset
derived from its name (``stagger_offset``), so cameras started together refresh in different
batches instead of all in one batch every ``refresh_chunks`` chunks.

State: one fixed-size record per stream in the C++ core (``pystream._core.ReuseStates``, beside
the carried tokens): reference inputs, keys and values of every reused layer, and the last
layer's outputs; 1.5 MB for ViT-B/32 with bf16 keys/values (2.8 MB in fp32), constant over time,
bounded in total, serialised with the checkpoint.

Batches: a live stream's chunks run one per pass, each against the state the previous one left
(a camera brings one chunk a batch unless the encoder is behind). A file's cached values change
only at a full recompute, so its chunks up to the next refresh all gate against the same state
and run in one pass (``_passes``) however many of them a batch holds, and the result does not
depend on how chunks fall into batches: a resumed or replayed file gives the same vectors.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import AbstractSet, List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..merge import ReuseStates
from .precision import bucket_rows
from .tempme import Tokens, merge_tokens, project_qkv

log = logging.getLogger(__name__)


@dataclass
class ReuseSettings:
    threshold: float = 0.0  # relative L2 change of a patch's input embedding; 0 = reuse off
    refresh_chunks: int = 8  # recompute every position of a stream this often

    @property
    def enabled(self) -> bool:
        return self.threshold > 0


class ReuseState:
    """Settings plus the per-stream caches (C++-owned records, made at the first batch, when the
    token shape is known). ``kv_dtype``: dtype of cached keys/values (the linears' compute dtype;
    default: the residual stream's)."""

    def __init__(self, settings: ReuseSettings, kv_dtype: Optional[torch.dtype] = None,
                 max_bytes: int = 1 << 30):
        self.settings = settings
        self.kv_dtype = kv_dtype
        self.max_bytes = max_bytes
        self.records: Optional[ReuseStates] = None

    def _records_for(self, L: int, N: int, C: int, tok_dtype: torch.dtype) -> ReuseStates:
        if self.records is None:
            self.records = ReuseStates(L, N, C, tok_dtype, self.kv_dtype or tok_dtype, self.max_bytes)
        elif self.records.shape != (L, N, C) or self.records.dtypes[0] != tok_dtype:
            raise ValueError(f"reuse state holds records of shape {self.records.shape} "
                             f"{self.records.dtypes[0]}, got ({L}, {N}, {C}) {tok_dtype}")
        return self.records

    def __contains__(self, stream: str) -> bool:
        return self.records is not None and stream in self.records

    def drop(self, stream: str):
        if self.records is not None:
            self.records.drop(stream)

    def reused_share(self, stream: str) -> float:
        if stream not in self:
            return 0.0
        n, r = self.records.counts(stream)
        return r / n if n else 0.0

    def nbytes(self, stream: str) -> int:
        return self.records.record_bytes if stream in self else 0

    # ------------------------------------------------------------------ checkpoints
    def to_bytes(self, streams=None) -> bytes:
        return self.records.to_bytes(streams) if self.records is not None else b""

    def load_bytes(self, blob: bytes):
        if not blob:
            self.records = None
        elif blob[:2] == b"PK":  # a checkpoint of the previous format (torch.save): a cache only
            log.warning("reuse cache of an older checkpoint format dropped: the next chunk of "
                        "each stream recomputes every patch")
            self.records = None
        else:
            self.records = ReuseStates.from_bytes(blob)  # ValueError names what is corrupt


def stagger_offset(stream: str, refresh: int) -> int:
    """Chunks a new live stream's first refresh comes early by, in [0, refresh - 2]: a
    function of its name only, so cameras that start together (a daemon's start) refresh in
    different batches. Measured on the project's box (62 cameras, B/32, default config): a batch
    where every camera refreshes took 2.8x a usual one, and with one such batch in eight, it
    set the p95 lag (one row in eight came from it). Files are not
    staggered: their refresh points stay at multiples of refresh_chunks."""
    return zlib.crc32(stream.encode()) % (refresh - 1) if refresh > 1 else 0


QUERY_WIDTHS = (8, 16, 32)  # padded query rows a frame in attention; wider frames take all N


def _query_groups(counts: torch.Tensor, N: int):
    """Frames grouped by padded query width (the smallest of QUERY_WIDTHS, or N, that holds
    the frame's ``counts`` recomputed tokens): ``(perm, inv, [(start, stop, width)])``, where
    ``perm`` lists the frames group by group (``inv`` its inverse) and each group is the range
    [start, stop) of that order. A few fixed widths keep attention's shapes few, as
    ``precision.bucket_rows`` does for the linear layers."""
    edges = torch.tensor([w for w in QUERY_WIDTHS if w < N] + [N], device=counts.device)
    gi = torch.searchsorted(edges, counts)
    perm = torch.argsort(gi, stable=True)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    groups, a0 = [], 0
    for w, n in zip(edges.tolist(), torch.bincount(gi, minlength=len(edges)).tolist()):
        if n:
            groups.append((a0, a0 + n, w))
            a0 += n
    return perm, inv, groups


def run_reused_layers(model, t: Tokens, streams: Sequence[str], chunk_frames: int,
                      state: ReuseState, chained: AbstractSet[str], stop: int,
                      merge_r: int) -> Tokens:
    """Layers [0, stop) with static-patch reuse, then the deferred ImgMe merge of ``merge_r``
    tokens per frame. ``t``: freshly embedded frames, ``chunk_frames`` consecutive frames per
    entry of ``streams`` (a stream may appear several times: its chunks, in order). Streams in
    ``chained`` (live) gate each chunk against the state the previous one left; the others
    (files) against their last full recompute."""
    k = chunk_frames
    rounds = _passes(streams, state, chained)
    if len(rounds) == 1 and all(len(ix) == 1 for _, ix in rounds[0]):  # live: a chunk a stream
        h, metric = _reuse_pass(model, t.h, rounds[0], k, state, stop, chained)
    else:
        h = torch.empty_like(t.h)
        metric = None
        for rnd in rounds:
            rows = torch.tensor([i * k + f for _, ix in rnd for i in ix for f in range(k)],
                                device=t.h.device)
            hr, keys = _reuse_pass(model, t.h[rows], rnd, k, state, stop, chained)
            h[rows] = hr.to(h.dtype)
            if metric is None:
                metric = keys.new_empty(h.shape[0], h.shape[1], keys.shape[-1])
            metric[rows] = keys
    return merge_tokens(Tokens(h, t.sizes, t.n_cls, t.frames, t.times), metric, merge_r)


def _passes(streams: Sequence[str], state: ReuseState,
            chained: AbstractSet[str]) -> List[List[tuple]]:
    """Splits the batch into sequential passes of ``(stream, [chunk indices])``. A chained
    (live) stream has one chunk a pass. Otherwise a pass gates all its chunks of a stream
    against the state at its start, up to the next refresh: a new stream or a due refresh is a
    pass of one chunk (every position recomputed), then up to ``refresh_chunks - 1`` chunks
    reuse it in one pass: a file's 64 chunks take about 64 * 2 / refresh_chunks passes."""
    refresh = state.settings.refresh_chunks
    per: dict = {}
    for i, s in enumerate(streams):
        per.setdefault(s, []).append(i)
    rounds: List[List[tuple]] = []
    for s, idx in per.items():
        age = state.records.age(s) if s in state else -1
        age = age if 0 <= age < refresh else None  # None: the next chunk recomputes everything
        j = r = 0
        while j < len(idx):
            g = 1 if (age is None or s in chained) else min(len(idx) - j, refresh - age)
            if r == len(rounds):
                rounds.append([])
            rounds[r].append((s, idx[j:j + g]))
            age = 1 if age is None else age + g
            age = None if age >= refresh else age
            j, r = j + g, r + 1
    return rounds


def _reuse_pass(model, h0: torch.Tensor, group: List[tuple], k: int, state: ReuseState,
                stop: int, chained: AbstractSet[str]):
    """One pass: h0 [F, N, C] holds the embedded frames of ``group`` (``(stream, chunks)`` in
    order, ``k`` frames a chunk), each stream gated against its state at the start. Returns the
    layer-``stop`` outputs [F, N, C] and the last layer's keys averaged over heads (the merge
    metric)."""
    order = [s for s, _ in group]
    n_chunks = torch.tensor([len(ix) for _, ix in group])
    sidx = torch.repeat_interleave(torch.arange(len(group)), n_chunks * k).to(h0.device)
    lastf = (torch.cumsum(n_chunks, 0) * k - 1).to(h0.device)
    S = len(order)
    Fn, N, C = h0.shape
    dev = h0.device
    thr, refresh = state.settings.threshold, state.settings.refresh_chunks
    layers = model.layers[:stop]
    H = layers[0].self_attn.num_heads
    d = C // H

    # Gate: which positions each frame recomputes (CLS always; everything for a new stream or
    # on a refresh), against the stream's state at the start of the batch.
    rec = state._records_for(len(layers), N, C, h0.dtype).gather(order, device=dev)
    have = (rec.age >= 0) & (rec.age < refresh)  # [S]
    ref = rec.ref.float()
    ref_f = ref.index_select(0, sidx)  # [F, N, C]
    rel = (h0.float() - ref_f).norm(dim=-1) / ref_f.norm(dim=-1).clamp_min(1e-6)
    # A live stream due a refresh recomputes every position of its chunk's last frame only:
    # that frame's keys, values and outputs become the stream's state, while its earlier frames
    # gate against the old state like any chunk's (a quarter of the work of refreshing all four
    # frames). Files, and streams without a state, recompute every frame in full.
    exists = rec.age >= 0
    live = torch.tensor([s in chained for s in order], device=dev)
    dyn = (rel > thr) | (~have & ~(exists & live))[sidx, None]
    dyn[lastf[~have & exists & live]] = True
    dyn[:, 0] = True

    fidx, pidx = dyn.nonzero(as_tuple=True)  # flat list of recomputed (frame, position)
    counts = dyn.sum(1)
    slot = torch.arange(fidx.numel(), device=dev) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts)  # position of each token within its frame

    # Attention pads each frame's recomputed queries to a common width. A frame that recomputes
    # everything (a new stream or a refresh: since stagger_offset, some camera in most live
    # batches) would pad every frame to all N positions, so frames are grouped by width
    # (_query_groups): K and V are laid out in that frame order (``fp``: a token's frame there),
    # each group one contiguous slice, one attention call per group.
    perm, inv, groups = _query_groups(counts, N)
    fp = inv.index_select(0, fidx)
    by_group = torch.argsort(fp, stable=True)
    spans, t0 = [], 0
    for a0, b0, w in groups:
        tg = by_group[t0:t0 + int(counts.index_select(0, perm[a0:b0]).sum())]
        spans.append((a0, b0, w, tg, fp.index_select(0, tg) - a0, slot.index_select(0, tg)))
        t0 += tg.numel()
    sidx_p = sidx.index_select(0, perm)

    # The recomputed tokens of all frames run through the linear layers as one [T, C] matrix.
    # T changes every batch; each new matrix shape costs oneDNN a new bf16 kernel (6x the
    # time of a cached call, and ~0.7 MB kept in its primitive cache: a soak grew 400 MB/h), so
    # it is padded to a few bucket sizes (padding rows are computed and never read).
    T = fidx.numel()
    Tp = bucket_rows(T)
    x = h0.new_zeros(Tp, C)
    x[:T] = h0[fidx, pidx]
    new_k, new_v = [], []
    K = None
    last_p = inv.index_select(0, lastf)
    for li, layer in enumerate(layers):
        a = layer.self_attn
        y = layer.layer_norm1(x)
        q, kk, vv = project_qkv(a, y)
        # [F, N, C] in group order: cached, then the fresh keys (index_select: 3-5x faster
        # than K[sidx])
        K = rec.k[:, li].to(kk.dtype).index_select(0, sidx_p)
        V = rec.v[:, li].to(vv.dtype).index_select(0, sidx_p)
        K[fp, pidx] = kk[:T]
        V[fp, pidx] = vv[:T]
        o_rows = q.new_zeros(Tp, C)
        for a0, b0, w, tg, lf, sl in spans:
            Q = q.new_zeros(b0 - a0, w, C)
            Q[lf, sl] = q.index_select(0, tg)
            o = F.scaled_dot_product_attention(
                Q.view(b0 - a0, w, H, d).transpose(1, 2),
                K[a0:b0].view(b0 - a0, N, H, d).transpose(1, 2),
                V[a0:b0].view(b0 - a0, N, H, d).transpose(1, 2), scale=a.scale)
            o_rows[tg] = o.transpose(1, 2).reshape(b0 - a0, w, C)[lf, sl]
        x = x + a.out_proj(o_rows)
        x = x + layer.mlp(layer.layer_norm2(x))
        new_k.append(K.index_select(0, last_p))  # what each stream's last frame saw
        new_v.append(V.index_select(0, last_p))
    outs = rec.out.to(x.dtype).index_select(0, sidx)
    outs[fidx, pidx] = x[:T]
    keys = K.view(Fn, N, H, d).mean(2).index_select(0, inv)  # back to the frames' order

    # New state: a chained (live) stream's is what its last frame saw (recomputed positions
    # take their new input as the reference). A file's cached values change only when all its
    # positions were recomputed (a new stream or a refresh: a pass of one chunk); passes that
    # reuse them only age them, so every chunk between two refreshes is gated against the same
    # reference however the chunks fall into batches: its vectors do not depend on timing (a
    # resumed or replayed file gives the same vectors as an uninterrupted run).
    age = torch.where(have, rec.age + n_chunks.to(dev), n_chunks.to(dev)).cpu()
    # A new live stream starts part-way into its refresh period (stagger_offset): cameras that
    # start together would otherwise refresh in the same batch, every refresh_chunks chunks.
    for j in (~exists & live).nonzero().flatten().tolist():
        age[j] += stagger_offset(order[j], refresh)
    reused = torch.zeros(S, dtype=torch.int64, device=dev).index_add_(
        0, sidx, (~dyn[:, 1:]).sum(1)).cpu()
    patches = n_chunks * k * (N - 1)
    update = (~have | live).cpu()
    if update.any():
        i = update.nonzero().flatten()
        idev = i.to(dev)
        lf = lastf[idev]
        new_ref = torch.where(dyn[lf][..., None], h0[lf].float(), ref[idev]).to(h0.dtype)
        kv_dtype = state.records.dtypes[1]
        state.records.put([order[j] for j in i.tolist()], new_ref,
                          torch.stack(new_k, 1)[idev].to(kv_dtype),
                          torch.stack(new_v, 1)[idev].to(kv_dtype), outs[lf].to(h0.dtype),
                          age[i], patches[i], reused[i])
    if not update.all():
        i = (~update).nonzero().flatten()
        state.records.advance([order[j] for j in i.tolist()], age[i], patches[i], reused[i])
    return outs, keys
