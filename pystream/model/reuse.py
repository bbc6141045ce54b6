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

Bounded drift: a stream's positions are all recomputed every ``refresh_chunks`` chunks, and a
token is compared with the input it was last computed from (not the previous frame), so slow
drift adds up until it crosses the threshold. State per stream (one position set): reference
inputs, keys and values of every reused layer, and the last layer's outputs; about 1.5 MiB for
ViT-B/32 in bf16 (2.7 MiB in fp32), constant over time.

Within a chunk every frame is gated against the state at the start of the chunk (so the
chunk's frames run in one batch); the state after the chunk is the one its last frame saw.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F

from .tempme import Tokens, merge_tokens


@dataclass
class ReuseSettings:
    threshold: float = 0.0  # relative L2 change of a patch's input embedding; 0 = reuse off
    refresh_chunks: int = 8  # recompute every position of a stream this often

    @property
    def enabled(self) -> bool:
        return self.threshold > 0


class ReuseState:
    """Per-stream reuse caches plus counters (patches seen / reused) for status."""

    def __init__(self, settings: ReuseSettings):
        self.settings = settings
        self.streams: Dict[str, Dict[str, torch.Tensor]] = {}
        self.counts: Dict[str, List[int]] = {}  # stream -> [patches, reused]

    def __contains__(self, stream: str) -> bool:
        return stream in self.streams

    def drop(self, stream: str):
        self.streams.pop(stream, None)
        self.counts.pop(stream, None)

    def reused_share(self, stream: str) -> float:
        n, r = self.counts.get(stream, (0, 0))
        return r / n if n else 0.0

    def nbytes(self, stream: str) -> int:
        return sum(t.numel() * t.element_size() for t in self.streams.get(stream, {}).values()
                   if isinstance(t, torch.Tensor))

    # ------------------------------------------------------------------ checkpoints
    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save({"streams": {k: {n: (t.cpu() if isinstance(t, torch.Tensor) else t)
                                    for n, t in v.items()} for k, v in self.streams.items()},
                    "counts": self.counts}, buf)
        return buf.getvalue()

    def load_bytes(self, blob: bytes, device):
        try:
            d = torch.load(io.BytesIO(blob), map_location=device, weights_only=True)
            streams, counts = d["streams"], d["counts"]
        except Exception as e:  # noqa: BLE001 - any decoding failure means a corrupt blob
            raise ValueError(f"corrupt reuse state ({type(e).__name__}: {e})") from e
        self.streams, self.counts = streams, {k: list(v) for k, v in counts.items()}


def run_reused_layers(model, t: Tokens, streams: Sequence[str], chunk_frames: int,
                      state: ReuseState, stop: int, merge_r: int) -> Tokens:
    """Layers [0, stop) with static-patch reuse, then the deferred ImgMe merge of ``merge_r``
    tokens per frame. ``t``: freshly embedded frames, ``chunk_frames`` consecutive frames per
    entry of ``streams`` (one stream may appear several times: its chunks run in order)."""
    rounds: List[List[int]] = []
    seen: Dict[str, int] = {}
    for i, s in enumerate(streams):
        j = seen.get(s, 0)
        seen[s] = j + 1
        if j == len(rounds):
            rounds.append([])
        rounds[j].append(i)
    k = chunk_frames
    N, C = t.h.shape[1], t.h.shape[2]
    out = torch.empty(len(streams) * k, N, C, dtype=t.h.dtype, device=t.h.device)
    metric = None
    for rnd in rounds:
        rows = torch.tensor([i * k + f for i in rnd for f in range(k)], device=t.h.device)
        h, keys = _reuse_round(model, t.h[rows], [streams[i] for i in rnd], k, state, stop)
        out[rows] = h.to(out.dtype)
        if metric is None:
            metric = torch.empty(out.shape[0], N, keys.shape[-1], dtype=keys.dtype,
                                 device=keys.device)
        metric[rows] = keys
    t = Tokens(out, t.sizes, t.n_cls, t.frames, t.times)
    return merge_tokens(t, metric, merge_r)


def _reuse_round(model, h0: torch.Tensor, streams: List[str], k: int, state: ReuseState,
                 stop: int):
    """One chunk per stream: h0 [S*k, N, C] embedded inputs. Returns the layer-``stop``
    outputs [S*k, N, C] and the last layer's keys averaged over heads (the merge metric)."""
    S = len(streams)
    Fn, N, C = h0.shape
    dev = h0.device
    thr, refresh = state.settings.threshold, state.settings.refresh_chunks
    layers = model.layers[:stop]
    attn0 = layers[0].self_attn
    H = attn0.num_heads
    d = C // H

    # Gate: which positions each frame recomputes (CLS always; everything for a new stream or
    # on a refresh). The streams' caches are stacked once per round: [S, ...].
    have = torch.tensor([s in state.streams and state.streams[s]["age"] < refresh
                         for s in streams], device=dev)
    like = next((state.streams[s] for s in streams if s in state.streams), None)
    cached = [state.streams[s] if bool(hv) else _empty_cache(len(layers), N, C, h0.dtype, dev, like)
              for s, hv in zip(streams, have.tolist())]
    ref = torch.stack([c["ref"] for c in cached]).float()  # [S, N, C]
    Kc = torch.stack([c["k"] for c in cached])  # [S, L, N, C]
    Vc = torch.stack([c["v"] for c in cached])
    Oc = torch.stack([c["out"] for c in cached])  # [S, N, C]
    x0 = h0.float().view(S, k, N, C)
    rel = (x0 - ref[:, None]).norm(dim=-1) / ref.norm(dim=-1).clamp_min(1e-6)[:, None]
    dyn = (rel > thr) | ~have.view(S, 1, 1)
    dyn[..., 0] = True
    dyn = dyn.view(Fn, N)

    fidx, pidx = dyn.nonzero(as_tuple=True)  # flat list of recomputed (frame, position)
    counts = dyn.sum(1)
    D = int(counts.max())
    slot = torch.arange(fidx.numel(), device=dev) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts)  # position of each token within its frame

    x = h0[fidx, pidx]  # [T, C]: the only tokens that go through the linear layers
    last_k = last_v = None
    new_k, new_v = [], []
    for li, layer in enumerate(layers):
        a = layer.self_attn
        y = layer.layer_norm1(x)
        q, kk, vv = a.q_proj(y), a.k_proj(y), a.v_proj(y)
        K = Kc[:, li].to(kk.dtype).repeat_interleave(k, 0)  # [F, N, C], then the fresh keys
        V = Vc[:, li].to(vv.dtype).repeat_interleave(k, 0)
        K[fidx, pidx] = kk
        V[fidx, pidx] = vv
        Q = q.new_zeros(Fn, D, C)
        Q[fidx, slot] = q
        o = F.scaled_dot_product_attention(
            Q.view(Fn, D, H, d).transpose(1, 2), K.view(Fn, N, H, d).transpose(1, 2),
            V.view(Fn, N, H, d).transpose(1, 2), scale=a.scale)
        o = o.transpose(1, 2).reshape(Fn, D, C)[fidx, slot]
        x = x + a.out_proj(o)
        x = x + layer.mlp(layer.layer_norm2(x))
        last = K.view(S, k, N, C)[:, -1], V.view(S, k, N, C)[:, -1]  # what each last frame saw
        new_k.append(last[0])
        new_v.append(last[1])
        last_k = K
    outs = Oc.to(x.dtype).repeat_interleave(k, 0)
    outs[fidx, pidx] = x
    keys = last_k.view(Fn, N, H, d).mean(2)

    # The state after the chunk is what its last frame saw.
    nk, nv = torch.stack(new_k, 1), torch.stack(new_v, 1)  # [S, L, N, C]
    lastf = torch.arange(S, device=dev) * k + (k - 1)
    m = dyn[lastf]  # [S, N]
    new_ref = torch.where(m[..., None], h0[lastf].float(), ref).to(h0.dtype)
    new_out = outs[lastf]
    block = dyn.view(S, k, N)[..., 1:]
    reused = (~block).sum((1, 2)).tolist()
    for i, s in enumerate(streams):
        prev = state.streams.get(s)
        state.streams[s] = {
            "ref": new_ref[i].clone(), "k": nk[i].clone(), "v": nv[i].clone(),
            "out": new_out[i].clone(),
            "age": (prev["age"] + 1) if (prev is not None and bool(have[i])) else 1,
        }
        n = state.counts.setdefault(s, [0, 0])
        n[0] += k * (N - 1)
        n[1] += int(reused[i])
    return outs, keys


def _empty_cache(L, N, C, dtype, dev, like):
    kd = like["k"].dtype if like is not None else dtype
    z = torch.zeros(L, N, C, dtype=kd, device=dev)
    return {"ref": torch.zeros(N, C, dtype=dtype, device=dev), "k": z, "v": z,
            "out": torch.zeros(N, C, dtype=dtype, device=dev), "age": 0}
