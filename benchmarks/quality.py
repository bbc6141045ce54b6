"""Text-to-video search quality on the synthetic benchmark's test split, and its cost.

    python benchmarks/quality.py                      # the shipped model, 300 test videos
    python benchmarks/quality.py --model DIR --n-test 600

The test split (pystream.synthetic.videos, held-out shape-event pairs never seen in training) is
generated and encoded as H.264 files, decoded with pystream.decode at 1 fps (12 frames per
video), and embedded by each mode:

    per-frame       every frame through all layers, no merging, mean of the frames (schedule off)
    tempme          offline TempMe, schedule default (ClipVideoModel.encode_video)
    tempme-stream   the streaming encoder: each video is its own stream, fed in 4-frame chunks
                    (all videos' j-th chunks in one batched call), then finish(); the level-0
                    window embedding is the video's embedding
    fast, fast-stream   the same two with the fast preset

Queries: each test video's canonical caption, one query per video; the match is that video.
Ranks count ties against the query (rank = 1 + number of other videos scoring >= the match),
so equal scores never help. R@k in percent; chance R@1 is 100 / n.

MACs: multiply-adds of the vision tower per 12-frame window (model.accounting(schedule)), and,
for the streaming modes, per emitted window in steady state with a one-chunk hop
(schedule.streaming_window_macs). mac_ratio = per-frame MACs / TempMe (default) MACs.

How a mode turns frames into embeddings is one function in EMBEDDERS (name -> fn(model,
frames uint8 [V, 12, S, S, 3], schedule) -> [V, D] L2-normalised), so a daemon path (index
the videos through the pipeline, read the vectors back) plugs in as one more entry.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pystream.model.schedule import schedule_from_config, streaming_window_macs  # noqa: E402
from pystream.model.tempme import ClipVideoModel  # noqa: E402
from pystream.synthetic.metrics import chance_r_at_k, retrieval_metrics  # noqa: E402
from pystream.synthetic.train import (FPS, default_data_dir, encode_videos,  # noqa: E402
                                      load_split, prepare_data)


# ----------------------------------------------------------------------------- embedders


def offline_embeddings(model: ClipVideoModel, frames: torch.Tensor, schedule: str,
                       batch: int = 32) -> torch.Tensor:
    """ClipVideoModel.encode_video on whole 12-frame videos (per-frame CLIP when 'off')."""
    return encode_videos(model, frames, schedule, batch=batch)


@torch.no_grad()
def stream_embeddings(model: ClipVideoModel, frames: torch.Tensor, schedule: str,
                      batch: int = 32) -> torch.Tensor:
    """Each video is a stream through pystream.model.streaming.StreamingEncoder: its 4-frame
    chunks are pushed in order (the j-th chunks of ``batch`` streams in one call), then
    ``finish``; the one level-0 window of each stream is its embedding."""
    from pystream.model.streaming import Chunk, StreamingEncoder

    V, Fn = frames.shape[:2]
    out = torch.empty(V, model.dim)
    got = np.zeros(V, bool)
    for b0 in range(0, V, batch):
        enc = StreamingEncoder(model, schedule=schedule, coarse_windows=0)
        k = enc.chunk_frames
        if Fn % k:
            raise ValueError(f"{Fn} frames do not split into chunks of {k}")
        ids = range(b0, min(b0 + batch, V))
        emitted = []
        for first in range(0, Fn, k):
            emitted += enc.encode([
                Chunk(f"v{i}", frames[i, first: first + k],
                      [(first + j) / FPS for j in range(k)], first, 1.0 / FPS)
                for i in ids])
        for i in ids:
            emitted += enc.finish(f"v{i}")
        for e in emitted:
            if e.level != 0:
                continue
            i = int(e.stream[1:])
            if got[i]:
                raise RuntimeError(f"stream {e.stream} emitted more than one window")
            if (e.first_frame, e.last_frame) != (0, Fn - 1):
                raise RuntimeError(f"stream {e.stream}: window covers frames "
                                   f"{e.first_frame}-{e.last_frame}, expected 0-{Fn - 1}")
            out[i] = torch.from_numpy(e.vector)
            got[i] = True
    if not got.all():
        raise RuntimeError(f"{int((~got).sum())} streams emitted no window")
    return F.normalize(out, dim=-1)


EMBEDDERS: Dict[str, Callable] = {"offline": offline_embeddings, "stream": stream_embeddings}

# (row name, schedule preset, embedder)
MODES = [
    ("per-frame", "off", "offline"),
    ("tempme", "default", "offline"),
    ("tempme-stream", "default", "stream"),
    ("fast", "fast", "offline"),
    ("fast-stream", "fast", "stream"),
]


# ----------------------------------------------------------------------------- benchmark


def macs_per_window(model: ClipVideoModel, schedule: str, embedder: str) -> int:
    acc = model.accounting(schedule)
    if embedder == "stream":
        return streaming_window_macs(acc, schedule_from_config(schedule), len(model.layers))
    return acc.total_macs


def run(model: ClipVideoModel, frames: torch.Tensor, captions: List[str], modes=MODES,
        batch: int = 32, log=print) -> List[dict]:
    """Metrics and costs of every mode on one set of (video, caption) pairs."""
    with torch.no_grad():
        text = F.normalize(model.encode_text(captions).float(), dim=-1)
    rows = []
    for name, schedule, embedder in modes:
        t0 = time.perf_counter()
        vids = EMBEDDERS[embedder](model, frames, schedule, batch=batch)
        secs = time.perf_counter() - t0
        m = retrieval_metrics(text, vids)
        rows.append(dict(mode=name, schedule=schedule, path=embedder, **m,
                         macs=model.accounting(schedule).total_macs,
                         macs_stream=macs_per_window(model, schedule, "stream"),
                         seconds=secs, videos_per_s=len(frames) / secs))
        log(f"  {name:14s} R@1 {m['r1']:5.1f}  ({secs:.1f}s)")
    return rows


def oracle_r1(labels: List[dict], captions: List[str], order_blind: bool = False) -> float:
    """Expected R@1 (percent, approximate) of an oracle that knows every video's label but, like any model,
    can only use what the caption says: videos whose labels fit the query's caption equally
    well are tied and ranked at random (shape, colours, event, direction, second object; size
    only when the caption names it; distractors and positions are never captioned). With
    ``order_blind`` it also cannot tell a video from its time reverse (left = right, up = down,
    appear = disappear, red->blue = blue->red), like an encoder without temporal embeddings."""
    from pystream.synthetic import vocabulary as synth

    size_words = {w for ws in synth.SIZE_WORDS.values() for w in ws}

    def key(lab):
        ev, d, cols = lab["event"], lab["direction"], (lab["colour"], lab["colour_to"])
        if order_blind:
            if ev == "move":
                d = "horizontal" if d in ("left", "right") else "vertical"
            if ev in ("appear", "disappear"):
                ev = "appear/disappear"
            if ev == "change_colour":
                cols = tuple(sorted(cols))
        return ev, lab["shape"], cols, d, lab["shape2"], lab["colour2"], lab["size2"]

    keys = [key(lab) for lab in labels]
    out = []
    for lab, cap, k in zip(labels, captions, keys):
        named = bool(size_words & set(cap.lower().split()))
        tied = sum(1 for l2, k2 in zip(labels, keys)
                   if k2 == k and (not named or l2["size"] == lab["size"]))
        out.append(1.0 / tied)
    return 100.0 * float(np.mean(out))


def reversal_similarity(model: ClipVideoModel, frames: torch.Tensor, schedule: str,
                        batch: int = 32) -> float:
    """Mean cosine between each video's embedding and its time-reversed copy's. Near 1 means
    the encoder cannot tell a video from its reverse (moves left vs right, appears vs
    disappears): per-frame mean pooling is exactly order-blind, and TempMe's 2-2-3 grouping
    maps onto itself under reversal, so without temporal embeddings it is nearly so too."""
    a = offline_embeddings(model, frames, schedule, batch)
    b = offline_embeddings(model, frames.flip(1), schedule, batch)
    return float((a * b).sum(-1).mean())


def format_table(rows: List[dict], n: int, oracle: tuple = ()) -> str:
    off = next(r for r in rows if r["schedule"] == "off")
    head = (f"{'mode':14s} {'schedule':8s} {'path':7s} {'R@1':>6s} {'R@5':>6s} {'R@10':>6s} "
            f"{'MdR':>6s} {'GMACs/win':>9s} {'stream':>7s} {'x fewer':>7s} {'videos/s':>8s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        key = "macs_stream" if r["path"] == "stream" else "macs"
        lines.append(
            f"{r['mode']:14s} {r['schedule']:8s} {r['path']:7s} {r['r1']:6.1f} {r['r5']:6.1f} "
            f"{r['r10']:6.1f} {r['medr']:6.1f} {r['macs'] / 1e9:9.3f} {r['macs_stream'] / 1e9:7.3f} "
            f"{off[key] / r[key]:7.2f} {r['videos_per_s']:8.1f}")
    lines.append(f"{n} test videos, one caption query each; chance R@1 {chance_r_at_k(n, 1):.2f}, "
                 f"R@5 {chance_r_at_k(n, 5):.2f}, R@10 {chance_r_at_k(n, 10):.2f}, "
                 f"median rank {(n + 1) / 2:.1f}")
    if oracle:
        lines.append(f"label oracle R@1 (ties among videos the caption cannot tell apart): "
                     f"{oracle[0]:.1f} time-aware, {oracle[1]:.1f} order-blind")
    lines.append("GMACs/win: vision tower per 12-frame window offline; stream: per emitted window "
                 "in steady state (one-chunk hop);\nx fewer: per-frame MACs / this row's MACs, "
                 "on the same path (offline rows: offline; stream rows: steady-state stream)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="shipped", help="'shipped', a hub id or a model directory")
    p.add_argument("--seed", type=int, default=0, help="dataset seed")
    p.add_argument("--n-test", type=int, default=300)
    p.add_argument("--data", default=None, help="dataset directory (default: a cache dir)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--reversal", action="store_true",
                   help="also report how similar each video's embedding is to its reverse's")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    model = ClipVideoModel.from_pretrained(args.model)
    size = model.image_size
    data = Path(args.data) if args.data else default_data_dir(args.seed, 0, 0, args.n_test, size)
    t0 = time.perf_counter()
    manifest = prepare_data(data, 0, 0, args.n_test, args.seed, size, progress=False)
    split = load_split(data, manifest, "test", size)
    print(f"model {args.model}; {len(split.captions)} test videos from {data} "
          f"(decoded at {FPS:g} fps, {size}px) in {time.perf_counter() - t0:.0f}s")
    rows = run(model, split.frames, split.captions, batch=args.batch)
    print()
    oracle = (oracle_r1(split.labels, split.captions),
              oracle_r1(split.labels, split.captions, order_blind=True))
    print(format_table(rows, len(split.captions), oracle))
    by = {r["mode"]: r for r in rows}
    if args.reversal:
        print()
        for sched in ("off", "default", "fast"):
            print(f"cos(video, reversed video), schedule {sched}: "
                  f"{reversal_similarity(model, split.frames, sched, args.batch):.4f}")
    result = {
        "model": args.model, "n_test": len(split.captions), "seed": args.seed, "rows": rows,
        "r1_perframe": by["per-frame"]["r1"], "r1_tempme": by["tempme"]["r1"],
        "r1_stream": by["tempme-stream"]["r1"],
        "mac_ratio": by["per-frame"]["macs"] / by["tempme"]["macs"],
        "oracle_r1": oracle[0], "oracle_r1_order_blind": oracle[1],
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print()
    print(f"r1_perframe={result['r1_perframe']:.2f}")
    print(f"r1_tempme={result['r1_tempme']:.2f}")
    print(f"r1_stream={result['r1_stream']:.2f}")
    print(f"mac_ratio={result['mac_ratio']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
