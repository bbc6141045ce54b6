"""``pystream finetune``: TempMe's parameter-efficient fine-tuning on (video, caption) pairs.

Command line: ``pystream finetune --data pairs.csv --model openai/clip-vit-base-patch32
--out my-adapter`` (README.md, "Fine-tuning", has a runnable example). Trains LoRA on q/k/v of both towers (the ``peft`` library, ``pip install 'pystream[train]'``) and
TempMe's temporal embeddings (pystream/model/adapter.py), with merging in the loop (the video
forward is ``ClipVideoModel.encode_video`` under the TempMe schedule, gradients through the
merges), loss = symmetric InfoNCE over the batch's video-text pairs; optionally each video's
time-reversed copy joins the text-to-video negatives (``--reverse-negatives``), which is what
teaches "moves left" from "moves right" and "appears" from "disappears".

Data (``--data``):
  * a CSV file with a header naming ``video`` (or ``path``) and ``caption`` columns, optional
    ``start`` and ``end`` (seconds) and ``split`` (train / val); paths relative to the CSV;
  * a directory holding such a file as ``captions.csv``, or a pystream.synthetic dataset
    (``manifest.json``: its train and val splits, every paraphrase of each caption).
Each row becomes 12 frames sampled evenly over [start, end) at 1 fps (the last frame repeated
if the clip is shorter). Rows with a missing file, an empty caption or a video that does not
decode are reported one by one and skipped. Without a split column, ``--val-fraction`` of the
rows (at least one) is held out for the validation R@1 printed after every epoch.

Output (``--out DIR``): an adapter directory (adapter.py: PEFT LoRA files, temporal.safetensors,
pystream_adapter.json naming the base) that ``model:`` in the config names directly
(``model: DIR``) or as ``model: {base: BASE, adapter: DIR}``; plus ``finetune.json`` (command,
per-epoch validation, time). The run is resumable: ``DIR/finetune-state.pt`` is written every
``--save-every`` steps and at each epoch end; run the same command again after a kill and it
continues from there (same batches, same result as an uninterrupted run on the same machine).

Precision: bf16 autocast on CPU (``--amp auto``; master weights fp32), bf16 on a GPU that has it,
else fp16 with loss scaling.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np

FRAMES = 12
FPS = 1.0
STATE = "finetune-state.pt"


# ----------------------------------------------------------------------------- data


@dataclass
class Row:
    line: int  # 1-based data row (CSV line number, or manifest index + 1)
    path: str
    captions: List[str]  # the first is the canonical caption; others are paraphrases
    start: Optional[float] = None
    end: Optional[float] = None
    split: Optional[str] = None
    time_symmetric: bool = False  # its time reverse shows the same caption (no reverse negative)


@dataclass
class Problem:
    line: int
    path: str
    reason: str

    def __str__(self):
        return f"row {self.line} ({self.path or '-'}): {self.reason}; skipped"


@dataclass
class Dataset:
    frames: object  # uint8 tensor [N, FRAMES, S, S, 3]
    rows: List[Row]
    problems: List[Problem] = field(default_factory=list)


def read_rows(data) -> tuple:
    """(rows, problems) from a CSV file, a directory with captions.csv, or a synthetic
    manifest directory. Rows with an empty caption, a bad time span or a missing file come
    back as problems."""
    data = Path(os.path.expanduser(str(data)))
    if data.is_dir():
        if (data / "manifest.json").exists():
            return _manifest_rows(data)
        if (data / "captions.csv").exists():
            return _csv_rows(data / "captions.csv")
        raise FileNotFoundError(f"{data}: no captions.csv or manifest.json in this directory")
    if not data.exists():
        raise FileNotFoundError(f"--data {data} does not exist")
    return _csv_rows(data)


def _manifest_rows(d: Path):
    m = json.loads((d / "manifest.json").read_text())
    rows, problems = [], []
    for i, e in enumerate(m["examples"]):
        if e.get("split") == "test":  # held out for benchmarks/quality.py
            continue
        caps = [e.get("caption", "")] + [p for p in e.get("paraphrases", []) if p != e.get("caption")]
        rows.append(Row(i + 1, str(d / e["path"]), caps, split=e.get("split"),
                        time_symmetric=(e.get("label") or {}).get("event") == "cross"))
    return _check(rows, problems)


def _csv_rows(path: Path):
    rows, problems = [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
        vcol = cols.get("video") or cols.get("path")
        ccol = cols.get("caption")
        if not vcol or not ccol:
            raise ValueError(f"{path}: the header must name a 'video' (or 'path') and a "
                             f"'caption' column; it has {reader.fieldnames}")
        for n, r in enumerate(reader, start=2):  # line 1 is the header
            video = (r.get(vcol) or "").strip()
            cap = (r.get(ccol) or "").strip()
            try:
                start = _opt_float(r.get(cols.get("start", ""), ""))
                end = _opt_float(r.get(cols.get("end", ""), ""))
            except ValueError as e:
                problems.append(Problem(n, video, f"bad start/end ({e})"))
                continue
            p = Path(os.path.expanduser(video))
            if video and not p.is_absolute():
                p = path.parent / p
            split = (r.get(cols.get("split", ""), "") or "").strip().lower() or None
            rows.append(Row(n, str(p) if video else "", [cap], start, end, split))
    return _check(rows, problems)


def _opt_float(s) -> Optional[float]:
    s = (s or "").strip()
    return float(s) if s else None


def _check(rows: List[Row], problems: List[Problem]):
    good = []
    for r in rows:
        if not r.path:
            problems.append(Problem(r.line, r.path, "no video path"))
        elif not r.captions or not r.captions[0].strip():
            problems.append(Problem(r.line, r.path, "empty caption"))
        elif r.start is not None and r.end is not None and r.end <= r.start:
            problems.append(Problem(r.line, r.path, f"end {r.end} <= start {r.start}"))
        elif r.split not in (None, "train", "val"):
            problems.append(Problem(r.line, r.path, f"split {r.split!r} is not train or val"))
        elif not Path(r.path).is_file():
            problems.append(Problem(r.line, r.path, "video file not found"))
        else:
            r.captions = [c.strip() for c in r.captions if c and c.strip()]
            good.append(r)
    problems.sort(key=lambda p: p.line)
    return good, problems


def sample_clip(path: str, size: int, start=None, end=None, frames: int = FRAMES,
                fps: float = FPS) -> np.ndarray:
    """uint8 [frames, size, size, 3]: frames sampled at ``fps`` in [start, end), thinned evenly
    to ``frames`` when there are more, the last one repeated when there are fewer."""
    from pystream.decode import decode_frames

    out = []
    for f in decode_frames(path, fps=fps, size=size):
        if start is not None and f.t < start:
            continue
        if end is not None and f.t >= end:
            break
        out.append(f.rgb)
        if start is None and end is None and len(out) >= frames * 30:  # long file: enough
            break
    if not out:
        raise ValueError("no frames decoded" + (f" in [{start}, {end})" if start or end else ""))
    if len(out) > frames:
        out = [out[int(i)] for i in np.linspace(0, len(out) - 1, frames).round()]
    while len(out) < frames:
        out.append(out[-1])
    return np.stack(out)


def _decode_job(job):
    path, size, start, end = job
    try:
        return sample_clip(path, size, start, end), None
    except Exception as e:  # noqa: BLE001 - reported per row
        return None, f"unreadable video ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"


def load_dataset(rows: List[Row], size: int, workers: int = 1, progress: bool = True) -> Dataset:
    """Decodes every row (in ``workers`` processes); rows that fail are problems."""
    import torch

    jobs = [(r.path, size, r.start, r.end) for r in rows]
    pool = None
    if workers > 1 and len(jobs) > 32:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(workers)
    try:
        it = pool.imap(_decode_job, jobs, chunksize=8) if pool else map(_decode_job, jobs)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(jobs), desc="decode", unit="video", leave=False)
        kept, arrays, problems = [], [], []
        for r, (arr, err) in zip(rows, it):
            if err:
                problems.append(Problem(r.line, r.path, err))
            else:
                kept.append(r)
                arrays.append(arr)
    finally:
        if pool:
            pool.close()
            pool.join()
    frames = torch.from_numpy(np.stack(arrays)) if arrays else \
        torch.empty((0, FRAMES, size, size, 3), dtype=torch.uint8)
    return Dataset(frames, kept, problems)


def split_rows(rows: List[Row], val_fraction: float, seed: int):
    """(train, val): the split column when any row has one, else a seeded random hold-out."""
    if any(r.split for r in rows):
        tr = [r for r in rows if r.split != "val"]
        va = [r for r in rows if r.split == "val"]
        return tr, va
    if len(rows) < 2 or val_fraction <= 0:
        return rows, []
    rng = np.random.default_rng([seed, 7])
    n_val = max(1, int(round(len(rows) * val_fraction)))
    val_idx = set(rng.permutation(len(rows))[:n_val].tolist())
    return ([r for i, r in enumerate(rows) if i not in val_idx],
            [r for i, r in enumerate(rows) if i in val_idx])


# ----------------------------------------------------------------------------- model


def build_trainable(base: str, rank: int, alpha: float, schedule="default", device="cpu",
                    targets=None):
    """(ClipVideoModel with peft LoRA injected and zero temporal embeddings, LoraConfig).
    ``targets``: module names LoRA wraps (default q_proj, k_proj, v_proj, TempMe's choice)."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError("pystream finetune needs the peft library: "
                           "pip install 'pystream[train]' (or pip install peft)") from e
    from pystream.model.adapter import LORA_TARGETS, add_temporal, resolve_model_ref
    from pystream.model.tempme import ClipVideoModel

    ckpt, adapter = resolve_model_ref("shipped-base" if base == "shipped" else base)
    if adapter is not None:
        raise ValueError(f"--model {base} is an adapter; fine-tune from a base checkpoint "
                         f"(its base: {ckpt})")
    model = ClipVideoModel.from_pretrained(ckpt, schedule=schedule)
    model.requires_grad_(False)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets or LORA_TARGETS),
                     lora_dropout=0.0, bias="none")
    inject_adapter_in_model(cfg, model.clip)
    for n, p in model.clip.named_parameters():
        p.requires_grad_("lora_" in n)
    add_temporal(model).requires_grad_(True)
    return model.to(device), cfg


def trainable_state(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def info_nce(t, v, scale, v_neg=None, rev_rows=None, rev_weight: float = 0.0):
    """Symmetric InfoNCE over matched rows of t, v (L2-normalised); ``v_neg`` [M, D] are extra
    videos that are negatives for every text (text-to-video direction only). With
    ``rev_rows`` (the row of t each v_neg reverses) and ``rev_weight`` > 0, plus that weight
    times a two-way cross-entropy: each of those texts against its own video and its video's
    time reverse. In a batch of 32 the reversed copy is one negative among 60 and most of
    the loss is captions that fit several videos; the pairwise term keeps the order signal
    from drowning."""
    import torch
    import torch.nn.functional as F

    logits = scale * t @ v.T
    target = torch.arange(len(t), device=t.device)
    t2v = logits if v_neg is None or len(v_neg) == 0 else \
        torch.cat([logits, scale * t @ v_neg.T], dim=1)
    loss = 0.5 * (F.cross_entropy(t2v, target) + F.cross_entropy(logits.T, target))
    if rev_weight and v_neg is not None and len(v_neg):
        r = torch.as_tensor(rev_rows, device=t.device)
        pair = torch.stack([(t[r] * v[r]).sum(-1), (t[r] * v_neg).sum(-1)], dim=1) * scale
        loss = loss + rev_weight * F.cross_entropy(pair, torch.zeros_like(r))
    return loss


def _amp(kind: str, device: str):
    """(enabled, dtype, grad scaler needed) for --amp."""
    import torch

    if kind == "fp32":
        return False, torch.float32, False
    if device.startswith("cuda"):
        if kind == "bf16" or (kind == "auto" and torch.cuda.is_bf16_supported()):
            return True, torch.bfloat16, False
        return True, torch.float16, True
    return True, torch.bfloat16, False  # CPU: bf16 autocast (fp16 autocast on CPU is not useful)


# ----------------------------------------------------------------------------- training


def _log(msg: str, out=None):
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, file=sys.stderr, flush=True)


@dataclass
class Settings:
    base: str
    data: str
    rank: int
    alpha: float
    lr: float
    batch: int
    epochs: int
    seed: int
    schedule: str
    reverse_negatives: bool
    weight_decay: float
    val_fraction: float
    temporal_lr_mult: float = 1.0
    reverse_weight: float = 1.0
    lora_targets: str = "q_proj,k_proj,v_proj"

    def key(self) -> dict:
        return dict(vars(self))


def evaluate(model, frames, captions, amp=(False, None, False), device="cpu",
             batch: int = 32) -> dict:
    """Text-to-video retrieval on (frames, canonical captions): R@1/5/10, median rank."""
    import torch
    import torch.nn.functional as F

    from pystream.synthetic.metrics import retrieval_metrics

    was = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=amp[1] or torch.bfloat16,
                                             enabled=amp[0]):
            v = torch.cat([model.encode_video(frames[i: i + batch].to(device)).float()
                           for i in range(0, len(frames), batch)])
            t = model.encode_text(captions).float()
        return retrieval_metrics(F.normalize(t, dim=-1).cpu(), F.normalize(v, dim=-1).cpu())
    finally:
        model.train(was)


def run(args) -> dict:
    import torch

    from pystream.model.adapter import save_adapter
    from pystream.model.tempme import text_features

    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    settings = Settings(args.model, str(args.data), args.rank, args.alpha, args.lr, args.batch,
                        args.epochs, args.seed, args.schedule, args.reverse_negatives,
                        args.weight_decay, args.val_fraction, args.temporal_lr_mult,
                        args.reverse_weight, args.lora_targets)
    done_file = out / "finetune.json"
    state_file = out / STATE
    if done_file.exists() and not state_file.exists():
        prev = json.loads(done_file.read_text())
        if prev.get("settings") == settings.key() and prev.get("complete"):
            _log(f"{out}: already fine-tuned with these settings (finetune.json); nothing to do")
            return prev

    rows, problems = read_rows(args.data)
    torch.manual_seed(args.seed)
    model, lcfg = build_trainable(args.model, args.rank, args.alpha, args.schedule, device,
                                  args.lora_targets.split(","))
    size = model.image_size
    tr_rows, va_rows = split_rows(rows, args.val_fraction, args.seed)
    if args.limit:
        tr_rows, va_rows = tr_rows[: args.limit], va_rows[: max(1, args.limit // 8)]
    tr = load_dataset(tr_rows, size, args.workers, progress=not args.quiet)
    va = load_dataset(va_rows, size, args.workers, progress=not args.quiet)
    problems = sorted(problems + tr.problems + va.problems, key=lambda p: p.line)
    for p in problems:
        _log(str(p))
    if len(tr.rows) < 2:
        raise ValueError(f"{len(tr.rows)} usable training rows (of {len(rows) + len(problems)}"
                         f"); need at least 2 (see the skipped rows above)")
    batch = min(args.batch, len(tr.rows))
    steps_per_epoch = len(tr.rows) // batch
    total = steps_per_epoch * args.epochs
    _log(f"data: {len(tr.rows)} train / {len(va.rows)} val clips, {len(problems)} rows skipped; "
         f"{args.epochs} epochs x {steps_per_epoch} steps of {batch}; device {device}")

    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    temporal = list(model.temporal.parameters())
    lora = [p for p in params if all(p is not q for q in temporal)]
    # The temporal embeddings start at zero and must grow to the scale of the hidden states:
    # they may take a larger learning rate (--temporal-lr-mult).
    opt = torch.optim.AdamW([{"params": lora, "mult": 1.0},
                             {"params": temporal, "mult": args.temporal_lr_mult}],
                            lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.98),
                            eps=1e-6)
    amp = _amp(args.amp, device)
    scaler = torch.amp.GradScaler("cuda") if amp[2] else None
    step, history = 0, []
    if state_file.exists():
        st = torch.load(state_file, map_location=device, weights_only=False)
        if st["settings"] != settings.key():
            raise ValueError(f"{state_file} belongs to another run ({st['settings']}); use a "
                             "new --out or delete that file to start over")
        named = dict(model.named_parameters())
        with torch.no_grad():
            for n, v in st["params"].items():
                named[n].copy_(v)
        opt.load_state_dict(st["opt"])
        step, history = st["step"], st["history"]
        _log(f"resuming from {state_file}: step {step}/{total}")

    def save_state():
        tmp = state_file.with_suffix(".tmp")
        torch.save({"settings": settings.key(), "params": trainable_state(model),
                    "opt": opt.state_dict(), "step": step, "history": history}, tmp)
        os.replace(tmp, state_file)

    scale = float(model.clip.logit_scale.detach().exp().clamp(max=100.0))
    warmup = min(args.warmup, max(1, total // 10))
    from tqdm import tqdm

    bar = tqdm(total=total, initial=step, desc="finetune", unit="step", disable=args.quiet)
    model.train()
    t_train = time.time()
    run_loss = []
    from torch.nn.attention import SDPBackend, sdpa_kernel

    ctx = sdpa_kernel([SDPBackend.MATH]) if device == "cpu" else _null()
    with ctx:
        while step < total:
            epoch, k = divmod(step, steps_per_epoch)
            order = np.random.default_rng([args.seed, epoch]).permutation(len(tr.rows))
            idx = order[k * batch: (k + 1) * batch]
            rng = np.random.default_rng([args.seed, epoch, k, 1])
            texts = [tr.rows[i].captions[int(rng.integers(len(tr.rows[i].captions)))]
                     for i in idx]
            lr = args.lr * min(1.0, (step + 1) / warmup) * (
                0.5 * (1 + math.cos(math.pi * max(0, step - warmup) / max(1, total - warmup))))
            for g in opt.param_groups:
                g["lr"] = lr * g.get("mult", 1.0)
            x = tr.frames[torch.as_tensor(idx)].to(device)
            with torch.autocast(device.split(":")[0], dtype=amp[1], enabled=amp[0]):
                v = model.encode_video(x)
                vn = None
                if args.reverse_negatives:
                    rev = [j for j, i in enumerate(idx) if not tr.rows[i].time_symmetric]
                    if rev:
                        vn = model.encode_video(x[torch.as_tensor(rev)].flip(1))
                enc = model.tokenizer(texts, padding=True, truncation=True, return_tensors="pt",
                                      max_length=model.clip.config.text_config.max_position_embeddings)
                t = text_features(model.clip, enc["input_ids"].to(device),
                                  enc["attention_mask"].to(device))
            nrm = torch.nn.functional.normalize
            loss = info_nce(nrm(t.float(), dim=-1), nrm(v.float(), dim=-1), scale,
                            None if vn is None else nrm(vn.float(), dim=-1),
                            rev if vn is not None else None, args.reverse_weight)
            opt.zero_grad(set_to_none=True)
            if scaler:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
            step += 1
            run_loss.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(run_loss[-20:]):.3f}", epoch=epoch + 1)
            end_of_epoch = step % steps_per_epoch == 0
            if end_of_epoch:
                rec = {"epoch": epoch + 1, "step": step,
                       "train_loss": float(np.mean(run_loss)) if run_loss else None}
                if len(va.rows):
                    m = evaluate(model, va.frames, [r.captions[0] for r in va.rows], amp, device)
                    rec.update(val_r1=m["r1"], val_r5=m["r5"], val_medr=m["medr"], val_n=m["n"])
                    bar.write(f"epoch {epoch + 1}/{args.epochs}: loss {rec['train_loss']:.3f}  "
                              f"val R@1 {m['r1']:.1f}  R@5 {m['r5']:.1f}  medR {m['medr']:.1f} "
                              f"({m['n']} clips)")
                else:
                    bar.write(f"epoch {epoch + 1}/{args.epochs}: loss {rec['train_loss']:.3f} "
                              "(no validation rows)")
                history.append(rec)
                run_loss = []
                save_adapter(model, out, _base_name(args.model, out), lcfg)
            if end_of_epoch or step % args.save_every == 0:
                save_state()
            if args.stop_after and step >= args.stop_after and step < total:
                bar.close()
                _log(f"stopping at step {step} (--stop-after); run again to continue")
                return {"step": step, "complete": False, "history": history}
    bar.close()
    save_adapter(model, out, _base_name(args.model, out), lcfg)
    summary = {"complete": True, "settings": settings.key(), "steps": total,
               "trainable_params": n_params, "history": history,
               "skipped": [str(p) for p in problems], "train_clips": len(tr.rows),
               "val_clips": len(va.rows), "seconds_train_this_run": time.time() - t_train,
               "seconds_total_this_run": time.time() - t0, "device": device,
               "amp": str(amp[1]) if amp[0] else "fp32",
               "command": "pystream finetune " + " ".join(shlex.quote(a) for a in args.argv)}
    done_file.write_text(json.dumps(summary, indent=1) + "\n")
    if state_file.exists():
        state_file.unlink()
    _log(f"wrote adapter {out} ({n_params / 1e3:.0f}k trained parameters) in "
         f"{(time.time() - t0) / 60:.1f} min; use it with model: {out}")
    return summary


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _base_name(base: str, out: Path) -> str:
    """How the adapter names its base: hub ids and 'shipped-base' as given, a local directory
    relative to the adapter when it is inside the same tree, else absolute."""
    if base == "shipped":
        return "shipped-base"
    p = Path(os.path.expanduser(base))
    if base == "shipped-base" or not p.exists():
        return base
    p, o = p.resolve(), out.resolve()
    try:
        return os.path.relpath(p, o) if os.path.commonpath([p, o]) != "/" else str(p)
    except ValueError:
        return str(p)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="CSV (video, caption[, start, end, split]) or a "
                   "directory with captions.csv or a pystream.synthetic manifest.json")
    p.add_argument("--model", required=True,
                   help="base CLIP checkpoint: hub id, directory, or shipped-base")
    p.add_argument("--out", required=True, help="adapter directory to write (resumable)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--temporal-lr-mult", type=float, default=1.0,
                   help="learning rate of the temporal embeddings / --lr")
    p.add_argument("--rank", type=int, default=16, help="LoRA rank")
    p.add_argument("--alpha", type=float, default=32.0, help="LoRA alpha (scaling alpha/rank)")
    p.add_argument("--lora-targets", default="q_proj,k_proj,v_proj",
                   help="comma-separated linear layers LoRA wraps in both towers (TempMe: q, k, "
                   "v; add out_proj,fc1,fc2 for the MLPs: with them frozen, a token's features "
                   "stay linear in its temporal embedding, see the shipped adapter's TRAINING.md)")
    p.add_argument("--schedule", default="default", help="TempMe preset trained with")
    p.add_argument("--reverse-negatives", action=argparse.BooleanOptionalAction, default=True,
                   help="add each clip's time-reversed copy as a negative (default on; a "
                   "synthetic manifest's 'cross' clips, symmetric in time, are left out)")
    p.add_argument("--reverse-weight", type=float, default=1.0,
                   help="weight of the pairwise term: caption vs its clip and the clip's time "
                   "reverse (with --reverse-negatives)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--amp", choices=("auto", "bf16", "fp16", "fp32"), default="auto")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes")
    p.add_argument("--save-every", type=int, default=25, help="steps between resume checkpoints")
    p.add_argument("--limit", type=int, default=0, help="use only the first N training rows")
    p.add_argument("--stop-after", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="pystream finetune", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.argv = argv
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
