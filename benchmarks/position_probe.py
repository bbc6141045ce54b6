"""Does a model's image embedding know where an object is? (issue 14)

    python benchmarks/position_probe.py [--model shipped] [--split test|train]

A direction is a change of position, so a model whose single-frame embedding cannot tell
"a red circle on the left" from "a red circle on the right" cannot learn "moves left" from
the order of its frames. On the first and last frame of each synthetic move / stop clip, the
object's true third of the frame (pystream.synthetic.videos.frame_positions) is scored
against the opposite one: "X on the left" vs "X on the right" when it is in the left or right
third, "X at the top" vs "X at the bottom" when in the top or bottom third. Prints the share
scored right per axis (50% is chance).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from direction_probe import probe_split  # noqa: E402
from pystream.model.tempme import ClipVideoModel  # noqa: E402
from pystream.synthetic.videos import frame_positions, grid_cell  # noqa: E402


def pairs(split) -> list[tuple[int, int, str, bool, list[str]]]:
    """(clip, frame, axis, first caption is right, [caption A, caption B]) per scored frame."""
    out = []
    for i, lab in enumerate(split.labels):
        if lab["event"] not in ("move", "stop"):
            continue
        where = frame_positions(lab, split.seeds[i], split.frames.shape[1])
        for t in (0, len(where) - 1):
            w = where[t]
            h, v = grid_cell(w["x"], w["y"])
            np_ = f"a {w['colour']} {lab['shape']}"
            if h != "centre":
                out.append((i, t, "horizontal", h == "left",
                            [f"{np_} on the left", f"{np_} on the right"]))
            if v != "middle":
                out.append((i, t, "vertical", v == "top",
                            [f"{np_} at the top", f"{np_} at the bottom"]))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="shipped")
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--limit", type=int, default=300, help="clips of the split to read")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = ClipVideoModel.from_pretrained(args.model)
    size = model.image_size
    sp = probe_split(args.split, size, limit=args.limit)
    todo = pairs(sp)
    right = {"horizontal": [0, 0], "vertical": [0, 0]}
    with torch.no_grad():
        frames = torch.stack([sp.frames[i, t] for i, t, *_ in todo])
        img = F.normalize(model.encode_images(model.preprocess(frames)).float(), dim=-1)
        for k, (_, _, axis, first, caps) in enumerate(todo):
            s = F.normalize(model.encode_text(caps).float(), dim=-1) @ img[k]
            right[axis][0] += int(bool(s[0] > s[1]) == first)
            right[axis][1] += 1
    for axis, (r, n) in right.items():
        print(f"{axis}: {n} frames, position named right {100 * r / max(n, 1):.1f}%")
    total = sum(r for r, _ in right.values()) / max(1, sum(n for _, n in right.values()))
    print(f"position_acc={100 * total:.1f} (model {args.model}, split {args.split})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
