"""Does a smaller reader cache cost query latency? (issue 12)

    python benchmarks/reader_cache.py [ROWS]        # default 1,000,000 (~2 GB of vectors, minutes)

Builds one archive as benchmarks/store.py does (clustered dim-512 vectors, IVF_PQ + scalar
indexes), opens it twice, each with its own LanceDB session capped at a different size
(``--caps``, MB per cache: index and metadata alike), and runs the same queries through both in
alternation (side by side: the box's noise hits both), at store.py's chosen setting. Prints p50
and p95 per cap, and the ratio against the largest cap last: ``p95_ratio_<cap>=``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import store as bench  # noqa: E402  (benchmarks/store.py: the same data and indexes)
from pystream import archive  # noqa: E402
from pystream.store import bounded_session, connect  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows", nargs="?", type=int, default=1_000_000)
    ap.add_argument("--caps", default="4,8,64", help="MB per cache (index and metadata), compared")
    ap.add_argument("--rounds", type=int, default=3, help="passes over the 200 queries")
    ap.add_argument("--nprobes", type=int, default=16)
    ap.add_argument("--refine", type=int, default=10)
    args = ap.parse_args()
    caps = [float(c) for c in args.caps.split(",")]
    root = tempfile.mkdtemp(prefix="pystream-rcache-", dir=os.environ.get("PYSTREAM_BENCH_DIR"))
    try:
        n = args.rows
        vectors = bench.make_vectors(n)
        queries = bench.make_queries(vectors)
        uri = os.path.join(root, "archive")
        _, _, _, partitions, sub_vectors = bench.build_archive(uri, vectors)
        del vectors
        print(f"{n} rows, IVF_PQ {partitions} partitions x {sub_vectors} sub-vectors; "
              f"nprobes={args.nprobes} refine={args.refine}", flush=True)

        arcs = {}
        for cap in caps:
            arc = archive.open(uri)
            arc.session = bounded_session(cap, cap)  # before the first query opens the table
            arc._db = connect(uri, session=arc.session,  # as Archive.table connects, capped
                              read_consistency_interval=arc.read_consistency_interval)
            arcs[cap] = arc
        times = {cap: [] for cap in caps}
        t_mid = float(bench.row_start(np.int64(n // 2)))
        for rnd in range(args.rounds + 1):  # round 0 warms the caches, not counted
            for i, q in enumerate(queries):
                for cap in (caps if i % 2 else caps[::-1]):
                    query = arcs[cap].query(q).limit(bench.K).nprobes(args.nprobes) \
                        .refine_factor(args.refine)
                    if i % 4 == 0:  # some filtered (one camera, one hour) as the web page asks
                        query = query.where(sources=["cam03"], since=t_mid, until=t_mid + 3600)
                    t0 = time.perf_counter()
                    query.to_hits()
                    if rnd:
                        times[cap].append((time.perf_counter() - t0) * 1000)
        ref = max(caps)
        ref95 = np.percentile(times[ref], 95)
        for cap in caps:
            size = (getattr(arcs[cap].session, "size_bytes", 0) or 0) / 2**20
            print(f"cap {cap:g}+{cap:g} MB: p50={np.percentile(times[cap], 50):6.2f} ms "
                  f"p95={np.percentile(times[cap], 95):6.2f} ms  cache in use {size:.1f} MB", flush=True)
        for cap in caps:
            print(f"p95_ratio_{cap:g}={np.percentile(times[cap], 95) / ref95:.3f}  (against {ref:g}+{ref:g} MB)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
