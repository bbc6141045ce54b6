"""TempMe's trained parts: LoRA on q/k/v of both towers and per-slot (temporal) embeddings.

TempMe (LunarShen/TempMe, ``module_clip.py`` / ``module_tome_patch.py``) gives every ClipMe layer
a zero-initialised parameter ``[clips entering the layer, width]``; it is added to every token
(CLS included) of each clip just before the clips are joined and cross-clip merged, and the
merge matches on the hidden states *before* the add. LoRA (``q, k, v`` deltas, B = 0 at start)
sits in every attention layer. Both start at zero, so an untrained adapter is the training-free
forward exactly (tests/test_adapter.py checks with ``torch.equal``).

One deliberate difference, for streaming: TempMe's first ClipMe layers index their slots by the
frame's position in the 12-frame window (12 and 6 slots for 2-2-3). Those layers run on each
4-frame chunk once, before the chunk knows where it will sit in later windows, so here the
chunk-local ClipMe layers index by position *within the chunk* (4 and 2 slots) and the last
ClipMe layer, which runs per window, by the chunk's position in the window (3 slots). That is
TempMe's parameterisation with the slot embeddings tied across chunks, and it keeps streaming
equal to offline (tests/test_streaming.py).

On disk an adapter is a directory (``pystream finetune --out DIR`` writes it):

    adapter_config.json         PEFT LoraConfig; base_model_name_or_path = the base checkpoint
                                (hub id, 'shipped-base', or a path, relative to this directory
                                when it is one)
    adapter_model.safetensors   PEFT's LoRA tensors (``base_model.model.<module>.lora_A.weight``
                                ...), loadable with ``peft.PeftModel.from_pretrained(CLIPModel)``
    temporal.safetensors        the temporal embeddings, ``clipme.<j>`` = [slots, width]
    pystream_adapter.json       format version, base, clip_groups the slots were laid out for

Loading for inference (``apply_adapter``) merges ``W += scaling * B @ A`` into the q/k/v
weights by hand: no ``peft`` import, the forward and its cost are the base model's, and
precision.py / reuse.py see plain linears. Training (pystream/finetune.py) uses ``peft``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional, Tuple

import torch

ADAPTER_FORMAT = 1
# tiny-clip with its TempMe adapter (pystream/assets/tiny-clip/adapter), the default model.
# 'shipped' (and its alias 'shipped-base') is the training-free checkpoint alone, so archives
# recorded as 'shipped' hold that checkpoint's vectors; the adapter's figures are in its
# TRAINING.md.
SHIPPED_TEMPME = "shipped-tempme"
LORA_TARGETS = ("q_proj", "k_proj", "v_proj")
PEFT_PREFIX = "base_model.model."


class AdapterError(ValueError):
    """An adapter directory that cannot be used (missing files, another base shape...)."""


# ----------------------------------------------------------------------------- temporal


def slot_counts(clip_groups) -> list:
    """Slots per ClipMe layer: chunk-local layers index within the chunk, the last layer by
    chunk position in the window (module docstring). (2, 2, 3) -> [4, 2, 3]."""
    groups = tuple(clip_groups)
    out = [math.prod(groups[j:-1]) for j in range(len(groups) - 1)]
    return out + [groups[-1]]


class TemporalEmbeddings(torch.nn.Module):
    """One zero-initialised ``[slots, width]`` parameter per ClipMe layer."""

    def __init__(self, width: int, clip_groups=(2, 2, 3)):
        super().__init__()
        self.clip_groups = tuple(int(g) for g in clip_groups)
        self.slots = slot_counts(self.clip_groups)
        self.embeddings = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.zeros(n, width)) for n in self.slots])

    def add(self, j: int, h: torch.Tensor, last_group: Optional[int] = None) -> torch.Tensor:
        """h [S, N, C] (S clips, in stream order) before the join of ClipMe layer ``j``: each
        clip gets its slot's embedding. ``last_group``: the size of the window's last join
        (shorter at the end of a stream: its chunks take the first slots)."""
        e = self.embeddings[j]
        n = e.shape[0] if last_group is None else last_group
        if n > e.shape[0]:
            raise ValueError(f"temporal embeddings of ClipMe layer {j} have {e.shape[0]} slots, "
                             f"the schedule joins {n}")
        S = h.shape[0]
        if S % n:
            raise ValueError(f"{S} clips do not fill groups of {n}")
        slot = torch.arange(S, device=h.device) % n
        return h + e.to(h.dtype)[slot][:, None, :]

    def check_schedule(self, schedule) -> None:
        if schedule.enabled and tuple(schedule.clip_groups) != self.clip_groups:
            raise ValueError(
                f"the model's temporal embeddings were trained for clip_groups "
                f"{list(self.clip_groups)}; the schedule has {list(schedule.clip_groups)}")


def add_temporal(model, clip_groups=None) -> TemporalEmbeddings:
    """Attach zero-initialised temporal embeddings to a ClipVideoModel (returns them)."""
    groups = clip_groups or model.schedule.clip_groups
    width = model.clip.config.vision_config.hidden_size
    model.temporal = TemporalEmbeddings(width, groups).to(model.pixel_mean.device)
    return model.temporal


# ----------------------------------------------------------------------------- model refs


def model_ref_string(value) -> str:
    """The config's ``model:`` as one string that ``ClipVideoModel.from_pretrained`` and the
    archive's recorded model both take: a string stays as it is; a mapping ``{base, adapter}``
    becomes canonical JSON with absolute local paths. Raises AdapterError with a clear message
    for a bad mapping or adapter directory."""
    if isinstance(value, str):
        p = Path(os.path.expanduser(value))
        if p.is_dir() and (p / "adapter_config.json").exists() and \
                not (p / "pystream_adapter.json").exists():
            raise AdapterError(f"model: {value} holds a PEFT adapter that `pystream finetune` did "
                               "not write (no pystream_adapter.json); pystream loads its own "
                               "adapters (LoRA + temporal embeddings)")
        return value
    if not isinstance(value, dict):
        raise AdapterError("model: must be a string (shipped, a Hugging Face id, a model or "
                           "adapter directory) or a mapping {base: ..., adapter: DIR}")
    unknown = set(value) - {"base", "adapter"}
    if unknown:
        raise AdapterError(f"model: unknown key(s) {sorted(unknown)}; a mapping takes 'base' "
                           "and 'adapter'")
    base = value.get("base")
    if not isinstance(base, str) or not base:
        raise AdapterError("model: a mapping needs 'base' (shipped-base, a Hugging Face id or a "
                           "model directory)")
    if base == SHIPPED_TEMPME:
        raise AdapterError(f"model.base: {SHIPPED_TEMPME} already carries an adapter; use "
                           "base: shipped")
    out = {"base": str(Path(os.path.expanduser(base)).resolve())
           if Path(os.path.expanduser(base)).is_dir() else base}
    adapter = value.get("adapter")
    if adapter is not None:
        a = Path(os.path.expanduser(str(adapter)))
        if not a.is_dir():
            raise AdapterError(f"model.adapter: directory {a} does not exist")
        if not is_adapter_dir(a):
            raise AdapterError(f"model.adapter: {a} is not a pystream adapter (needs "
                               "adapter_config.json and pystream_adapter.json, as written by "
                               "`pystream finetune --out DIR`)")
        out["adapter"] = str(a.resolve())
    return json.dumps(out, sort_keys=True)


def is_adapter_dir(path) -> bool:
    p = Path(os.path.expanduser(str(path)))
    return p.is_dir() and (p / "adapter_config.json").exists() and \
        (p / "pystream_adapter.json").exists()


def _base_of(adapter_dir: Path) -> str:
    meta = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = meta.get("base_model_name_or_path")
    if not base:
        raise AdapterError(f"{adapter_dir}/adapter_config.json names no base_model_name_or_path")
    if base in ("shipped", "shipped-base", SHIPPED_TEMPME) or not base.startswith((".", "/", "~")):
        return base
    p = Path(os.path.expanduser(base))
    return str(p if p.is_absolute() else (adapter_dir / p).resolve())


def resolve_model_ref(ref, adapter=None) -> Tuple[str, Optional[Path]]:
    """``(base checkpoint, adapter dir or None)`` for a ``model:`` value: a string (checkpoint,
    'shipped' / 'shipped-base' = tiny-clip, 'shipped-tempme' = tiny-clip with its adapter, or an
    adapter directory) or a dict ``{base, adapter}``."""
    from .loader import shipped_adapter_dir, shipped_model_dir

    if isinstance(ref, str) and ref.lstrip().startswith("{"):  # the config's form of a mapping
        try:
            ref = json.loads(ref)
        except ValueError as e:
            raise AdapterError(f"model: {ref!r} is not a valid {{base, adapter}} mapping ({e})")
    if isinstance(ref, dict):
        unknown = set(ref) - {"base", "adapter"}
        if unknown or "base" not in ref:
            raise AdapterError(f"model: a mapping needs 'base' (and optionally 'adapter'), got "
                               f"keys {sorted(ref)}")
        if adapter is not None:
            raise AdapterError("give the adapter once: in model: {base, adapter} or as adapter=")
        ref, adapter = ref["base"], ref.get("adapter")
    ref = "shipped" if ref in (None, "") else ref
    if ref == SHIPPED_TEMPME:
        if adapter is not None:
            raise AdapterError(f"{SHIPPED_TEMPME} already carries its adapter; use base: shipped")
        ad = shipped_adapter_dir()
        if not is_adapter_dir(ad):
            raise AdapterError(f"{SHIPPED_TEMPME}: the adapter directory {ad} is missing")
        return str(shipped_model_dir()), ad
    if ref in ("shipped", "shipped-base"):
        ref = str(shipped_model_dir())
    if adapter is None and is_adapter_dir(ref):
        adapter = Path(os.path.expanduser(str(ref)))
        ref = _base_of(adapter)
        return resolve_model_ref(ref, adapter)[0], adapter
    if adapter is not None:
        a = Path(os.path.expanduser(str(adapter)))
        if not a.is_dir():
            raise AdapterError(f"adapter directory {a} does not exist")
        if not is_adapter_dir(a):
            raise AdapterError(f"{a} is not a pystream adapter (needs adapter_config.json and "
                               "pystream_adapter.json, as `pystream finetune` writes)")
        return str(ref), a
    return str(ref), None


# ----------------------------------------------------------------------------- save / load


def lora_state(clip) -> dict:
    """PEFT-format LoRA tensors of a CLIP model carrying a peft adapter ('default')."""
    from peft import get_peft_model_state_dict

    sd = get_peft_model_state_dict(clip, adapter_name="default", save_embedding_layers=False)
    return {(k if k.startswith(PEFT_PREFIX) else PEFT_PREFIX + k): v.detach().float().cpu()
            .contiguous() for k, v in sd.items()}


def save_adapter(model, out_dir, base: str, lora_config=None, extra: Optional[dict] = None):
    """Write the adapter directory (module docstring). ``lora_config``: the peft LoraConfig the
    model was injected with (None: temporal embeddings only)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = []
    if lora_config is not None:
        lora_config.base_model_name_or_path = base
        lora_config.save_pretrained(str(out))
        save_file(lora_state(model.clip), str(out / "adapter_model.safetensors.tmp"),
                  metadata={"format": "pt"})
        tmp.append("adapter_model.safetensors")
    else:
        (out / "adapter_config.json").write_text(json.dumps(
            {"peft_type": "LORA", "base_model_name_or_path": base, "r": 0,
             "target_modules": []}, indent=2))
    groups = list(model.temporal.clip_groups) if model.temporal is not None else None
    if model.temporal is not None:
        save_file({f"clipme.{j}": e.detach().float().cpu().contiguous()
                   for j, e in enumerate(model.temporal.embeddings)},
                  str(out / "temporal.safetensors.tmp"))
        tmp.append("temporal.safetensors")
    umask = os.umask(0)
    os.umask(umask)
    for name in tmp:  # safetensors writes 0600; an adapter is as readable as any other file
        os.chmod(out / f"{name}.tmp", 0o666 & ~umask)
        os.replace(out / f"{name}.tmp", out / name)
    meta = {"format": ADAPTER_FORMAT, "base": base, "clip_groups": groups,
            "lora_targets": sorted(lora_config.target_modules) if lora_config is not None else [],
            **(extra or {})}
    (out / "pystream_adapter.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def apply_adapter(model, adapter_dir) -> None:
    """Merge an adapter's LoRA into ``model.clip``'s weights and attach its temporal embeddings
    (inference; no peft needed)."""
    from safetensors.torch import load_file

    d = Path(adapter_dir)
    meta = json.loads((d / "pystream_adapter.json").read_text())
    if meta.get("format") != ADAPTER_FORMAT:
        raise AdapterError(f"{d}: adapter format {meta.get('format')!r}, this pystream reads "
                           f"{ADAPTER_FORMAT}")
    cfg = json.loads((d / "adapter_config.json").read_text())
    if (d / "adapter_model.safetensors").exists():
        if cfg.get("use_dora") or cfg.get("peft_type", "LORA") != "LORA":
            raise AdapterError(f"{d}: only plain LoRA adapters are supported")
        r, alpha = int(cfg["r"]), float(cfg.get("lora_alpha", cfg["r"]))
        scaling = alpha / (math.sqrt(r) if cfg.get("use_rslora") else r)
        sd = load_file(str(d / "adapter_model.safetensors"))
        modules = dict(model.clip.named_modules())
        n = 0
        with torch.no_grad():
            for key, A in sd.items():
                if ".lora_A." not in key:
                    continue
                name = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
                name = name.split(".lora_A.")[0]
                B = sd[key.replace(".lora_A.", ".lora_B.")]
                lin = modules.get(name)
                if lin is None or not hasattr(lin, "weight"):
                    raise AdapterError(f"{d}: LoRA targets {name!r}, which the base model "
                                       "does not have (another architecture?)")
                if tuple(lin.weight.shape) != (B.shape[0], A.shape[1]):
                    raise AdapterError(f"{d}: LoRA for {name} is {B.shape[0]}x{A.shape[1]}, the "
                                       f"base layer is {tuple(lin.weight.shape)}")
                lin.weight += (scaling * (B.double() @ A.double())).to(lin.weight)
                n += 1
        if n == 0:
            raise AdapterError(f"{d}/adapter_model.safetensors holds no LoRA tensors")
    if (d / "temporal.safetensors").exists():
        t = load_file(str(d / "temporal.safetensors"))
        temporal = add_temporal(model, meta.get("clip_groups") or model.schedule.clip_groups)
        with torch.no_grad():
            for j, e in enumerate(temporal.embeddings):
                v = t.get(f"clipme.{j}")
                if v is None or v.shape != e.shape:
                    raise AdapterError(
                        f"{d}/temporal.safetensors: clipme.{j} should be {tuple(e.shape)}, "
                        f"got {None if v is None else tuple(v.shape)}")
                e.copy_(v)
        temporal.requires_grad_(False)
        temporal.check_schedule(model.schedule)
    model.adapter_dir = str(d)
