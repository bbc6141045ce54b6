"""Reduced precision for the dense layers: ``precision: auto | fp32 | bf16 | int8``.

bf16 runs under ``torch.autocast``: the matrix multiplies (linear layers, attention) take bf16
inputs with fp32 accumulation (oneDNN on CPUs with AVX512_BF16 or AMX, tensor cores on CUDA),
while layer norms, softmax and the residual stream stay fp32. So the carried tokens stay fp32
and an embedding moves by about 1e-5 in cosine (benchmarks/cameras.py prints the fidelity).

The reduced-precision copy of the vision tower is also reshaped for speed, computing the same
function (up to bf16 rounding of the rescaled weights): q, k and v are one fused projection
(one cast, one matrix multiply), CLIP's quick GELU is folded into the MLP's weights (one
in-place SiLU), and the pixel normalisation is folded into the patch embedding (the copy takes
raw 0-255 values in bf16). Measured on the project's box, encoder only, 16 cameras
(benchmarks/cameras.py): bf16 TempMe went from 3.8-4.2x per-frame fp32 CLIP to 5.0x after the
GELU fold and 5.7x after all three, the default (bf16 + reuse) from 3.9-5.0x to 5.5x and 6.7x,
with the same window cosines (B/32 0.9998 / 0.9997; shipped model 0.9974 / 0.9865).

``auto`` picks bf16 where the hardware runs it natively (measured on the project's 2-core
AVX512_BF16 box: ViT-B/32 per-frame 2-5x faster than fp32) and fp32 elsewhere (emulated
bf16 on an older CPU is slower than fp32).

``int8`` (CPU only, opt-in) swaps the vision tower's linear layers for PyTorch's dynamically
quantised ones (int8 weights, activations quantised per call, fbgemm with VNNI). Measured on the
project's box it is slower than bf16 (ViT-B/32 TempMe, 36 frames: fp32 1.00x, int8 1.69x, bf16
2.55x; cosine to fp32 0.9996 vs 0.9998), so ``auto`` never picks it; it is there for CPUs with
VNNI but no bf16 (``benchmarks/cameras.py --configs ...,int8`` measures it). PyTorch 2.13 marks
these quantised modules deprecated (torchao is their successor), another reason not to lean on it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings

import torch

PRECISIONS = ("auto", "fp32", "bf16", "int8")


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve(precision: str, device) -> str:
    """The precision ``precision`` means on ``device`` ('fp32', 'bf16' or 'int8')."""
    p = str(precision).lower()
    if p not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dev = torch.device(device)
    if p == "int8" and dev.type != "cpu":
        raise ValueError(f"precision int8 runs on the CPU only (dynamic quantisation); the model "
                         f"is on {dev}: use bf16 or auto there")
    if p != "auto":
        return p
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if dev.type == "cpu" and cpu_has_native_bf16() else "fp32"


def autocast(precision: str, device):
    """A context manager that runs the enclosed forward at ``precision`` (already resolved)."""
    if precision in ("fp32", "int8"):  # int8 linears take fp32 activations
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def full_precision(device):
    """Turns autocast off inside (the projection head: embeddings are stored in fp32)."""
    return torch.autocast(torch.device(device).type, enabled=False)


def bucket_rows(n: int, minimum: int = 16) -> int:
    """``n`` rounded up to one of 8 sizes per power of two (at most 12.5% more, at least
    ``minimum``): the row counts the bf16 kernels see stay a small fixed set."""
    if n <= minimum:
        return minimum
    step = max(minimum, 1 << max(0, (n - 1).bit_length() - 4))
    return -(-n // step) * step


ROW_TILE = 2048  # rows a bucketed matrix multiply takes at most; larger inputs run in tiles


class BucketedLinear(torch.nn.Linear):
    """A linear layer whose matrix multiplies see a small fixed set of row counts: the input's
    rows run in tiles of ROW_TILE, and the last tile is zero-padded to ``bucket_rows`` (the
    padding rows are computed and dropped; every row's result is its own).

    Why: oneDNN builds a bf16 kernel for every new matrix shape and keeps it in two caches
    (ideep's and its primitive cache, 1024 entries each): 2.4 MB of heap for a new row count
    through the shipped model's four linears (benchmarks/kernel_shapes.py). A TempMe layer
    takes [segments, tokens, C] and the segment count changes from batch to batch, so a run
    keeps meeting new shapes: a soak saw 52 row counts per linear (127 MB), most in its first
    12 minutes, with no bound on how many a long run meets. Bucketed, a weight meets at most
    ``len(row_buckets())`` (40) shapes, whatever the run. Tiles cost no more than one big call
    in a quick check on the project's box (bf16, 2 threads, a strided input): 8200 rows through
    768x3072 took 0.88x the time of one call, through 192x768 0.54x."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.numel() // x.shape[-1] if x.shape[-1] else 0
        if n <= ROW_TILE:  # the usual case, in as few tensor ops as can be (they show at 2 cores)
            pad = bucket_rows(n) - n if n else 0
            if not pad:
                return super().forward(x)
            y = super().forward(torch.nn.functional.pad(x.reshape(n, x.shape[-1]), (0, 0, 0, pad)))
            return y[:n].view(*x.shape[:-1], self.out_features)
        rows = x.reshape(n, x.shape[-1])
        out = torch.cat([self(rows[a:a + ROW_TILE]) for a in range(0, n, ROW_TILE)])
        return out.view(*x.shape[:-1], self.out_features)


def row_buckets() -> list:
    """Every row count a BucketedLinear's matrix multiplies can see."""
    return sorted({bucket_rows(n) for n in range(1, ROW_TILE + 1)})


def with_bf16_linears(model):
    """A ClipVideoModel sharing everything with ``model`` except the vision tower's linear
    layers, whose weights are bf16 copies. Under autocast a linear would otherwise cast its fp32
    weight to bf16 on every call (measured: 15% of a bf16 forward). Layer norms, embeddings and
    the text tower stay as they are (and shared), so ``model`` itself is untouched."""
    import torch.nn as nn

    def convert(child: nn.Linear) -> nn.Module:
        # On the CPU the rows are bucketed (BucketedLinear); a GPU's GEMMs keep no per-shape state.
        cls = BucketedLinear if child.weight.device.type == "cpu" else nn.Linear
        lin = cls(child.in_features, child.out_features, bias=child.bias is not None,
                  device=child.weight.device, dtype=torch.bfloat16)
        with torch.no_grad():
            lin.weight.copy_(child.weight)
            if child.bias is not None:
                lin.bias.copy_(child.bias)
        return lin.requires_grad_(False)

    out = _with_vision_linears(model, convert)
    fold_pixel_normalisation(out, torch.bfloat16)
    return out


def with_int8_linears(model):
    """As ``with_bf16_linears``, with dynamically quantised int8 linears (CPU)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    def convert(child):
        child.qconfig = torch.ao.quantization.default_dynamic_qconfig
        with warnings.catch_warnings():  # torch 2.13 marks quantised tensors deprecated
            warnings.simplefilter("ignore", UserWarning)
            return DynamicLinear.from_float(child)

    return _with_vision_linears(model, convert)


class FoldedQuickGELU(torch.nn.Module):
    """CLIP's quick GELU, ``x * sigmoid(1.702 x)``, as ``silu(z) / 1.702`` with ``z = 1.702 x``:
    the two scalings are folded into fc1's and fc2's weights (``fold_quick_gelu``), so the
    activation is one SiLU kernel, in place, instead of two multiplies and a sigmoid, each a
    pass over the [tokens, 3072] activations. Measured on the project's box (bf16 ViT-B/32 MLP,
    1792 rows): 30 ms -> 11 ms, the activation having cost more than both matrix multiplies."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(z, inplace=not torch.is_grad_enabled())


def fold_quick_gelu(mlp):
    """(fc1, fc2, activation) of a transformers CLIPMLP with its quick GELU folded (see
    FoldedQuickGELU): new fp32 linears, ``mlp`` untouched. None for another activation."""
    from transformers.activations import QuickGELUActivation

    if not isinstance(getattr(mlp, "activation_fn", None), QuickGELUActivation):
        return None
    fc1, fc2 = copy.deepcopy(mlp.fc1), copy.deepcopy(mlp.fc2)
    with torch.no_grad():
        fc1.weight.mul_(1.702)
        fc1.bias.mul_(1.702)
        fc2.weight.div_(1.702)
    return fc1, fc2, FoldedQuickGELU()


def fuse_linears(linears):
    """One fp32 nn.Linear computing ``torch.cat([l(x) for l in linears], -1)``."""
    out = torch.nn.Linear(linears[0].in_features, sum(l.out_features for l in linears),
                          device=linears[0].weight.device)
    with torch.no_grad():
        out.weight.copy_(torch.cat([l.weight for l in linears]))
        out.bias.copy_(torch.cat([l.bias for l in linears]))
    return out


def fold_pixel_normalisation(model, dtype) -> None:
    """Make the vision-tower copy ``model`` take raw 0-255 pixel values (``preprocess`` then
    only converts uint8 to ``dtype``, which holds 0..255 exactly): ``conv(W, (x/255 - m)/s)`` is
    ``conv(W/(255 s), x) - conv(W, m/s)``, and the second term is one constant per channel,
    added to the patch positions' position embeddings in fp32. This drops three passes over
    the batch's pixels (divide, subtract, divide) and the conv input's cast to bf16: measured
    on the project's box, a live-shaped batch (B/32, 32 cameras x 4 frames, default config)
    takes 10% less time (0.517 s vs 0.569 s a batch, median of 10, interleaved).
    Same function up to the bf16 rounding of the rescaled weights. ``model`` is a shallow copy
    (``_with_vision_linears``); the original keeps normalised pixels."""
    import torch.nn as nn

    vision = model.clip.vision_model
    emb = copy.copy(vision.embeddings)
    emb._modules = dict(emb._modules)
    conv = emb.patch_embedding
    mean = model.pixel_mean.double().view(1, -1, 1, 1)
    std = model.pixel_std.double().view(1, -1, 1, 1)
    w = conv.weight.double()
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    bias=False, device=conv.weight.device, dtype=dtype)
    pos = copy.deepcopy(emb.position_embedding)
    with torch.no_grad():
        new.weight.copy_(w / (255.0 * std))
        shift = -(w * (mean / std)).sum(dim=(1, 2, 3))
        if conv.bias is not None:
            shift = shift + conv.bias.double()
        pos.weight[1:] += shift.to(pos.weight)  # position 0 is the class token's
    emb._modules.update(patch_embedding=new.requires_grad_(False),
                        position_embedding=pos.requires_grad_(False))
    vision._modules["embeddings"] = emb
    model.raw_pixels = dtype


def _with_vision_linears(model, convert):
    """A shallow copy of ``model`` whose vision encoder's nn.Linear layers are ``convert(l)``,
    whose MLPs' quick GELU is folded into them (FoldedQuickGELU), and whose attention layers
    have q, k and v fused into one ``qkv_proj`` (tempme.project_qkv)."""
    import torch.nn as nn

    vision = copy.copy(model.clip.vision_model)
    vision._modules = dict(vision._modules)
    enc = copy.copy(vision.encoder)
    enc._modules = dict(enc._modules)
    layers = nn.ModuleList()
    for layer in vision.encoder.layers:
        new = copy.copy(layer)
        new._modules = dict(layer._modules)
        for parent_name in ("self_attn", "mlp"):
            parent = copy.copy(layer._modules[parent_name])
            parent._modules = dict(parent._modules)
            folded = fold_quick_gelu(parent) if parent_name == "mlp" else None
            if folded is not None:
                parent._modules.update(fc1=folded[0], fc2=folded[1], activation_fn=folded[2])
            if parent_name == "self_attn":  # tempme.project_qkv uses it instead of the three
                parent._modules["qkv_proj"] = fuse_linears(
                    [parent._modules.pop(n) for n in ("q_proj", "k_proj", "v_proj")])
            for name, child in parent._modules.items():
                if isinstance(child, nn.Linear):
                    parent._modules[name] = convert(child)
            new._modules[parent_name] = parent
        layers.append(new)
    enc._modules["layers"] = layers
    vision._modules["encoder"] = enc
    clip = copy.copy(model.clip)
    clip._modules = dict(clip._modules)
    clip._modules["vision_model"] = vision
    out = copy.copy(model)
    out._modules = dict(model._modules)
    out._modules["clip"] = clip
    return out
