"""Backfill throughput on Ray (1 and 2 encoder workers) vs `pystream index`, same files, one run.

    PYTHONPATH=. python benchmarks/scale.py [--files 8] [--seconds 60] [--fps 2]

Writes --files real H.264 files (moving shapes, 320x240, 10 fps) to a temp folder, then indexes
them three times into fresh archives: `pystream.index` (one process, the engine's threads),
`backfill(workers=1)` and `backfill(workers=2)` on a local Ray instance (started once, outside
the timings: its start-up is printed separately; the actors' model load is inside them).
Throughput = sampled frames / wall seconds. The ratio is index seconds / backfill seconds
(> 1: backfill faster). rows_equal is computed: the three archives have the same ids and
vectors within 1e-5 (see tests/test_backfill.py for why not bit-identical).

Last lines: `backfill_vs_index=` (2 workers) and `rows_equal=`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def rows_of(archive: str) -> dict:
    import lancedb

    t = lancedb.connect(archive).open_table("clips").to_arrow()
    v = t.column("vector").to_numpy(zero_copy_only=False)
    ids = t.column("id").to_pylist()
    assert len(ids) == len(set(ids)), f"duplicate ids in {archive}"
    return dict(zip(ids, (np.asarray(x) for x in v)))


def same(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(float(np.abs(a[k] - b[k]).max()) < 1e-5 for k in a)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--fps", type=float, default=2.0, help="sample rate")
    p.add_argument("--model", default="shipped")
    args = p.parse_args(argv)

    import ray

    import pystream
    from pystream.backfill import backfill
    from streams import make_video

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    work = Path(tempfile.mkdtemp(prefix="pystream-scale-"))
    videos = work / "videos"
    videos.mkdir()
    for i in range(args.files):
        make_video(videos / f"cam{i:02d}.mp4", seconds=args.seconds, fps=10, size=(320, 240))
    frames = int(args.files * args.seconds * args.fps)
    from pystream.synthetic.train import cpu_name  # the one reader of /proc/cpuinfo

    print(f"machine: {os.cpu_count()} CPUs ({cpu_name()}), {platform.platform()}")
    print(f"files={args.files} seconds_each={args.seconds:g} sample_fps={args.fps:g} "
          f"frames={frames} model={args.model}")

    t = time.perf_counter()
    res = pystream.index([str(videos)], archive=str(work / "index"), model=args.model,
                         fps=args.fps)
    index_s = time.perf_counter() - t
    print(f"index: {index_s:.1f} s, {frames / index_s:.1f} frames/s, {res.rows} rows")

    t = time.perf_counter()
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}})
    print(f"ray start: {time.perf_counter() - t:.1f} s (not in the timings below)")
    times = {}
    try:
        for workers in (1, 2):
            t = time.perf_counter()
            r = backfill([str(videos)], archive=str(work / f"backfill{workers}"),
                         model=args.model, fps=args.fps, workers=workers, files_per_commit=4)
            times[workers] = time.perf_counter() - t
            print(f"backfill workers={workers}: {times[workers]:.1f} s, "
                  f"{frames / times[workers]:.1f} frames/s, {r.rows} rows in {r.commits} "
                  f"commits; ratio vs index {index_s / times[workers]:.2f}")
    finally:
        ray.shutdown()

    ref = rows_of(str(work / "index"))
    equal = all(same(ref, rows_of(str(work / f"backfill{w}"))) for w in (1, 2))
    print(f"backfill_vs_index_1worker={index_s / times[1]:.2f}")
    print(f"backfill_vs_index_2workers={index_s / times[2]:.2f}")
    print(f"backfill_vs_index={index_s / times[2]:.2f}")
    print(f"rows_equal={int(equal)}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
