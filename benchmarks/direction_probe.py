"""Does a model tell which way an object moves, and does it generalise? (issue 14)

    python benchmarks/direction_probe.py [--model shipped-tempme] [--split test|val|train]

On the synthetic move / stop clips whose captions name a direction, for one split (test: the
held-out seed-0 test set; val / train: the fine-tuning data set, first 400 clips):
- ``direction_acc``: share of captions whose own clip outscores the clip played backwards;
- the text side: cosine between a caption and its left/right (up/down) swapped twin;
- a split-half linear probe of (video - reversed video) for left vs right and up vs down: near
  50% means no general direction feature in the video embedding, whatever direction_acc says;
- ``--per-frame``: the same probe on the end-minus-start of per-frame CLS embeddings (does the
  image embedding carry position at all?).
A model that scores high on train and at chance on val / test memorises clips.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality import offline_embeddings  # noqa: E402
from pystream.model.tempme import ClipVideoModel  # noqa: E402
from pystream.synthetic.train import default_data_dir, load_split, prepare_data  # noqa: E402
from pystream.synthetic.vocabulary import opposite_direction  # noqa: E402



def split_half_probe(d: torch.Tensor) -> float:
    """Accuracy of sign(d_i . mean of the other half), both halves: d are signed differences."""
    n = len(d) // 2
    if n == 0:
        return float("nan")
    a = (d[n:] @ d[:n].mean(0) > 0).float().mean()
    b = (d[:n] @ d[n:].mean(0) > 0).float().mean()
    return float(100 * (a + b) / 2)


def probe_split(split: str, size: int, data=None, limit: int = 400):
    """The decoded clips a probe reads: the held-out seed-0 test set for 'test' (made if
    missing); for 'val' / 'train' the fine-tuning data set (``data``, default the shipped
    adapter's), first ``limit`` clips."""
    if split == "test":
        data = default_data_dir(0, 0, 0, 300, size)
        manifest = prepare_data(data, 0, 0, 300, 0, size, progress=False)
    else:
        data = Path(data).expanduser() if data else default_data_dir(0, 3000, 200, 300, size)
        if not (data / "manifest.json").exists():
            raise SystemExit(f"{data}: no synthetic data set (manifest.json) there; make it "
                             "with the first command of the adapter's TRAINING.md, or give --data")
        manifest = json.loads((data / "manifest.json").read_text())
    return load_split(data, manifest, split, size, limit=limit)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="shipped-tempme")
    p.add_argument("--split", choices=("test", "val", "train"), default="test")
    p.add_argument("--data", default=None,
                   help="the fine-tuning data set for --split val / train (default: the "
                        "shipped adapter's, pystream.synthetic.train.default_data_dir)")
    p.add_argument("--limit", type=int, default=400)
    p.add_argument("--per-frame", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = ClipVideoModel.from_pretrained(args.model)
    size = model.image_size
    sp = probe_split(args.split, size, args.data, args.limit)
    labels = sp.labels
    idx = [i for i, lab in enumerate(labels) if lab["event"] in ("move", "stop")
           and lab["direction"] in ("left", "right", "up", "down")]
    caps, twins, target = [], [], []
    for i in idx:
        for c in sp.paraphrases[i]:
            t = opposite_direction(c)
            if t is not None:
                caps.append(c), twins.append(t), target.append(i)
    with torch.no_grad():
        fwd = offline_embeddings(model, sp.frames, "default", 32).float()
        rev = offline_embeddings(model, sp.frames.flip(1), "default", 32).float()
        t = F.normalize(model.encode_text(caps).float(), dim=-1)
        tw = F.normalize(model.encode_text(twins).float(), dim=-1)
    tg = torch.tensor(target)
    acc = 100 * float(((t * fwd[tg]).sum(-1) > (t * rev[tg]).sum(-1)).float().mean())
    print(f"model {args.model}, split {args.split}: {len(idx)} move / stop clips, "
          f"{len(caps)} captions with a direction word")
    print(f"text cos(caption, swapped twin) {float((t * tw).sum(-1).mean()):.4f}; "
          f"video cos(clip, reversed) {float((fwd[tg] * rev[tg]).sum(-1).mean()):.4f}")
    for axis, positive in (("horizontal", "left"), ("vertical", "up")):
        ii = [i for i in idx if (labels[i]["direction"] in ("left", "right")) == (axis == "horizontal")]
        sign = torch.tensor([1.0 if labels[i]["direction"] == positive else -1.0 for i in ii])
        probe = split_half_probe((fwd[ii] - rev[ii]) * sign[:, None])
        line = f"{axis}: {len(ii)} clips, probe of (video - reversed) {probe:.1f}%"
        if args.per_frame:
            with torch.no_grad():
                fr = sp.frames[ii]
                f = model.encode_images(model.preprocess(fr.reshape(-1, *fr.shape[2:])))
                f = F.normalize(f.reshape(len(ii), fr.shape[1], -1), dim=-1)
            k = max(1, fr.shape[1] // 4)
            line += (f"; per-frame CLS end-minus-start probe "
                     f"{split_half_probe((f[:, -k:].mean(1) - f[:, :k].mean(1)) * sign[:, None]):.1f}%")
        print(line)
    print(f"direction_acc={acc:.1f} ({len(caps)} captions, split {args.split})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
