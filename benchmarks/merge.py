"""Merge benchmark: pystream._core vs the PyTorch reference (pystream/merge_reference.py).

Same inputs for both, warm-up, then many interleaved repeats (ref, core, ref, core, ...) and the
median of each; outputs are checked to agree before timing. One line per case, then
``merge_speedup_min=X.XX`` (the smallest CPU ratio ref/core). CUDA figures too when a GPU and
CUDA kernels are present.

    python benchmarks/merge.py [--repeats N] [--threads T]

Threads: the core's OpenMP runtime is not torch's, so torch.set_num_threads alone would leave the
core on its default; --threads T sets both (the core through OMP_NUM_THREADS, re-executing this
script when needed). The header and ``merge_threads_torch=`` / ``merge_threads_core=`` print what
each side really used.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pystream import merge as core_merge  # noqa: E402
from pystream import merge_reference as ref  # noqa: E402

# name, B, N, C, protected, r, metric kind
CASES = [
    ("ImgMe ViT-B/32 64 frames x 50 x 768, r=2", 64, 50, 768, 1, 2, "keys"),
    ("ClipMe 16 streams x 168 x 768, P=12, r=50", 16, 168, 768, 12, 50, "hidden"),
    ("ViT-B/16 1 x 197 x 768, r=16", 1, 197, 768, 1, 16, "keys"),
]


def make_inputs(B, N, C, kind, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, C, generator=g)
    sizes = torch.randint(1, 4, (B, N), generator=g).float()
    if kind == "keys":  # keys averaged over 12 heads (as ImgMe's metric), [B, N, 768] fp32
        metric = torch.randn(B, N, 12, C // 12, generator=g).flatten(2) + 0.5 * x
    else:  # ClipMe cross-clip merge: the hidden states themselves
        metric = x.clone()
    return x.to(device), sizes.to(device), metric.contiguous().to(device)


def check(a, b, name):
    assert torch.equal(a.index_map, b.index_map), f"{name}: index maps differ"
    assert torch.equal(a.lengths, b.lengths), f"{name}: lengths differ"
    assert torch.allclose(a.x, b.x, atol=1e-5, rtol=1e-5), f"{name}: tokens differ"
    assert torch.allclose(a.sizes, b.sizes), f"{name}: sizes differ"


def bench(fn_a, fn_b, repeats, sync=lambda: None, warmup=5):
    for _ in range(warmup):
        fn_a()
        fn_b()
    sync()
    ta, tb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn_a()
        sync()
        t1 = time.perf_counter()
        fn_b()
        sync()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    return statistics.median(ta) * 1e3, statistics.median(tb) * 1e3


def run_device(device, repeats):
    sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)
    ratios = []
    for name, B, N, C, P, r, kind in CASES:
        x, s, m = make_inputs(B, N, C, kind, device)
        a = core_merge.bipartite_merge(x, s, m, r, P)
        b = ref.bipartite_merge(x, s, m, r, P)
        check(a, b, name)
        t_ref, t_core = bench(
            lambda: ref.bipartite_merge(x, s, m, r, P),
            lambda: core_merge.bipartite_merge(x, s, m, r, P),
            repeats,
            sync,
        )
        ratio = t_ref / t_core
        ratios.append(ratio)
        print(
            f"[{device}] {name:<44} ref {t_ref:8.3f} ms   core {t_core:8.3f} ms   "
            f"ratio {ratio:6.2f}x",
            flush=True,
        )
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")
    args = ap.parse_args()
    if args.threads:
        if os.environ.get("OMP_NUM_THREADS") != str(args.threads):
            # The core's OpenMP reads OMP_NUM_THREADS when it starts: run again with it set.
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
            os.execve(sys.executable, [sys.executable, *sys.argv], env)
        torch.set_num_threads(args.threads)
    if not core_merge.HAVE_CORE:
        print("pystream._core is not built: nothing to compare (make build)")
        print("merge_speedup_min=0.00")
        return
    info = core_merge._core.build_info()
    t_torch, t_core = torch.get_num_threads(), info.get("omp_max_threads", 1)
    print(f"# {info['summary']}; torch {torch.__version__}; threads: reference (torch) {t_torch}, "
          f"core (OpenMP) {t_core}" + ("" if t_torch == t_core else "  <- NOT the same"))
    with torch.inference_mode():
        ratios = run_device("cpu", args.repeats)
        if torch.cuda.is_available() and core_merge.core_cuda_available():
            cuda = run_device("cuda", args.repeats)
            print(f"merge_speedup_min_cuda={min(cuda):.2f}")
    print(f"merge_threads_torch={t_torch}")
    print(f"merge_threads_core={t_core}")
    print(f"merge_speedup_min={min(ratios):.2f}")


if __name__ == "__main__":
    main()
