"""TempMe's merging schedule, and token / multiply-add accounting for any CLIP vision tower.

TempMe on ViT-B (12 layers, 12 frames), as the official code does it:

- ImgMe, layers 1-8: each frame alone, ToMe merge of r=2 tokens after attention (50 -> 34).
- ClipMe, layers 9, 10, 11: adjacent clips are joined 2, 2, then 3 at a time (12 -> 6 -> 3 -> 1
  clip). Before attention a cross-clip merge of 30% of the joined tokens (metric: hidden
  states), after attention an intra-clip merge of 10% (metric: keys averaged over heads).
- Layer 12: one more 10% merge after attention.

Percentages apply to the whole sequence, CLS tokens included, rounded down: that reproduces the
paper's 600 -> 97 output tokens for ViT-B/32 (see tests/test_schedule.py). CLS tokens are never
merged. For a model with L layers the ClipMe layers are the len(groups) layers before the last
one, and ImgMe runs in all layers before them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import List, Tuple


@dataclass(frozen=True)
class TempMeSchedule:
    enabled: bool = True
    imgme_r: int = 2  # tokens merged per frame per ImgMe layer
    clip_groups: Tuple[int, ...] = (2, 2, 3)  # clips joined at each ClipMe layer
    cross_pct: int = 30  # cross-clip merge before attention, % of joined tokens
    intra_pct: int = 10  # intra-clip merge after attention, % of tokens
    final_pct: int = 10  # merge after attention in the layers after ClipMe
    proportional_attention: bool = True

    @property
    def frames_per_window(self) -> int:
        return math.prod(self.clip_groups)

    @property
    def frames_per_chunk(self) -> int:
        """Frames that never meet frames outside their chunk before the last ClipMe layer."""
        return math.prod(self.clip_groups[:-1])

    @property
    def chunks_per_window(self) -> int:
        return self.clip_groups[-1]

    def clipme_start(self, num_layers: int) -> int:
        """Index (0-based) of the first ClipMe layer for a tower of ``num_layers`` layers."""
        start = num_layers - 1 - len(self.clip_groups)
        if start < 0:
            raise ValueError(
                f"a {num_layers}-layer model cannot hold {len(self.clip_groups)} ClipMe layers "
                "plus a final layer; use fewer clip_groups"
            )
        return start

    def validate(self) -> "TempMeSchedule":
        if not self.clip_groups or any(g < 1 for g in self.clip_groups):
            raise ValueError(f"clip_groups must be positive integers, got {self.clip_groups}")
        for name in ("cross_pct", "intra_pct", "final_pct"):
            v = getattr(self, name)
            if not 0 <= v < 100:
                raise ValueError(f"{name} must lie in [0, 100), got {v}")
        if self.imgme_r < 0:
            raise ValueError(f"imgme_r must be >= 0, got {self.imgme_r}")
        return self


DEFAULT = TempMeSchedule()
# More merging, for throughput: quality is measured in benchmarks/quality.py.
FAST = TempMeSchedule(imgme_r=4, cross_pct=50, intra_pct=15, final_pct=15)
OFF = TempMeSchedule(enabled=False)
PRESETS = {"default": DEFAULT, "fast": FAST, "off": OFF}


def schedule_from_config(cfg) -> TempMeSchedule:
    """Build a schedule from a preset name, a dict (preset + overrides) or a schedule."""
    if isinstance(cfg, TempMeSchedule):
        return cfg.validate()
    if cfg is None:
        return DEFAULT
    if isinstance(cfg, str):
        if cfg not in PRESETS:
            raise ValueError(f"unknown merge preset {cfg!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[cfg]
    cfg = dict(cfg)
    base = schedule_from_config(cfg.pop("preset", "default"))
    if "clip_groups" in cfg:
        cfg["clip_groups"] = tuple(cfg["clip_groups"])
    unknown = set(cfg) - set(TempMeSchedule.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown merge setting(s): {sorted(unknown)}")
    return replace(base, **cfg).validate()


def pct(n: int, percent: int) -> int:
    """Tokens merged for a percentage of n, rounded down (integer arithmetic, no float error)."""
    return n * percent // 100


# ----------------------------------------------------------------------------- accounting


@dataclass
class LayerCost:
    layer: int
    stage: str  # "imgme" | "clipme" | "final" | "plain"
    sequences: int  # sequences (frames or joined clips) in this layer, per window
    tokens_in: int  # per sequence
    tokens_attn: int  # per sequence, after the cross-clip merge
    tokens_out: int  # per sequence, after the post-attention merge
    macs: int  # multiply-adds, all sequences of one window


@dataclass
class Accounting:
    layers: List[LayerCost] = field(default_factory=list)
    embed_macs: int = 0
    head_macs: int = 0

    @property
    def total_macs(self) -> int:
        return self.embed_macs + self.head_macs + sum(l.macs for l in self.layers)

    @property
    def output_tokens(self) -> int:
        last = self.layers[-1]
        return last.sequences * last.tokens_out


def _layer_macs(n_attn: int, n_mlp: int, width: int, inter: int) -> int:
    qkv_out = 4 * n_attn * width * width  # q, k, v and output projections
    attn = 2 * n_attn * n_attn * width  # scores and weighted values
    mlp = 2 * n_mlp * width * inter
    return qkv_out + attn + mlp


def _merge_macs(n: int, protected: int, dim: int) -> int:
    m = n - protected
    return ((m + 1) // 2) * (m // 2) * dim  # A x B similarity


def token_macs(
    num_layers: int,
    width: int,
    intermediate: int,
    patches: int,
    patch_dim: int,
    proj_dim: int,
    frames: int,
    schedule: TempMeSchedule,
    head_dim: int = 64,
) -> Accounting:
    """Tokens and multiply-adds per layer for one window of ``frames`` frames.

    Counts the matrix multiplies of every layer (q/k/v/out projections, attention scores and
    weighted sum, MLP), the patch embedding, the final projection of the CLS tokens and the
    similarity products of each merge. LayerNorm, softmax and GELU are left out (they are a
    few percent of the total and the same kind of work in both paths).
    """
    acc = Accounting()
    acc.embed_macs = frames * patches * patch_dim * width
    acc.head_macs = frames * width * proj_dim
    n = patches + 1  # tokens per frame, CLS included
    seqs, protected = frames, 1
    if not schedule.enabled:
        for i in range(num_layers):
            acc.layers.append(LayerCost(i, "plain", seqs, n, n, n,
                                        seqs * _layer_macs(n, n, width, intermediate)))
        return acc
    start = schedule.clipme_start(num_layers)
    if frames % schedule.frames_per_window:
        raise ValueError(f"{frames} frames do not fill windows of {schedule.frames_per_window}")
    groups = iter(schedule.clip_groups)
    for i in range(num_layers):
        n_in = n
        merge = 0
        if i < start:
            stage = "imgme"
            n_attn = n
            r = min(schedule.imgme_r, (n - protected) // 2)
            merge += _merge_macs(n, protected, head_dim)
            n = n - r
        elif i < start + len(schedule.clip_groups):
            stage = "clipme"
            g = next(groups)
            seqs, n, protected = seqs // g, n * g, protected * g
            n_in = n
            merge += _merge_macs(n, protected, width)
            n_attn = n - min(pct(n, schedule.cross_pct), (n - protected) // 2)
            merge += _merge_macs(n_attn, protected, head_dim)
            n = n_attn - min(pct(n_attn, schedule.intra_pct), (n_attn - protected) // 2)
        else:
            stage = "final"
            n_attn = n
            merge += _merge_macs(n, protected, head_dim)
            n = n - min(pct(n, schedule.final_pct), (n - protected) // 2)
        macs = seqs * (_layer_macs(n_attn, n, width, intermediate) + merge)
        acc.layers.append(LayerCost(i, stage, seqs, n_in, n_attn, n, macs))
    return acc


def vision_accounting(vision_config, proj_dim: int, schedule: TempMeSchedule,
                      frames: int | None = None) -> Accounting:
    """token_macs for a transformers CLIPVisionConfig."""
    c = vision_config
    patches = (c.image_size // c.patch_size) ** 2
    return token_macs(
        num_layers=c.num_hidden_layers,
        width=c.hidden_size,
        intermediate=c.intermediate_size,
        patches=patches,
        patch_dim=3 * c.patch_size * c.patch_size,
        proj_dim=proj_dim,
        frames=frames or schedule.frames_per_window,
        schedule=schedule,
        head_dim=c.hidden_size // c.num_attention_heads,
    )


def streaming_window_macs(acc: Accounting, schedule: TempMeSchedule, num_layers: int) -> int:
    """Multiply-adds per emitted window when streaming with a hop of one chunk: the new chunk
    alone runs the chunk-local layers (the carried chunks were paid for earlier), then the
    whole window runs the remaining layers."""
    if not schedule.enabled:
        # Per-frame CLIP with cached frame features: each window pays for its new chunk.
        return acc.total_macs // 3
    chunk_stop = schedule.clipme_start(num_layers) + len(schedule.clip_groups) - 1
    share = schedule.chunks_per_window
    chunk = sum(l.macs for l in acc.layers[:chunk_stop]) + acc.embed_macs
    window = sum(l.macs for l in acc.layers[chunk_stop:]) + acc.head_macs
    return chunk // share + window
