"""Train the small CLIP shipped as the offline default (pystream/assets/tiny-clip).

    python -m pystream.synthetic.train --out pystream/assets/tiny-clip --seed 0

1. Generates the synthetic text-video benchmark with :mod:`pystream.synthetic.videos` (real
   H.264 files: train / val / test, the test split holding shape-event pairs never seen in
   training) and decodes every file with :mod:`pystream.decode` at 1 fps, 12 frames, model size, so training
   sees the same codec artefacts as indexing does.
2. Builds a small Hugging Face ``CLIPModel`` (6-layer ViT at 112 px with 16 px patches, i.e.
   49 patches + CLS = 50 tokens per frame like ViT-B/32; a 3-layer text transformer) and a
   word-level tokenizer (:mod:`pystream.model.tokenizer`).
3. Trains it contrastively (symmetric InfoNCE, learnable logit scale), text = a random
   paraphrase of the caption, in two phases under one warmup + cosine learning-rate schedule:
   a. ``--frame-steps`` steps on single frames (a random frame of each video, 128 per step,
      per-frame CLIP): the image-text pretraining that real CLIP brings to TempMe. Twelve
      times cheaper per caption than a video, it is where colours, shapes and sizes are
      learnt: in our runs 400 frame steps (~5 min) reached validation R@1 12.5% where 200
      video steps of the same wall time reached 3.5%. Half of these captions say where the
      object is in that frame instead ("a red circle in the top left"), each against the same
      words naming another cell: no batch of random clips needs position otherwise, and a
      direction is a change of position (issue 14: without them, and at lr 1e-3, the image
      embedding never learnt where things are; benchmarks/position_probe.py).
   b. ``--steps`` steps on 12-frame videos encoded through the TempMe path with merging in
      the loop: ``ClipVideoModel.encode_video`` under the ``default`` schedule (gradients
      flow through the merges: the matching is fixed, the size-weighted averages are
      differentiable). This adapts the model to merged tokens and to the events.
4. Saves ``config.json`` + ``model.safetensors`` (``save_pretrained``), the tokenizer files,
   ``preprocessor_config.json`` and ``TRAINING.md`` (command, seed, data, time, metrics).

Matrix multiplies run under bf16 autocast on CPU when the CPU has native bf16 (AVX512-BF16 /
AMX: several times faster there), fp32 otherwise; master weights and the saved model are fp32.
Evaluation is always fp32. Deterministic for a given seed, machine and thread count.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .metrics import chance_r_at_k, retrieval_metrics, retrieval_ranks  # noqa: F401

FRAMES = 12  # frames per video window (TempMe's default schedule: 2 x 2 x 3)
FPS = 1.0  # sampled frames per second (the daemon's default)


# ----------------------------------------------------------------------------- data


@dataclass
class Split:
    name: str
    frames: torch.Tensor  # uint8 [N, FRAMES, S, S, 3]
    captions: List[str]  # the canonical caption of each video (the test queries)
    paraphrases: List[List[str]]
    labels: List[dict]
    seeds: List[int] = field(default_factory=list)  # render seeds (frame_positions)


def default_data_dir(seed: int, n_train: int, n_val: int, n_test: int, size: int) -> Path:
    root = Path(os.environ.get("PYSTREAM_CACHE", Path.home() / ".cache" / "pystream"))
    return root / "synth" / f"seed{seed}_train{n_train}_val{n_val}_test{n_test}_px{size}"


ENCODE_FPS = 4.0  # the generated files' frame rate (synth's default): decoding samples 1 in 4


def prepare_data(data_dir, n_train: int, n_val: int, n_test: int, seed: int, size: int,
                 progress: bool = True, workers: int = 1) -> dict:
    """Generates the dataset under ``data_dir`` unless a matching manifest is already there
    (generation is deterministic in its arguments, so a match is the same data).

    ``workers == 1`` calls ``synth.generate_dataset``; more workers render and encode the same
    files (same names, same bytes, same manifest) in parallel processes."""
    from pystream.synthetic import videos as synth

    data_dir = Path(data_dir)
    man = data_dir / "manifest.json"
    want = {"seed": seed, "size": size, "frames": FRAMES, "fps": FPS}
    counts = {"train": n_train, "val": n_val, "test": n_test}
    if man.exists():
        m = json.loads(man.read_text())
        have = {s: sum(e["split"] == s for e in m["examples"]) for s in counts}
        if all(m.get(k) == v for k, v in want.items()) and have == counts and all(
                (data_dir / e["path"]).exists() for e in m["examples"]):
            return m
    if workers <= 1:
        return synth.generate_dataset(data_dir, n_train, n_val, n_test, seed=seed, size=size,
                                      frames=FRAMES, fps=FPS, encode_fps=ENCODE_FPS,
                                      progress=progress)
    return _generate_parallel(data_dir, counts, seed, size, workers, progress)


def _write_one(job) -> None:
    from pystream.synthetic import videos as synth

    ex, path, size, n_render = job
    synth.write_video(synth.render_example(ex, size, n_render), path, fps=ENCODE_FPS)


def _pool(workers: int):
    import multiprocessing as mp

    # spawn, not fork: the parent may already run torch's thread pools.
    return mp.get_context("spawn").Pool(workers)


def _generate_parallel(data_dir: Path, counts: dict, seed: int, size: int, workers: int,
                       progress: bool) -> dict:
    """synth.generate_dataset's files and manifest, rendered/encoded by ``workers`` processes."""
    from dataclasses import asdict

    from pystream.synthetic import videos as synth

    n_render = int(round(FRAMES * ENCODE_FPS / FPS))
    manifest = {"seed": seed, "size": size, "frames": FRAMES, "fps": FPS,
                "encode_fps": ENCODE_FPS, "codec": synth._video_codec(),
                "held_out": [list(p) for p in synth.HELD_OUT], "examples": []}
    jobs = []
    for split, n in counts.items():
        (data_dir / split).mkdir(parents=True, exist_ok=True)
        for i, ex in enumerate(synth.make_split(split, n, seed)):
            rel = f"{split}/{split}_{i:05d}.mp4"
            jobs.append((ex, str(data_dir / rel), size, n_render))
            manifest["examples"].append({"path": rel, **asdict(ex)})
    with _pool(workers) as pool:
        it = pool.imap(_write_one, jobs, chunksize=16)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(jobs), desc="synth", unit="video")
        for _ in it:
            pass
    tmp = data_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(data_dir / "manifest.json")
    return manifest


def decode_video(path, size: int, frames: int = FRAMES, fps: float = FPS) -> np.ndarray:
    """Decoded uint8 [frames, size, size, 3] sampled at ``fps`` (the last frame repeats if the
    file is short)."""
    from pystream.decode import decode_frames

    out = []
    for f in decode_frames(path, fps=fps, size=size):
        out.append(f.rgb)
        if len(out) == frames:
            break
    if not out:
        raise ValueError(f"{path}: no frames decoded")
    while len(out) < frames:
        out.append(out[-1])
    return np.stack(out)


def _decode_one(job) -> np.ndarray:
    path, size = job
    return decode_video(path, size)


def load_split(data_dir, manifest: dict, split: str, size: int, limit: Optional[int] = None,
               progress: bool = False, workers: int = 1) -> Split:
    """Decodes the videos of one split of a generated dataset (in ``workers`` processes)."""
    exs = [e for e in manifest["examples"] if e["split"] == split][:limit]
    frames = np.empty((len(exs), FRAMES, size, size, 3), np.uint8)
    jobs = [(str(Path(data_dir) / e["path"]), size) for e in exs]
    pool = _pool(workers) if workers > 1 and len(jobs) > 64 else None
    try:
        it = pool.imap(_decode_one, jobs, chunksize=16) if pool else map(_decode_one, jobs)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(jobs), desc=f"decode {split}", unit="video", leave=False)
        for i, f in enumerate(it):
            frames[i] = f
    finally:
        if pool:
            pool.close()
            pool.join()
    return Split(split, torch.from_numpy(frames), [e["caption"] for e in exs],
                 [list(e["paraphrases"]) for e in exs], [e["label"] for e in exs],
                 [int(e["seed"]) for e in exs])


@torch.no_grad()
def encode_videos(model, frames: torch.Tensor, schedule="default", batch: int = 32,
                  amp: bool = False) -> torch.Tensor:
    out = []
    for i in range(0, len(frames), batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out.append(model.encode_video(frames[i: i + batch], schedule=schedule).float())
    return F.normalize(torch.cat(out), dim=-1)


@torch.no_grad()
def evaluate(model, split: Split, schedule="default", amp: bool = False) -> dict:
    was = model.training
    model.eval()
    try:
        v = encode_videos(model, split.frames, schedule, amp=amp)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            t = model.encode_text(split.captions).float()
        return retrieval_metrics(F.normalize(t, dim=-1), v)
    finally:
        model.train(was)


# ----------------------------------------------------------------------------- model


def build_clip(tokenizer, size: int = 112, patch: int = 16, width: int = 192, layers: int = 6,
               heads: int = 3, text_width: int = 128, text_layers: int = 3, text_heads: int = 2,
               proj: int = 128):
    """A randomly initialised ``CLIPModel`` whose text ids (vocab, pad/bos/eos) match
    ``tokenizer``."""
    from transformers import CLIPConfig, CLIPModel

    from pystream.model.tokenizer import text_config_ids

    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=text_width,
                         intermediate_size=4 * text_width, num_hidden_layers=text_layers,
                         num_attention_heads=text_heads,
                         max_position_embeddings=tokenizer.model_max_length,
                         projection_dim=proj, **text_config_ids(tokenizer)),
        vision_config=dict(hidden_size=width, intermediate_size=4 * width,
                           num_hidden_layers=layers, num_attention_heads=heads,
                           image_size=size, patch_size=patch, projection_dim=proj),
        projection_dim=proj,
    )
    clip = CLIPModel(cfg)
    _init_position_embeddings(clip.vision_model.embeddings, size // patch)
    return clip


def _init_position_embeddings(emb, grid: int, std: float = 0.5) -> None:
    """2-D sine-cosine patch position embeddings (MAE / MoCo v3) at the patch embeddings'
    scale, still trained. CLIP's default init (std 0.02, ~30x below a patch's content) left
    position invisible: a from-scratch run of this size never learnt where an object is
    (position captions at chance after 1200 steps), and direction needs position."""
    dim = emb.position_embedding.weight.shape[1]
    q = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(q, dtype=torch.float32) / q)
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float32),
                            torch.arange(grid, dtype=torch.float32), indexing="ij")
    parts = []
    for coord in (xs.flatten(), ys.flatten()):
        a = coord[:, None] * omega[None]
        parts += [a.sin(), a.cos()]
    pe = torch.cat(parts, 1)  # [grid*grid, 4q]
    pe = F.pad(pe, (0, dim - pe.shape[1]))
    pe = pe / pe.std() * std
    with torch.no_grad():
        emb.position_embedding.weight[1:] = pe  # row 0 is the CLS token's


def bf16_is_fast() -> bool:
    """True when bf16 matrix multiplies are native on this CPU (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in (" avx512_bf16", " amx_bf16"))


def save_model(clip, tokenizer, out_dir, mean, std, training_md: str) -> int:
    """Writes the model directory; returns its total size in bytes."""
    from pystream.model.tokenizer import save_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.safetensors"):
        old.unlink()
    clip.save_pretrained(out, safe_serialization=True)
    save_tokenizer(tokenizer, out)
    size = clip.config.vision_config.image_size
    pre = {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True, "size": {"shortest_edge": size},
        "do_center_crop": True, "crop_size": {"height": size, "width": size},
        "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": list(mean), "image_std": list(std),
        "do_convert_rgb": True, "resample": 3,
    }
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n")
    (out / "TRAINING.md").write_text(training_md)
    return sum(p.stat().st_size for p in out.iterdir() if p.is_file())


# ----------------------------------------------------------------------------- training


def augment_text(rng: np.random.Generator, paraphrases: Sequence[str]) -> str:
    """A random paraphrase; sometimes capitalised or with a full stop, as typed queries are."""
    s = paraphrases[int(rng.integers(len(paraphrases)))]
    if rng.random() < 0.15:
        s = s[:1].upper() + s[1:]
    if rng.random() < 0.15:
        s = s + "."
    return s


def frame_texts(rng: np.random.Generator, split: Split, idx, which, positions,
                p_position: float) -> tuple[List[str], List[Optional[str]]]:
    """Captions of single frames (the frame phase): with probability ``p_position`` where the
    main object is in that frame ("a red circle in the top left", when it is visible),
    otherwise a paraphrase of the video's caption; and per frame the hard negative of a
    position caption (the same object in another cell; None for video captions).
    ``positions[i]`` is ``frame_positions`` of video i."""
    from pystream.synthetic.videos import position_caption

    texts, negatives = [], []
    for i, t in zip(idx, which):
        where = positions[i][t] if positions else None
        if where is not None and rng.random() < p_position:
            text, negative = position_caption(rng, split.labels[i], where)
            texts.append(augment_text(rng, [text]))
            negatives.append(augment_text(rng, [negative]))
        else:
            texts.append(augment_text(rng, split.paraphrases[i]))
            negatives.append(None)
    return texts, negatives


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, steps - warmup)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


def _batches(rng, n: int, batch: int):
    """Endless batches of distinct indices, a fresh permutation each epoch."""
    while True:
        order = rng.permutation(n)
        for i in range(0, n - batch + 1, batch):
            yield order[i: i + batch]


def _train_loop(args, model, clip, tokenizer, opt, tr, va, rng, amp, t_train) -> list:
    """``args.frame_steps`` steps on single frames (per-frame CLIP, like CLIP's image-text
    pretraining), then ``args.steps`` steps on 12-frame videos through TempMe
    (``args.schedule``, merging in the loop). One warmup + cosine schedule spans both."""
    from pystream.model.tempme import text_features

    n = len(tr.captions)
    total = args.frame_steps + args.steps
    positions = None
    if args.position_captions > 0:
        from pystream.synthetic.videos import frame_positions

        positions = [frame_positions(lab, sd, FRAMES) for lab, sd in zip(tr.labels, tr.seeds)]
    frame_batches = _batches(rng, n, args.frame_batch) if args.frame_steps else None
    video_batches = _batches(rng, n, args.batch)
    history = []
    run_loss, run_acc, run_n = 0.0, 0.0, 0
    run_pos, run_pos_n = 0.0, 0  # share of frames whose position caption beats the other cell
    t_phase, phase_start = time.time(), 0
    for step in range(total):
        frames_phase = step < args.frame_steps
        if step == args.frame_steps and step:
            log(f"frame phase done in {(time.time() - t_phase) / 60:.1f} min; "
                f"video phase: {args.steps} steps of {args.batch} x {FRAMES}-frame videos, "
                f"schedule {args.schedule}")
            t_phase, phase_start = time.time(), step
        if frames_phase:
            idx = next(frame_batches)
            which = rng.integers(0, FRAMES, len(idx))
            x = tr.frames[torch.as_tensor(idx), torch.as_tensor(which)][:, None]  # [B,1,S,S,3]
            schedule = "off"
            texts, negatives = frame_texts(rng, tr, idx, which, positions,
                                           args.position_captions)
        else:
            idx = next(video_batches)
            x = tr.frames[torch.as_tensor(idx)]
            schedule = args.schedule
            texts = [augment_text(rng, tr.paraphrases[i]) for i in idx]
            negatives = []
        extra = [n for n in negatives if n is not None]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, args.lr, args.warmup)

        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            v = model.encode_video(x, schedule=schedule)
            enc = tokenizer(texts + extra, padding=True, return_tensors="pt")
            t = text_features(clip, enc["input_ids"], enc["attention_mask"])
        v = F.normalize(v.float(), dim=-1)
        t = F.normalize(t.float(), dim=-1)
        scale = clip.logit_scale.clamp(max=math.log(100.0)).exp()
        # Position negatives are extra texts each image is scored against (image -> text).
        all_logits = scale * t @ v.T  # [B + extra, B]
        logits = all_logits[:len(idx)]
        target = torch.arange(len(idx))
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(all_logits.T, target))
        if extra and args.position_weight > 0:
            # One negative among ~190 texts moves the softmax little while everything else is
            # still confused: a pairwise term (own caption vs the other cell) gives position
            # its own gradient, as the fine-tuning's reversed-clip term does for order.
            rows = torch.as_tensor([i for i, n in enumerate(negatives) if n is not None])
            own = all_logits[rows, rows]
            other = all_logits[len(idx) + torch.arange(len(rows)), rows]
            pair = torch.stack([own, other], 1)
            loss = loss + args.position_weight * F.cross_entropy(
                pair, torch.zeros(len(rows), dtype=torch.long))
            run_pos += float((own > other).float().mean())
            run_pos_n += 1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clip.parameters(), 1.0)
        opt.step()

        run_loss += float(loss.detach())
        run_acc += float((logits.argmax(1) == target).float().mean())
        run_n += 1
        done = step + 1
        if done % args.log_every == 0 or done in (total, args.frame_steps):
            el = time.time() - t_phase
            per = el / (done - phase_start)
            left = (args.frame_steps - done) * per if frames_phase else (total - done) * per
            log(f"{'frames' if frames_phase else 'video'} step {done}/{total}  "
                f"loss {run_loss / run_n:.3f}  batch-acc {run_acc / run_n:.2f} (of {len(idx)})  "
                + (f"position-acc {run_pos / run_pos_n:.2f}  " if run_pos_n else "")
                + f"scale {float(scale.detach()):.1f}  lr {opt.param_groups[0]['lr']:.2e}  "
                f"{per:.2f}s/step  elapsed {(time.time() - t_train) / 60:.1f}min  "
                f"phase eta {left / 60:.1f}min")
            run_loss, run_acc, run_n = 0.0, 0.0, 0
            run_pos, run_pos_n = 0.0, 0
        if args.eval_every and (done % args.eval_every == 0) and done < total:
            m = evaluate(model, va, args.schedule, amp=amp)
            history.append({"step": done, **m})
            log(f"  val ({len(va.captions)} videos, {args.schedule}, bf16): R@1 {m['r1']:.1f}  "
                f"R@5 {m['r5']:.1f}  R@10 {m['r10']:.1f}  medR {m['medr']:.1f}")
    return history


def train(args) -> dict:
    from pystream.model.loader import CLIP_MEAN, CLIP_STD
    from pystream.model.tempme import ClipVideoModel
    from pystream.model.tokenizer import build_tokenizer

    t_start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    amp = {"auto": bf16_is_fast(), "bf16": True, "fp32": False}[args.amp]

    data_dir = Path(args.data) if args.data else default_data_dir(
        args.seed, args.n_train, args.n_val, args.n_test, args.size)
    log(f"data: {data_dir} (train {args.n_train}, val {args.n_val}, test {args.n_test}, "
        f"{args.size}px, {FRAMES} frames at {FPS:g} fps)")
    manifest = prepare_data(data_dir, args.n_train, args.n_val, args.n_test, args.seed,
                            args.size, progress=args.progress, workers=args.threads)
    tr, va, te = (load_split(data_dir, manifest, s, args.size, progress=args.progress,
                             workers=args.threads) for s in ("train", "val", "test"))
    t_data = time.time() - t_start
    log(f"data ready in {t_data:.0f}s: {len(tr.captions)} train, {len(va.captions)} val, "
        f"{len(te.captions)} test videos; bf16 autocast: {amp}")

    tokenizer = build_tokenizer()
    clip = build_clip(tokenizer, size=args.size, width=args.width, layers=args.layers,
                      heads=args.heads, text_width=args.text_width,
                      text_layers=args.text_layers, proj=args.proj)
    model = ClipVideoModel(clip, tokenizer, {"mean": CLIP_MEAN, "std": CLIP_STD},
                           schedule=args.schedule, model_id="tiny-clip (training)")
    model.train()
    n_params = sum(p.numel() for p in clip.parameters())
    log(f"model: {n_params / 1e6:.2f}M parameters; vision {args.layers}x{args.width} "
        f"@{args.size}px/16, text {args.text_layers}x{args.text_width}, proj {args.proj}; "
        f"MACs/window off {model.accounting('off').total_macs / 1e9:.2f}G, "
        f"{args.schedule} {model.accounting(args.schedule).total_macs / 1e9:.2f}G")

    decay = [p for n, p in clip.named_parameters() if p.dim() >= 2 and "embedding" not in n]
    no_decay = [p for n, p in clip.named_parameters() if not (p.dim() >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-6)

    t_train = time.time()
    # PyTorch's fused CPU attention kernel is slower than the plain math path for these short
    # sequences (50-150 tokens): same numerics up to rounding, about 25% less time per step.
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        history = _train_loop(args, model, clip, tokenizer, opt, tr, va, rng, amp, t_train)
    train_s = time.time() - t_train

    model.eval()
    final = {}
    for name, split in (("val", va), ("test", te)):
        for sched in ("off", "default", "fast"):
            final[f"{name}/{sched}"] = evaluate(model, split, sched, amp=False)
    for k, m in final.items():
        log(f"final {k:13s} R@1 {m['r1']:5.1f}  R@5 {m['r5']:5.1f}  R@10 {m['r10']:5.1f}  "
            f"medR {m['medr']:.1f}  (chance R@1 {chance_r_at_k(m['n'], 1):.2f})")
    total_s = time.time() - t_start

    info = dict(args=vars(args), seconds_data=t_data, seconds_train=train_s,
                seconds_total=total_s, n_params=n_params, final=final, history=history,
                amp=amp, torch=torch.__version__, machine=platform.machine(),
                cpu=cpu_name(), threads=args.threads)
    size = save_model(clip, tokenizer, args.out, CLIP_MEAN, CLIP_STD, training_md(info))
    # The size goes into TRAINING.md too: rewrite it once it is known.
    info["bytes"] = size
    (Path(args.out) / "TRAINING.md").write_text(training_md(info))
    log(f"saved {args.out} ({size / 1e6:.1f} MB) in {total_s / 60:.1f} min total "
        f"({train_s / 60:.1f} min training)")
    return info


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def training_md(info: dict) -> str:
    a = info["args"]
    cmd = "python -m pystream.synthetic.train " + " ".join(shlex.quote(x) for x in a["argv"])
    rows = "\n".join(
        f"| {k.split('/')[0]} | {k.split('/')[1]} | {m['r1']:.1f} | {m['r5']:.1f} | "
        f"{m['r10']:.1f} | {m['medr']:.1f} | {m['n']} |"
        for k, m in info["final"].items())
    hist = "\n".join(f"| {h['step']} | {h['r1']:.1f} | {h['r5']:.1f} | {h['medr']:.1f} |"
                     for h in info["history"]) or "| - | - | - | - |"
    size = f"{info['bytes'] / 1e6:.1f} MB" if "bytes" in info else "(see directory)"
    return f"""# tiny-clip: pystream's shipped offline model

A small CLIP (Hugging Face `CLIPModel`, {info['n_params'] / 1e6:.2f}M parameters, {size} on disk,
fp32 safetensors) trained from scratch by `pystream/synthetic/train.py` on pystream.synthetic
videos only.
It knows colours, five shapes, two sizes and the synthetic events; it knows nothing about real
video. On a machine with internet use a real CLIP (`openai/clip-vit-base-patch32`).

## Reproduce

```
{cmd}
```

- seed: {a['seed']} (data, initialisation, batch order and paraphrase choice)
- data: pystream.synthetic, {a['n_train']} train / {a['n_val']} val / {a['n_test']} test videos,
  {a['size']}x{a['size']} px, H.264 at 4 fps, decoded with pystream.decode at {FPS:g} fps,
  {FRAMES} frames per video; test = the held-out (shape, event) pairs only
- model: vision {a['layers']} layers x {a['width']} wide, {a['heads']} heads, {a['size']} px,
  patch 16 (49 patches + CLS); text {a['text_layers']} layers x {a['text_width']}, word-level
  tokenizer (pystream/model/tokenizer.py); projection {a['proj']}
- training: symmetric InfoNCE, learnable logit scale, a random caption paraphrase per sample,
  AdamW lr {a['lr']:g} (warmup {a['warmup']}, one cosine over both phases), weight decay
  {a['weight_decay']:g}, bf16 autocast: {info['amp']}
  1. {a['frame_steps']} steps x {a['frame_batch']} single frames (a random frame of each video,
     per-frame CLIP): image-text pretraining; {100 * a.get('position_captions', 0):.0f}% of
     the captions (where the object is visible) say where it is in that frame ("a red circle
     in the top left") instead of what the video shows, each with the same words naming
     another cell as an extra negative text and in a pairwise term (weight
     {a.get('position_weight', 0):g}), so the image embedding carries position, which
     a direction is a change of
  2. {a['steps']} steps x {a['batch']} 12-frame videos through TempMe schedule `{a['schedule']}`,
     merging in the loop (gradients through the merges)
- machine: {info['cpu']}, {info['threads']} threads, torch {info['torch']}
- time: data {info['seconds_data'] / 60:.1f} min, training {info['seconds_train'] / 60:.1f} min,
  total with final evaluation {info['seconds_total'] / 60:.1f} min

Results are deterministic for a given machine and thread count; another CPU (or bf16 kernels
vs fp32) gives a slightly different model of the same quality.

## Final metrics (fp32, text-to-video, one query per video, ties count against)

| split | schedule | R@1 | R@5 | R@10 | median rank | videos |
|---|---|---|---|---|---|---|
{rows}

`off` is per-frame CLIP with mean pooling (same weights, no merging). Chance R@1 on n videos
is 100/n percent. Benchmark: `python benchmarks/quality.py`.

## Validation during training (bf16 when enabled)

| step | R@1 | R@5 | median rank |
|---|---|---|---|
{hist}
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m pystream.synthetic.train",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="dataset directory (default: a cache dir per settings)")
    p.add_argument("--n-train", type=int, default=3000)
    p.add_argument("--n-val", type=int, default=200)
    p.add_argument("--n-test", type=int, default=300)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--text-width", type=int, default=128)
    p.add_argument("--text-layers", type=int, default=3)
    p.add_argument("--proj", type=int, default=128)
    p.add_argument("--schedule", default="default", help="TempMe preset used in training")
    p.add_argument("--steps", type=int, default=300, help="video steps (TempMe, 12 frames)")
    p.add_argument("--batch", type=int, default=32, help="videos per video step")
    p.add_argument("--frame-steps", type=int, default=1200,
                   help="single-frame steps before the video steps (image-text pretraining)")
    p.add_argument("--frame-batch", type=int, default=128, help="frames per frame step")
    p.add_argument("--position-captions", type=float, default=0.5,
                   help="share of frame-step captions that say where the object is in that "
                        "frame (so the image embedding carries position; 0: video captions only)")
    p.add_argument("--position-weight", type=float, default=1.0,
                   help="weight of the pairwise term: a frame's position caption vs the same "
                        "words naming another cell")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads, and processes for data generation/decoding")
    p.add_argument("--amp", choices=("auto", "bf16", "fp32"), default="auto")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--progress", action="store_true", help="progress bars for data preparation")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.argv = argv  # recorded in TRAINING.md as the command that made the model
    return args


def main(argv=None) -> int:
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
