"""Text-to-video search quality on the synthetic benchmark's test split, and its cost.

    python benchmarks/quality.py          # shipped (training-free rows) + shipped-tempme (ft-*
                                          # rows); seeds 0,1,2 x 300 test videos x 4 paraphrase
                                          # queries each (1200 queries per seed)
    python benchmarks/quality.py --seeds 0 --queries canonical   # one seed, one query a video
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
    ft-*            the same modes on the fine-tuned model (--model, default shipped-tempme:
                    tiny-clip + its TempMe adapter, LoRA on q/k/v and temporal embeddings, see
                    pystream/model/adapter.py); the rows above run on --baseline (shipped: the
                    same checkpoint, training-free)

Direction test (--model and --baseline, TempMe default, offline): each query of a video whose
object moves (events move and stop) is scored against its own video and against the same video
played backwards; the share where its own video scores strictly higher (a tie counts as wrong).
A per-frame mean is exactly order-blind (50% means guessing is impossible: ties are wrong, so it
scores 0). The same test is reported for appear / disappear and colour-change videos.

Queries: every paraphrase of each test video's caption (--queries paraphrases, the default:
4 per video), or only its canonical caption (--queries canonical); the match is that video.
Every figure is reported per dataset seed and over the seeds (mean, min - max, sd), so its
noise is printed beside it.
Ranks count ties against the query (rank = 1 + number of other videos scoring >= the match),
so equal scores never help. R@k in percent; chance R@1 is 100 / n.

MACs: multiply-adds of the vision tower per 12-frame window (model.accounting(schedule)), and,
for the streaming modes, per emitted window in steady state with a one-chunk hop
(schedule.streaming_window_macs). mac_ratio = per-frame MACs / TempMe (default) MACs on one
12-frame window; mac_ratio_stream = the same per emitted window when streaming (steady state).

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

from pystream import synth  # noqa: E402
from pystream.synthetic.videos import N_PARAPHRASES  # noqa: E402
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
                      batch: int = 32, **encoder_kw) -> torch.Tensor:
    """Each video is a stream through pystream.model.streaming.StreamingEncoder: its 4-frame
    chunks are pushed in order (the j-th chunks of ``batch`` streams in one call), then
    ``finish``; the one level-0 window of each stream is its embedding."""
    from pystream.model.streaming import Chunk, StreamingEncoder

    V, Fn = frames.shape[:2]
    out = torch.empty(V, model.dim)
    got = np.zeros(V, bool)
    for b0 in range(0, V, batch):
        enc = StreamingEncoder(model, schedule=schedule, coarse_windows=0, **encoder_kw)
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


def stream_config_embeddings(model: ClipVideoModel, frames: torch.Tensor, schedule: str,
                             batch: int = 32) -> torch.Tensor:
    """The streaming encoder with config/default.yaml's precision and static-patch reuse."""
    from pystream.config import load_config

    cfg = load_config(None)
    return stream_embeddings(model, frames, schedule, batch, precision=cfg.precision,
                             reuse=cfg.reuse.settings())


EMBEDDERS: Dict[str, Callable] = {"offline": offline_embeddings, "stream": stream_embeddings,
                                  "stream-config": stream_config_embeddings}

# Rows of the fine-tuned model (same paths; MACs are the base model's: LoRA is merged into the
# weights and the temporal embeddings are one add per ClipMe layer).
FT_MODES = [
    ("ft-per-frame", "off", "offline"),
    ("ft-tempme", "default", "offline"),
    ("ft-tempme-stream", "default", "stream"),
    ("ft-default-config-stream", "default", "stream-config"),
    ("ft-fast", "fast", "offline"),
]
REVERSAL_EVENTS = {"direction": ("move", "stop"), "appear_disappear": ("appear", "disappear"),
                   "colour_change": ("change_colour",)}

# (row name, schedule preset, embedder)
MODES = [
    ("per-frame", "off", "offline"),
    ("tempme", "default", "offline"),
    ("tempme-stream", "default", "stream"),
    ("default-config-stream", "default", "stream-config"),  # precision auto + reuse (defaults)
    ("fast", "fast", "offline"),
    ("fast-stream", "fast", "stream"),
]


# ----------------------------------------------------------------------------- benchmark


def macs_per_window(model: ClipVideoModel, schedule: str, embedder: str) -> int:
    acc = model.accounting(schedule)
    if embedder.startswith("stream"):
        return streaming_window_macs(acc, schedule_from_config(schedule), len(model.layers))
    return acc.total_macs


def query_metrics(text_emb: torch.Tensor, video_emb: torch.Tensor,
                  targets: List[int] | None = None) -> dict:
    """Text-to-video R@1/5/10 (percent) and median rank; query q matches video targets[q]
    (default q). Ties count against the query, as in pystream.train.retrieval_metrics."""
    if targets is None:
        return retrieval_metrics(text_emb, video_emb)
    sim = text_emb.double() @ video_emb.double().T
    t = torch.as_tensor(targets)
    pos = sim[torch.arange(len(t)), t][:, None]
    ranks = (sim >= pos).sum(dim=1).double()  # 1 + others scoring >= the match
    return {"r1": 100.0 * float((ranks <= 1).double().mean()),
            "r5": 100.0 * float((ranks <= 5).double().mean()),
            "r10": 100.0 * float((ranks <= 10).double().mean()),
            "medr": float(np.median(ranks.numpy())), "n": len(t)}


def run(model: ClipVideoModel, frames: torch.Tensor, captions: List[str], modes=MODES,
        batch: int = 32, log=print, targets: List[int] | None = None) -> List[dict]:
    """Metrics and costs of every mode on one set of videos and caption queries (query q
    matches video targets[q]; default: one caption per video, q matches video q)."""
    with torch.no_grad():
        text = F.normalize(model.encode_text(captions).float(), dim=-1)
    rows = []
    for name, schedule, embedder in modes:
        t0 = time.perf_counter()
        vids = EMBEDDERS[embedder](model, frames, schedule, batch=batch)
        secs = time.perf_counter() - t0
        m = query_metrics(text, vids, targets)
        rows.append(dict(mode=name, schedule=schedule, path=embedder, **m,
                         macs=model.accounting(schedule).total_macs,
                         macs_stream=macs_per_window(model, schedule, "stream"),
                         seconds=secs, videos_per_s=len(frames) / secs))
        log(f"  {name:14s} R@1 {m['r1']:5.1f}  ({secs:.1f}s)")
    return rows


_SIZE_OF = {w: size for size, ws in synth.SIZE_WORDS.items() for w in ws}
_DIR_OF = {"left": "left", "leftward": "left", "right": "right", "rightward": "right",
           "up": "up", "upward": "up", "top": "up", "down": "down", "downward": "down",
           "bottom": "down"}
_SHAPE_OF = {ph.split()[0]: shape for shape, ps in synth.NOUNS.items() for ph in ps}


def caption_facts(caption: str, event: str) -> dict:
    """What a caption states, read from its words (the event from its template, given):
    the captioned objects as (shape, colour, size or None when no size word is attached to
    that object), the direction (None when no direction word: "stops moving", any crossing)
    and the colour changed to. Distractors, positions, speeds and timing are never stated."""
    words = caption.lower().replace(".", "").split()
    cpos = [i for i, w in enumerate(words) if w in synth.COLOURS]
    if event == "cross":  # two noun phrases "[size] colour noun"; the order says nothing
        objs = []
        for i in cpos[:2]:
            size = _SIZE_OF.get(words[i - 1]) if i > 0 else None
            objs.append((_SHAPE_OF[words[i + 1]], words[i], size))
        return {"event": event, "objects": objs, "direction": None, "colour_to": None}
    sizes = [_SIZE_OF[w] for w in words if w in _SIZE_OF]
    shape = next(_SHAPE_OF[w] for w in words if w in _SHAPE_OF)
    colour_to = words[cpos[-1]] if event == "change_colour" else None
    dirs = [_DIR_OF[w] for w in words if w in _DIR_OF] if event in ("move", "stop") else []
    return {"event": event, "objects": [(shape, words[cpos[0]], sizes[0] if sizes else None)],
            "direction": dirs[0] if dirs else None, "colour_to": colour_to}


def _fits(facts: dict, lab: dict, order_blind: bool) -> bool:
    """Does a video with label ``lab`` show everything the caption states?"""
    ev, fev = lab["event"], facts["event"]
    if order_blind and {ev, fev} <= {"appear", "disappear"}:
        pass  # a video and its time reverse look alike to an order-blind encoder
    elif ev != fev:
        return False

    def obj_ok(o, shape, colour, size):
        return o[0] == shape and o[1] == colour and (o[2] is None or o[2] == size)

    main = (lab["shape"], lab["colour"], lab["size"])
    if fev == "cross":
        second = (lab["shape2"], lab["colour2"], lab["size2"])
        a, b = facts["objects"]
        if not ((obj_ok(a, *main) and obj_ok(b, *second)) or
                (obj_ok(a, *second) and obj_ok(b, *main))):
            return False
    elif fev == "change_colour":
        shape, colour, size = facts["objects"][0]
        if shape != lab["shape"] or (size is not None and size != lab["size"]):
            return False
        said, has = (colour, facts["colour_to"]), (lab["colour"], lab["colour_to"])
        if (sorted(said) != sorted(has)) if order_blind else (said != has):
            return False
    elif not obj_ok(facts["objects"][0], *main):
        return False
    d = facts["direction"]
    if d is not None and d != lab["direction"]:
        axis = {"left": "h", "right": "h", "up": "v", "down": "v"}
        if not (order_blind and fev == "move" and axis[d] == axis[lab["direction"]]):
            return False
    return True


def oracle_r1(labels: List[dict], captions: List[str], order_blind: bool = False,
              targets: List[int] | None = None) -> float:
    """Expected R@1 (percent) of an oracle that knows every video's label but, like any model,
    can only use what the caption says: the videos that show everything the query's caption
    states (caption_facts) are tied and ranked at random. Query q's match is video
    ``targets[q]`` (default: video q). With ``order_blind`` it also cannot tell a video from
    its time reverse (left = right, up = down, appear = disappear, red->blue = blue->red), like
    an encoder without temporal embeddings."""
    targets = list(range(len(captions))) if targets is None else list(targets)
    out = []
    for cap, t in zip(captions, targets):
        facts = caption_facts(cap, labels[t]["event"])
        if not _fits(facts, labels[t], order_blind):
            raise ValueError(f"caption {cap!r} does not fit its own video's label {labels[t]}")
        tied = sum(1 for lab in labels if _fits(facts, lab, order_blind))
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


@torch.no_grad()
def reversal_test(model: ClipVideoModel, frames: torch.Tensor, labels: List[dict],
                  captions: List[str], targets: List[int], schedule: str = "default",
                  batch: int = 32) -> dict:
    """For each group of REVERSAL_EVENTS: (queries whose own video outscores its time reverse,
    queries) over the queries of videos with those events (ties count as wrong)."""
    fwd = offline_embeddings(model, frames, schedule, batch)
    rev = offline_embeddings(model, frames.flip(1), schedule, batch)
    text = F.normalize(model.encode_text(captions).float(), dim=-1)
    t = torch.as_tensor(targets)
    s_fwd = (text.double() * fwd[t].double()).sum(-1)
    s_rev = (text.double() * rev[t].double()).sum(-1)
    out = {}
    for name, events in REVERSAL_EVENTS.items():
        sel = torch.as_tensor([labels[i]["event"] in events for i in targets])
        out[name] = (int((s_fwd > s_rev)[sel].sum()), int(sel.sum()))
    return out


def format_table(rows: List[dict], n: int, oracle: tuple = (),
                 queries: str = "one caption query each") -> str:
    off = next(r for r in rows if r["schedule"] == "off")
    head = (f"{'mode':14s} {'schedule':8s} {'path':7s} {'R@1':>6s} {'R@5':>6s} {'R@10':>6s} "
            f"{'MdR':>6s} {'GMACs/win':>9s} {'stream':>7s} {'x fewer':>7s} {'videos/s':>8s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        key = "macs_stream" if r["path"].startswith("stream") else "macs"
        lines.append(
            f"{r['mode']:14s} {r['schedule']:8s} {r['path']:7s} {r['r1']:6.1f} {r['r5']:6.1f} "
            f"{r['r10']:6.1f} {r['medr']:6.1f} {r['macs'] / 1e9:9.3f} {r['macs_stream'] / 1e9:7.3f} "
            f"{off[key] / r[key]:7.2f} {r['videos_per_s']:8.1f}")
    lines.append(f"{n} test videos, {queries}; chance R@1 {chance_r_at_k(n, 1):.2f}, "
                 f"R@5 {chance_r_at_k(n, 5):.2f}, R@10 {chance_r_at_k(n, 10):.2f}, "
                 f"median rank {(n + 1) / 2:.1f}")
    if oracle:
        lines.append(f"label oracle R@1 (ties among videos the caption cannot tell apart): "
                     f"{oracle[0]:.1f} time-aware, {oracle[1]:.1f} order-blind")
    lines.append("GMACs/win: vision tower per 12-frame window offline; stream: per emitted window "
                 "in steady state (one-chunk hop);\nx fewer: per-frame MACs / this row's MACs, "
                 "on the same path (offline rows: offline; stream rows: steady-state stream)")
    return "\n".join(lines)


def _spread(values: List[float]) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()),
            "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "values": [float(x) for x in v]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="shipped-tempme",
                   help="'shipped-tempme' (tiny-clip + its TempMe adapter), 'shipped', a hub id, a "
                        "model or adapter directory; with an adapter its rows are the ft-* ones")
    p.add_argument("--baseline", default="shipped",
                   help="the training-free model of the per-frame/tempme/fast rows when --model "
                        "has an adapter ('' to skip)")
    p.add_argument("--seeds", default="0,1,2",
                   help="dataset seeds, comma separated; figures are given over all of them "
                        "(mean, min-max, sd)")
    p.add_argument("--seed", type=int, default=None, help="one dataset seed (= --seeds N)")
    p.add_argument("--n-test", type=int, default=300, help="test videos per seed")
    p.add_argument("--queries", choices=("paraphrases", "canonical"), default="paraphrases",
                   help="paraphrases: every caption paraphrase of a video is a query "
                        f"({N_PARAPHRASES} per video); canonical: one caption per video")
    p.add_argument("--data", default=None,
                   help="dataset directory (default: a cache dir per seed; one seed only)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--reversal", action="store_true",
                   help="also report how similar each video's embedding is to its reverse's")
    args = p.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else [int(x) for x in args.seeds.split(",")]
    if args.data and len(seeds) > 1:
        p.error("--data holds one dataset: give one seed")

    torch.set_num_threads(args.threads)
    model = ClipVideoModel.from_pretrained(args.model)
    tuned = getattr(model, "adapter_dir", None) is not None
    base = ClipVideoModel.from_pretrained(args.baseline) if (tuned and args.baseline) else None
    if tuned and base is None:
        raise SystemExit("--baseline '' with a fine-tuned --model: the table needs the per-frame "
                         "baseline row")
    runs = [(base, MODES), (model, FT_MODES)] if tuned else [(model, MODES)]
    size = model.image_size
    per_seed = []
    for seed in seeds:
        data = Path(args.data) if args.data else default_data_dir(seed, 0, 0, args.n_test, size)
        t0 = time.perf_counter()
        manifest = prepare_data(data, 0, 0, args.n_test, seed, size, progress=False)
        split = load_split(data, manifest, "test", size)
        if args.queries == "paraphrases":
            captions = [c for ps in split.paraphrases for c in ps]
            targets = [i for i, ps in enumerate(split.paraphrases) for _ in ps]
        else:
            captions, targets = list(split.captions), list(range(len(split.captions)))
        n = len(split.captions)
        qdesc = (f"{len(captions)} queries ({args.queries}: "
                 f"{len(captions) / n:g} per video)")
        print(f"model {args.model}; seed {seed}: {n} test videos from {data} "
              f"(decoded at {FPS:g} fps, {size}px) in {time.perf_counter() - t0:.0f}s; {qdesc}")
        rows = []
        for m_, modes_ in runs:
            rows += run(m_, split.frames, captions, modes=modes_, batch=args.batch,
                        targets=targets)
        reversal = {}
        for tag, m_ in (("base", base if tuned else model), ("ft", model if tuned else None)):
            if m_ is not None:
                reversal[tag] = reversal_test(m_, split.frames, split.labels, captions, targets,
                                              batch=args.batch)
        print()
        oracle = (oracle_r1(split.labels, captions, targets=targets),
                  oracle_r1(split.labels, captions, order_blind=True, targets=targets))
        print(format_table(rows, n, oracle, queries=qdesc))
        for tag, rv in reversal.items():
            print(f"reversal test ({'fine-tuned' if tag == 'ft' else 'training-free'}, tempme "
                  "offline; own video outscores its time reverse): " + ", ".join(
                      f"{k} {100 * a / max(b, 1):.1f}% of {b}" for k, (a, b) in rv.items()))
        if args.reversal:
            print()
            for sched in ("off", "default", "fast"):
                print(f"cos(video, reversed video), schedule {sched}: "
                      f"{reversal_similarity(model, split.frames, sched, args.batch):.4f}")
        print()
        per_seed.append({"seed": seed, "n_test": n, "n_queries": len(captions), "rows": rows,
                         "oracle_r1": oracle[0], "oracle_r1_order_blind": oracle[1],
                         "reversal": reversal})

    modes = [r["mode"] for r in per_seed[0]["rows"]]
    summary = {m: {k: _spread([next(r for r in ps["rows"] if r["mode"] == m)[k]
                               for ps in per_seed]) for k in ("r1", "r5", "r10", "medr")}
               for m in modes}
    oracle_s = _spread([ps["oracle_r1"] for ps in per_seed])
    oracle_b = _spread([ps["oracle_r1_order_blind"] for ps in per_seed])
    nq = sum(ps["n_queries"] for ps in per_seed)
    print(f"over {len(seeds)} dataset seed(s) {seeds}, {per_seed[0]['n_test']} videos and "
          f"{per_seed[0]['n_queries']} queries each ({nq} queries in all): R@1 mean "
          f"[min - max] sd")
    for m in modes:
        r = summary[m]["r1"]
        print(f"  {m:14s} {r['mean']:5.1f} [{r['min']:5.1f} - {r['max']:5.1f}] sd {r['sd']:.1f}   "
              f"(per seed: {', '.join(f'{x:.1f}' for x in r['values'])})")
    print(f"  {'label oracle':14s} {oracle_s['mean']:5.1f} [{oracle_s['min']:5.1f} - "
          f"{oracle_s['max']:5.1f}] time-aware; {oracle_b['mean']:.1f} "
          f"[{oracle_b['min']:.1f} - {oracle_b['max']:.1f}] order-blind")
    by = {r["mode"]: r for r in per_seed[0]["rows"]}  # MACs do not depend on the data
    macs = {
        "mac_ratio": by["per-frame"]["macs"] / by["tempme"]["macs"],
        "mac_ratio_stream": by["per-frame"]["macs_stream"] / by["tempme-stream"]["macs_stream"],
        "mac_ratio_fast": by["per-frame"]["macs"] / by["fast"]["macs"],
        "mac_ratio_fast_stream": by["per-frame"]["macs_stream"] / by["fast-stream"]["macs_stream"],
    }
    if tuned:
        macs["mac_ratio_finetuned"] = by["per-frame"]["macs"] / by["ft-tempme"]["macs"]
        macs["mac_ratio_finetuned_stream"] = (by["per-frame"]["macs_stream"]
                                              / by["ft-tempme-stream"]["macs_stream"])
    reversal = {}
    for tag in per_seed[0]["reversal"]:
        for k in REVERSAL_EVENTS:
            a = sum(ps["reversal"][tag][k][0] for ps in per_seed)
            b = sum(ps["reversal"][tag][k][1] for ps in per_seed)
            reversal[f"{k}_acc" + ("" if tag == "ft" or not tuned else "_base")] = \
                (100.0 * a / max(b, 1), b)
    result = {"model": args.model, "baseline": args.baseline if tuned else None,
              "seeds": seeds, "queries": args.queries,
              "per_seed": per_seed, "summary": summary, "reversal": reversal,
              "oracle_r1": oracle_s, "oracle_r1_order_blind": oracle_b, **macs}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print()
    keys = {"per-frame": "r1_perframe", "tempme": "r1_tempme", "tempme-stream": "r1_stream",
            "default-config-stream": "r1_default_config_stream",
            "fast": "r1_fast", "fast-stream": "r1_fast_stream"}
    if tuned:
        keys.update({"ft-per-frame": "r1_finetuned_perframe", "ft-fast": "r1_finetuned_fast",
                     "ft-default-config-stream": "r1_finetuned_default_config_stream",
                     "ft-tempme": "r1_finetuned", "ft-tempme-stream": "r1_finetuned_stream"})
    for m, key in keys.items():
        r = summary[m]["r1"]
        print(f"{key}={r['mean']:.2f} (min {r['min']:.2f}, max {r['max']:.2f}, sd {r['sd']:.2f}, "
              f"{len(seeds)} seeds x {per_seed[0]['n_queries']} queries)")
    print(f"oracle_r1={oracle_s['mean']:.2f} (min {oracle_s['min']:.2f}, max {oracle_s['max']:.2f})")
    for k, v in macs.items():
        print(f"{k}={v:.3f}")
    if tuned:
        print(f"r1_ratio={summary['ft-tempme']['r1']['mean'] / summary['tempme']['r1']['mean']:.2f} "
              "(fine-tuned TempMe / training-free TempMe, same checkpoint)")
        gap = abs(summary["ft-tempme-stream"]["r1"]["mean"] - summary["ft-tempme"]["r1"]["mean"])
        print(f"stream_offline_gap={gap:.2f} (R@1 points)")
    for k, (v, b) in sorted(reversal.items()):
        if k != "direction_acc":
            print(f"{k}={v:.1f} ({b} queries)")
    if "direction_acc" in reversal:
        v, b = reversal["direction_acc"]
        print(f"direction_acc={v:.1f} ({b} queries on moving-object videos: own video vs its "
              "time reverse)")
    if tuned:
        for key in ("r1_finetuned", "r1_finetuned_stream"):
            m = {v: k for k, v in keys.items()}[key]
            print(f"{key}={summary[m]['r1']['mean']:.2f}")
    print(f"n_queries={nq}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
