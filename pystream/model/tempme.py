"""TempMe over a Hugging Face CLIP vision tower: our own forward through the loaded layers.

The forward is a loop over layers; each layer is one of (see schedule.py):

    imgme   attention -> merge r tokens per frame (metric: keys) -> MLP
    clipme  join g adjacent clips -> cross-clip merge (metric: hidden states) -> attention
            -> intra-clip merge (metric: keys) -> MLP
    final   attention -> merge (metric: keys) -> MLP
    plain   the unmodified CLIP layer (merging off)

Tokens travel with their sizes (how many original patches they stand for, used for proportional
attention) and, when asked, their provenance (frame index span and time span). Matching runs in
``pystream.merge`` (the C++ core, or its PyTorch reference); when gradients are needed the
weighted average is recomputed in PyTorch from the index map, so training sees merging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .loader import CLIP_MEAN, CLIP_STD, DEFAULT_MODEL, load_clip
from .schedule import DEFAULT, TempMeSchedule, pct, schedule_from_config, vision_accounting


def _merge_ops():
    try:
        from pystream import merge as ops  # C++ core with reference fallback
    except ImportError:  # the core package is not built yet
        from pystream import merge_reference as ops
    return ops


@dataclass
class Tokens:
    """A batch of token sequences in flight. Leading ``n_cls`` tokens are CLS (never merged)."""

    h: torch.Tensor  # [S, N, C]
    sizes: torch.Tensor  # [S, N] float32
    n_cls: int
    frames: Optional[torch.Tensor] = None  # [S, N, 2] int64 frame-index span
    times: Optional[torch.Tensor] = None  # [S, N, 2] float64 seconds span

    @property
    def num_seq(self) -> int:
        return self.h.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.h.shape[1]


def join_clips(t: Tokens, g: int) -> Tokens:
    """Join each run of g adjacent sequences into one: all CLS tokens first, then the patch
    tokens of each clip in order."""
    if g == 1:
        return t
    S, N = t.h.shape[:2]
    if S % g:
        raise ValueError(f"cannot join {S} clips in groups of {g}")

    def join(x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(S // g, g, N, *x.shape[2:])
        cls = x[:, :, : t.n_cls].reshape(S // g, g * t.n_cls, *x.shape[3:])
        rest = x[:, :, t.n_cls :].reshape(S // g, g * (N - t.n_cls), *x.shape[3:])
        return torch.cat([cls, rest], dim=1)

    return Tokens(
        join(t.h),
        join(t.sizes),
        t.n_cls * g,
        None if t.frames is None else join(t.frames),
        None if t.times is None else join(t.times),
    )


def merge_tokens(t: Tokens, metric: torch.Tensor, r: int) -> Tokens:
    """Bipartite soft matching merge of r tokens per sequence (CLS protected)."""
    r = min(r, (t.num_tokens - t.n_cls) // 2)
    if r <= 0:
        return t
    ops = _merge_ops()
    with torch.no_grad():
        res = ops.bipartite_merge(t.h.detach(), t.sizes, metric.detach().contiguous(), r, t.n_cls)
    M = res.x.shape[1]
    h = res.x
    if torch.is_grad_enabled() and t.h.requires_grad:
        h = _weighted_merge(t.h, t.sizes, res.index_map, M)
    frames = times = None
    if t.frames is not None:
        frames = ops.merge_spans(t.frames, res.index_map, M)
    if t.times is not None:
        times = ops.merge_spans(t.times, res.index_map, M)
    return Tokens(h, res.sizes, t.n_cls, frames, times)


def _weighted_merge(h, sizes, index_map, M):
    """Differentiable size-weighted average under a fixed index map (same result as the core)."""
    S, N, C = h.shape
    idx = index_map.clamp_min(0)
    w = (sizes * (index_map >= 0)).to(h.dtype)
    num = h.new_zeros(S, M, C).scatter_add(1, idx[..., None].expand(S, N, C), h * w[..., None])
    den = h.new_zeros(S, M).scatter_add(1, idx, w)
    return num / den.clamp_min(1e-12)[..., None]


def project_qkv(attn, x: torch.Tensor):
    """(q, k, v) projections of ``x``. The reduced-precision copies of the vision tower
    (precision.py) carry the three as one fused ``qkv_proj``: one matrix multiply and one cast
    of ``x`` to bf16 instead of three each (3x faster on the project's CPU box)."""
    fused = getattr(attn, "qkv_proj", None)
    if fused is not None:
        return fused(x).chunk(3, dim=-1)
    return attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)


def attention(attn, x: torch.Tensor, sizes: torch.Tensor, proportional: bool):
    """CLIP self-attention with proportional attention (log size added to the logits).
    Returns (output, keys averaged over heads) - the keys are ToMe's merge metric."""
    S, N, C = x.shape
    H = attn.num_heads
    d = C // H
    q, k, v = (p.view(S, N, H, d).transpose(1, 2) for p in project_qkv(attn, x))
    mask = torch.log(sizes).to(q.dtype)[:, None, None, :] if proportional else None
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale)
    o = attn.out_proj(o.transpose(1, 2).reshape(S, N, C))
    return o, k.mean(dim=1)


def run_layer(layer, t: Tokens, cross_r: int, post_r: int, proportional: bool,
              return_keys: bool = False, metric: Optional[torch.Tensor] = None):
    """One pre-LN CLIP encoder layer with optional merges before and after attention.
    ``metric``: the cross-clip merge's matching metric (default: the hidden states ``t.h``;
    with temporal embeddings it is the hidden states before they were added, as in TempMe)."""
    if cross_r:
        t = merge_tokens(t, t.h if metric is None else metric, cross_r)
    attn_out, keys = attention(layer.self_attn, layer.layer_norm1(t.h), t.sizes, proportional)
    t = Tokens(t.h + attn_out, t.sizes, t.n_cls, t.frames, t.times)
    if post_r:
        t = merge_tokens(t, keys, post_r)
    h = t.h + layer.mlp(layer.layer_norm2(t.h))
    out = Tokens(h, t.sizes, t.n_cls, t.frames, t.times)
    return (out, keys) if return_keys else out


class ClipVideoModel(torch.nn.Module):
    """A CLIP model (vision + text) with a TempMe video forward."""

    def __init__(self, clip, tokenizer=None, pixel_stats=None, schedule=DEFAULT, model_id: str = ""):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.model_id = model_id
        # Content hash of the loaded weight files (loader.weights_fingerprint); from_pretrained
        # sets it, so the archive can tell two models of one name apart. None: unknown.
        self.fingerprint = None
        self.schedule = schedule_from_config(schedule)
        stats = pixel_stats or {}
        mean = stats.get("mean", CLIP_MEAN)
        std = stats.get("std", CLIP_STD)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(3, 1, 1), persistent=False)
        # TempMe's learned per-slot (temporal) embeddings, added in the ClipMe layers
        # (adapter.TemporalEmbeddings). None: the training-free forward, exactly.
        self.temporal = None
        # None: preprocess normalises pixels (fp32). A dtype: the patch embedding takes raw
        # 0-255 values of that dtype (precision.fold_pixel_normalisation, the bf16 copy).
        self.raw_pixels = None

    @classmethod
    def from_pretrained(cls, name_or_path=DEFAULT_MODEL, schedule=DEFAULT,
                        adapter=None) -> "ClipVideoModel":
        """``name_or_path``: a CLIP checkpoint (hub id, directory, 'shipped', 'shipped-base'),
        an adapter directory written by ``pystream finetune`` (its base is named inside), or
        a dict ``{"base": ..., "adapter": DIR}``. ``adapter``: an adapter directory to apply
        on top of the checkpoint (adapter.py); LoRA is merged into the weights, so inference
        costs exactly what the base model costs."""
        from .adapter import apply_adapter, resolve_model_ref
        from .loader import weights_dir, weights_fingerprint

        base, adapter_dir = resolve_model_ref(name_or_path, adapter)
        clip, tok, stats = load_clip(base)
        model = cls(clip, tok, stats, schedule,
                    model_id=str(name_or_path if not isinstance(name_or_path, dict) else
                                 f"{base}+{adapter_dir}"))
        if adapter_dir is not None:
            apply_adapter(model, adapter_dir)
        model.fingerprint = weights_fingerprint(weights_dir(base), adapter_dir)
        return model

    # ------------------------------------------------------------------ properties
    @property
    def vision(self):
        return self.clip.vision_model

    @property
    def layers(self):
        return self.clip.vision_model.encoder.layers

    @property
    def image_size(self) -> int:
        return self.clip.config.vision_config.image_size

    @property
    def dim(self) -> int:
        return self.clip.config.projection_dim

    def accounting(self, schedule=None, frames=None):
        return vision_accounting(self.clip.config.vision_config, self.dim,
                                 schedule_from_config(schedule or self.schedule), frames)

    # ------------------------------------------------------------------ pixels
    def preprocess(self, frames) -> torch.Tensor:
        """uint8 RGB frames [..., H, W, 3] (numpy or torch) -> normalised float [..., 3, H, W]
        (a reduced-precision copy with ``raw_pixels`` set: the raw values in that dtype; its
        patch embedding normalises). Frames must already be image_size x image_size (the
        decoder resizes in libav)."""
        x = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
        if x.dim() < 3 or x.shape[-1] != 3:
            raise ValueError(f"frames must be RGB arrays [..., H, W, 3], got shape {tuple(x.shape)}")
        s = self.image_size
        if tuple(x.shape[-3:-1]) != (s, s):
            raise ValueError(
                f"frames are {x.shape[-3]}x{x.shape[-2]} but the model expects {s}x{s}; "
                "decode with size=model.image_size"
            )
        if x.dtype != torch.uint8:
            raise ValueError(f"frames must be uint8 RGB, got {x.dtype}")
        if self.raw_pixels is not None:  # normalisation is folded into the patch embedding
            return x.movedim(-1, -3).to(self.pixel_mean.device, self.raw_pixels)
        x = x.movedim(-1, -3).to(self.pixel_mean.device, torch.float32)
        return x.div_(255.0).sub_(self.pixel_mean).div_(self.pixel_std)  # in place: one buffer

    def pixels_for_embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised float pixels -> what this model's patch embedding takes: themselves, or
        raw 0-255 values for a copy with the normalisation folded in (``raw_pixels``)."""
        if self.raw_pixels is None:
            return pixels
        return ((pixels.float() * self.pixel_std + self.pixel_mean) * 255.0).to(self.raw_pixels)

    def _check_pixels(self, pixels: torch.Tensor, finite: bool = False):
        s = self.image_size
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != (3, s, s):
            raise ValueError(f"pixels must be [F, 3, {s}, {s}], got {tuple(pixels.shape)}")
        if not finite and not bool(torch.isfinite(pixels).all()):
            raise ValueError("pixels contain NaN or inf")

    # ------------------------------------------------------------------ vision forward
    def embed(self, pixels: torch.Tensor, frame_index=None, frame_times=None,
              finite: bool = False) -> Tokens:
        """Patch embedding + pre-LN for F frames -> F sequences of 1 + P tokens. ``pixels``:
        from ``preprocess``, or normalised float pixels (fp32). ``finite``:
        the caller made ``pixels`` with ``preprocess`` from uint8 frames, so the NaN/inf scan
        (5% of a live batch on the CPU) is skipped."""
        self._check_pixels(pixels, finite)
        pixels = pixels.to(self.pixel_mean.device)
        if self.raw_pixels is None:
            pixels = pixels.to(self.pixel_mean.dtype)
        elif pixels.dtype != self.raw_pixels:  # normalised pixels handed to a folded copy
            pixels = self.pixels_for_embed(pixels)
        h = self.vision.pre_layrnorm(self.vision.embeddings(pixels))
        Fn, N = h.shape[:2]
        sizes = torch.ones(Fn, N, dtype=torch.float32, device=h.device)
        frames = times = None
        if frame_index is not None:
            fi = torch.as_tensor(frame_index, dtype=torch.int64, device=h.device)
            frames = fi.view(Fn, 1, 1).expand(Fn, N, 2).contiguous()
        if frame_times is not None:  # [F, 2] (start, end) seconds of each frame
            ft = torch.as_tensor(frame_times, dtype=torch.float64, device=h.device)
            times = ft.view(Fn, 1, 2).expand(Fn, N, 2).contiguous()
        return Tokens(h, sizes, 1, frames, times)

    def run_layers(self, t: Tokens, start: int, stop: int, schedule: TempMeSchedule,
                   last_group: Optional[int] = None, defer_imgme: bool = False) -> Tokens:
        """Layers [start, stop) under ``schedule``. ``last_group`` overrides the size of the
        last ClipMe join (streaming uses it for a short window at the end of a stream).
        ``defer_imgme``: the ImgMe layers keep every token and their whole reduction happens in
        one merge after the last of them (the schedule static-patch reuse needs, reuse.py)."""
        L = len(self.layers)
        if not schedule.enabled:
            for i in range(start, stop):
                t = run_layer(self.layers[i], t, 0, 0, proportional=False)
            return t
        c0 = schedule.clipme_start(L)
        prop = schedule.proportional_attention
        if self.temporal is not None:
            self.temporal.check_schedule(schedule)
        for i in range(start, stop):
            layer = self.layers[i]
            if i < c0 and defer_imgme:
                t, keys = run_layer(layer, t, 0, 0, prop, return_keys=True)
                if i == c0 - 1:
                    t = merge_tokens(t, keys, c0 * schedule.imgme_r)
            elif i < c0:
                t = run_layer(layer, t, 0, schedule.imgme_r, prop)
            elif i < c0 + len(schedule.clip_groups):
                j = i - c0
                g = schedule.clip_groups[j]
                last = j == len(schedule.clip_groups) - 1
                if last_group is not None and last:
                    g = last_group
                metric = None
                if self.temporal is not None:
                    # Added to every token of each clip before the join; the merge matches on
                    # the hidden states without them (TempMe: metric = x before the add).
                    metric = join_clips(t, g).h
                    t = Tokens(self.temporal.add(j, t.h, g if last else None), t.sizes,
                               t.n_cls, t.frames, t.times)
                t = join_clips(t, g)
                cross = pct(t.num_tokens, schedule.cross_pct)
                n_attn = t.num_tokens - min(cross, (t.num_tokens - t.n_cls) // 2)
                t = run_layer(layer, t, cross, pct(n_attn, schedule.intra_pct), prop,
                              metric=metric)
            else:
                t = run_layer(layer, t, 0, pct(t.num_tokens, schedule.final_pct), prop)
        return t

    def head(self, t: Tokens, frames_per_video: int) -> torch.Tensor:
        """Mean of the frames' CLS outputs after final norm and projection, L2-normalised."""
        cls = t.h[:, : t.n_cls]  # [S, n_cls, C]
        feats = self.clip.visual_projection(self.vision.post_layernorm(cls))
        feats = feats.reshape(-1, frames_per_video, feats.shape[-1])
        return F.normalize(feats.mean(dim=1), dim=-1)

    def encode_video(self, frames, schedule=None, defer_imgme: bool = False) -> torch.Tensor:
        """Offline video embeddings. ``frames``: uint8 [V, F, H, W, 3] or normalised pixels
        [V, F, 3, H, W]. With merging on, F must equal the schedule's frames per window."""
        schedule = schedule_from_config(schedule) if schedule is not None else self.schedule
        given = isinstance(frames, torch.Tensor) and frames.is_floating_point()
        pixels = frames if given else self.preprocess(frames)
        if pixels.dim() != 5:
            raise ValueError(f"expected a batch of videos [V, F, ...], got shape {tuple(pixels.shape)}")
        V, Fn = pixels.shape[:2]
        if schedule.enabled and Fn != schedule.frames_per_window:
            raise ValueError(
                f"TempMe needs {schedule.frames_per_window} frames per video "
                f"(clip_groups={schedule.clip_groups}), got {Fn}"
            )
        if Fn < 1:
            raise ValueError("a video needs at least one frame")
        t = self.embed(pixels.reshape(V * Fn, *pixels.shape[2:]), finite=not given)
        t = self.run_layers(t, 0, len(self.layers), schedule, defer_imgme=defer_imgme)
        return self.head(t, Fn)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Per-frame CLIP image features [F, D] (projected, not normalised): the baseline."""
        t = self.embed(pixels)
        t = self.run_layers(t, 0, len(self.layers), schedule_from_config("off"))
        return self.clip.visual_projection(self.vision.post_layernorm(t.h[:, 0]))

    # ------------------------------------------------------------------ text
    @torch.no_grad()
    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text embeddings [n, D], for queries (no gradients; training calls
        text_features directly)."""
        if self.tokenizer is None:
            raise RuntimeError(f"model {self.model_id!r} has no tokenizer files; text search needs one")
        if isinstance(texts, str):
            texts = [texts]
        if not all(isinstance(s, str) and s.strip() for s in texts):
            raise ValueError("text queries must be non-empty strings")
        max_len = self.clip.config.text_config.max_position_embeddings
        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[i : i + batch_size]), padding=True, truncation=True,
                                 max_length=max_len, return_tensors="pt")
            enc = {k: v.to(self.pixel_mean.device) for k, v in enc.items()
                   if k in ("input_ids", "attention_mask")}
            out.append(F.normalize(text_features(self.clip, **enc), dim=-1))
        return torch.cat(out)


def text_features(clip, input_ids, attention_mask=None) -> torch.Tensor:
    """transformers' get_text_features as a tensor (v5 returns a model output object)."""
    out = clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def image_features(clip, pixel_values) -> torch.Tensor:
    out = clip.get_image_features(pixel_values=pixel_values)
    return out if isinstance(out, torch.Tensor) else out.pooler_output
