"""What a new matrix shape costs the bf16 encoder on the CPU, and what bucketing rows buys. (issue 12)

    python benchmarks/kernel_shapes.py [--models shipped,b32] [--new-shapes 100] [--batches 24]

oneDNN builds a bf16 kernel for every new matrix shape and keeps it (ideep's cache and its
primitive cache, 1024 entries each). A TempMe layer's linears take segments x tokens rows and
the segment count changes from batch to batch, so a long run keeps meeting new shapes.
``precision.BucketedLinear`` runs rows in tiles of ROW_TILE, the last padded to ``bucket_rows``.

1. Memory: the model's four linears (fused qkv, out, fc1, fc2; bf16 weights, autocast) on
   ``--new-shapes`` consecutive row counts from 500 up, never seen before, plain nn.Linear and
   bucketed, in one process: glibc heap in use (mallinfo2 after malloc_trim) gained per new
   row count; then the time of cached calls on the same rows, plain and bucketed interleaved.
2. Speed: two bf16 StreamingEncoders (ViT-B/32 shapes, random weights, the default schedule and
   reuse: threshold 0.1), one with plain linears, one bucketed, fed the same live batches, whose
   camera count is drawn from 4..32 each batch (seeded), interleaved batch by batch. Prints the
   total time of each and ``bucketed_speed_ratio=`` (plain time / bucketed time; above 1: faster)
   and the distinct row counts each one's matrix multiplies saw.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from pystream.memory import trim_heap  # noqa: E402
from pystream.model import precision  # noqa: E402
from pystream.model.configs import SHAPES, random_clip  # noqa: E402
from pystream.model.reuse import ReuseSettings  # noqa: E402
from pystream.model.streaming import Chunk, StreamingEncoder  # noqa: E402
from pystream.model.tempme import ClipVideoModel  # noqa: E402
from soak import ShapeCensus, heap_numbers  # noqa: E402


def heap_used_mb() -> float:
    trim_heap()
    return heap_numbers()["heap_used_mb"]


@contextlib.contextmanager
def plain_linears():
    """with_bf16_linears builds plain nn.Linear layers inside (the code before bucketing)."""
    saved = precision.BucketedLinear
    precision.BucketedLinear = torch.nn.Linear
    try:
        yield
    finally:
        precision.BucketedLinear = saved


def model_dims(name: str) -> tuple[int, int]:
    if name == "shipped":  # the model the default config loads (pystream/assets/tiny-clip)
        from transformers import CLIPConfig

        cfg = CLIPConfig.from_pretrained(ROOT / "pystream/assets/tiny-clip").vision_config
    else:
        cfg = random_clip(name).config.vision_config
    return cfg.hidden_size, cfg.intermediate_size


def memory_per_shape(name: str, new_shapes: int) -> None:
    C, I = model_dims(name)
    g = torch.Generator().manual_seed(0)
    plain = [torch.nn.Linear(i, o, dtype=torch.bfloat16) for o, i in
             ((3 * C, C), (C, C), (I, C), (C, I))]
    bucketed = []
    for lin in plain:
        b = precision.BucketedLinear(lin.in_features, lin.out_features, dtype=torch.bfloat16)
        b.load_state_dict(lin.state_dict())
        bucketed.append(b)
    xs = {n: torch.randn(4096, n, generator=g) for n in (C, I)}  # row slices stay contiguous
    start = 500  # row counts no earlier call used (the warm-up below uses 16..64)

    def run(layers, rows):
        t = time.perf_counter()
        for m in rows:
            for lin in layers:
                lin(xs[lin.in_features][:m])
        return (time.perf_counter() - t) / len(rows) * 1e3

    with torch.no_grad(), precision.autocast("bf16", "cpu"):
        for layers in (plain, bucketed):
            run(layers, range(16, 64))
        rows = {"plain": range(start, start + new_shapes),
                "bucketed": range(start + new_shapes, start + 2 * new_shapes)}
        layers = {"plain": plain, "bucketed": bucketed}
        first, cached = {}, {"plain": [], "bucketed": []}
        for label in ("plain", "bucketed"):
            h0 = heap_used_mb()
            first[label] = run(layers[label], rows[label])
            print(f"{name} (C={C}, I={I}) {label:8s}: "
                  f"{(heap_used_mb() - h0) / new_shapes * 1024:5.0f} KB heap per new row count "
                  f"(4 linears; rows {rows[label].start}-{rows[label].stop - 1}); first calls "
                  f"{first[label]:.2f} ms a row count", flush=True)
        same = rows["bucketed"]  # both on the same rows now (each set above was new to its own)
        run(plain, same)  # plain meets these row counts for the first time: untimed
        for r in range(6):  # cached calls, interleaved
            for label in (("plain", "bucketed") if r % 2 == 0 else ("bucketed", "plain")):
                cached[label].append(run(layers[label], same))
        p, b = statistics.median(cached["plain"]), statistics.median(cached["bucketed"])
        print(f"{name}: cached calls, median of 6 interleaved rounds: plain {p:.2f} ms, "
              f"bucketed {b:.2f} ms a row count (plain/bucketed {p / b:.3f})", flush=True)


def encoder_speed(batches: int, seed: int) -> None:
    clip = random_clip("b32")
    size = clip.config.vision_config.image_size
    reuse = ReuseSettings(threshold=0.1, refresh_chunks=8)
    with plain_linears():
        plain = StreamingEncoder(ClipVideoModel(clip), coarse_windows=0, precision="bf16",
                                 reuse=reuse)
    bucketed = StreamingEncoder(ClipVideoModel(clip), coarse_windows=0, precision="bf16",
                                reuse=reuse)
    assert isinstance(bucketed.model.layers[0].mlp.fc1, precision.BucketedLinear)
    assert not isinstance(plain.model.layers[0].mlp.fc1, precision.BucketedLinear)
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    # A static background per camera plus a moving square: what reuse sees from a fixed camera.
    background = torch.randint(0, 256, (32, size, size, 3), dtype=torch.uint8, generator=g)
    rows = {"plain": set(), "bucketed": set()}  # each encoder's (weight, dtype, rows) shapes
    census = ShapeCensus()
    total = {"plain": 0.0, "bucketed": 0.0}
    t_chunk = [0] * 32
    try:
        with torch.no_grad():
            for n in range(batches):
                cams = rng.sample(range(32), rng.randint(4, 32))
                chunks = []
                for c in cams:
                    frames = background[c][None].repeat(4, 1, 1, 1)
                    for j in range(4):
                        y = (t_chunk[c] * 4 + j) * 7 % (size - 40)
                        frames[j, y:y + 40, y:y + 40] = 255
                    chunks.append(Chunk(f"cam{c}", frames, [t_chunk[c] * 4.0 + j for j in range(4)],
                                        t_chunk[c] * 4, 1.0))
                    t_chunk[c] += 1
                order = [("plain", plain), ("bucketed", bucketed)]
                for label, enc in (order if n % 2 == 0 else order[::-1]):
                    census.seen = rows[label]
                    t = time.perf_counter()
                    enc.encode(chunks)
                    if n >= 2:  # the first two batches build the states and first kernels
                        total[label] += time.perf_counter() - t
                print(f"batch {n + 1}/{batches}: {len(cams)} cameras", file=sys.stderr, flush=True)
    finally:
        census.close()
    print(f"encoder (ViT-B/32 bf16, reuse 0.1, {batches - 2} timed batches of 4-32 cameras): "
          f"plain {total['plain']:.1f} s, bucketed {total['bucketed']:.1f} s; distinct "
          f"(weight, rows) shapes: plain {len(rows['plain'])}, bucketed {len(rows['bucketed'])}")
    print(f"bucketed_speed_ratio={total['plain'] / total['bucketed']:.3f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="shipped,b32")
    ap.add_argument("--new-shapes", type=int, default=100)
    ap.add_argument("--batches", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"native bf16: {precision.cpu_has_native_bf16()}")
    names = args.models.split(",")
    for name in names:
        if name != "shipped" and name not in SHAPES:
            raise SystemExit(f"--models: unknown model {name!r} (shipped, {', '.join(SHAPES)})")
    if len(names) == 1:
        memory_per_shape(names[0], args.new_shapes)
    else:  # a process each: oneDNN's caches hold 1024 shapes, and one model's fill them
        for name in names:
            subprocess.run([sys.executable, __file__, "--models", name, "--batches", "0",
                            "--new-shapes", str(args.new_shapes)], check=True)
    if args.batches:
        encoder_speed(args.batches, args.seed)


if __name__ == "__main__":
    main()
