"""LanceDB alone under the soak's write pattern: does its memory stay flat? (issue 12)

    python benchmarks/lance_churn.py --minutes 20 [--reader] [--cache-mb 0.25]
        [--no-delete] [--no-optimize] [--reconnect-s 180] [--reader-reconnect-s 180] [--speed 4]

benchmarks/soak.py runs the whole daemon; this keeps only the archive's own work, in one
process with no model, no decoders and no pystream writer: a commit of 8 rows (a 128-d vector,
a source, a start time) every 0.25 s, retention deleting rows older than 360 commits and
``optimize(cleanup_older_than=120 s)`` every 30 s (then glibc's malloc_trim, as the writer
does), and with ``--reader`` a second connection searching twice a second (half the queries
filtered) after ``checkout_latest``. The caches are capped as the daemon caps them
(pystream.store; ``--cache-mb`` caps both of each connection instead). ``--speed`` divides the
sleeps between commits and between queries (maintenance stays every 30 s), to see in 20 minutes
what an hour and more of the soak's archive work would do.

Every minute: RSS, its anonymous part, glibc's heap in use (mallinfo2: live native and Python
allocations), Python's traced memory with ``--tracemalloc``, rows, queries. Last, the slope of
each per hour after ``--warmup`` minutes: ``rss_mb_per_hour=``, ``heap_used_mb_per_hour=``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pystream.memory import trim_heap  # noqa: E402
from pystream.store import READER_CACHE_MB, WRITER_CACHE_MB, connect  # noqa: E402
from soak import proc_numbers, slope_per_hour  # noqa: E402

DIM = 128


def rows(rng, n: int, t: float) -> pa.Table:
    vec = pa.array(rng.standard_normal(n * DIM).astype(np.float32))
    return pa.table({"id": [f"r{t:.0f}-{i}" for i in range(n)],
                     "source": [f"cam{i % 8}" for i in range(n)],
                     "start": np.full(n, t, np.float64),
                     "vector": pa.FixedSizeListArray.from_arrays(vec, DIM)})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--reader", action="store_true", help="a concurrent searcher")
    ap.add_argument("--cache-mb", type=float, help="cap each cache of both connections at this")
    ap.add_argument("--no-delete", action="store_true", help="no retention deletes")
    ap.add_argument("--no-optimize", action="store_true", help="no optimize / cleanup")
    ap.add_argument("--reconnect-s", type=float, default=0.0,
                    help="open the writer's connection afresh this often (0: never)")
    ap.add_argument("--reader-reconnect-s", type=float, default=0.0,
                    help="open the reader's connection afresh this often (0: never)")
    ap.add_argument("--speed", type=float, default=1.0,
                    help="run the commits and queries this many times faster (sleeps divided)")
    ap.add_argument("--tracemalloc", action="store_true", help="also trace Python's allocations")
    args = ap.parse_args()
    if args.tracemalloc:
        tracemalloc.start()
    cap = None if args.cache_mb is None else {"index": args.cache_mb, "metadata": args.cache_mb}
    root = tempfile.mkdtemp(prefix="lance-churn-")
    rng = np.random.default_rng(0)
    db = connect(root, cap or WRITER_CACHE_MB)
    table = db.create_table("clips", rows(rng, 8, 0.0))
    stop, queries, errors = threading.Event(), [0], []

    def reader():
        rt, opened = connect(root, cap or READER_CACHE_MB).open_table("clips"), time.monotonic()
        q = np.random.default_rng(1)
        while not stop.is_set():
            try:
                if args.reader_reconnect_s and time.monotonic() - opened >= args.reader_reconnect_s:
                    rt = connect(root, cap or READER_CACHE_MB).open_table("clips")
                    opened = time.monotonic()
                rt.checkout_latest()
                where = "source = 'cam1'" if queries[0] % 2 else "start > 0"
                rt.search(q.standard_normal(DIM).astype(np.float32)).where(where) \
                    .limit(10).to_list()
                queries[0] += 1
            except Exception as e:  # noqa: BLE001 -- counted and printed, not fatal
                errors.append(repr(e))
            time.sleep(0.5 / args.speed)

    if args.reader:
        threading.Thread(target=reader, name="reader", daemon=True).start()
    print(f"lance_churn: reader={args.reader} cache_mb={args.cache_mb or 'daemon caps'} "
          f"delete={not args.no_delete} optimize={not args.no_optimize} "
          f"reconnect_s={args.reconnect_s:g} reader_reconnect_s={args.reader_reconnect_s:g} "
          f"speed={args.speed:g}; {root}")
    print("min  rss_mb anon_mb heap_used_mb py_traced_mb  rows queries errors", flush=True)
    t0 = time.monotonic()
    last_opt = last_re = next_min = t0
    next_min += 60
    commits, samples = 0, []
    while time.monotonic() - t0 < args.minutes * 60:
        commits += 1
        table.add(rows(rng, 8, float(commits)))
        time.sleep(0.25 / args.speed)
        now = time.monotonic()
        if args.reconnect_s and now - last_re >= args.reconnect_s:
            db = connect(root, cap or WRITER_CACHE_MB)
            table, last_re = db.open_table("clips"), now
        if now - last_opt >= 30:  # maintenance, as the writer's
            if not args.no_delete:
                table.delete(f"start < {commits - 360}")
            if not args.no_optimize:
                table.optimize(cleanup_older_than=datetime.timedelta(seconds=120))
                trim_heap()
            last_opt = now
        if now >= next_min:
            next_min += 60
            traced = (tracemalloc.get_traced_memory()[0] / 2**20 if args.tracemalloc
                      else float("nan"))
            p = proc_numbers()
            rss = p["rss_mb"]
            s = dict(t=now - t0, rss_mb=rss, anon_mb=p["rss_anon_mb"],
                     heap_used_mb=p["heap_used_mb"], traced=traced)
            samples.append(s)
            print(f"{s['t'] / 60:3.0f} {rss:7.1f} {s['anon_mb']:7.1f} {s['heap_used_mb']:12.1f} "
                  f"{traced:12.1f} {table.count_rows():5d} {queries[0]:7d} {len(errors):6d}",
                  flush=True)
    stop.set()
    use = [s for s in samples if s["t"] >= args.warmup * 60] or samples
    for key in ("rss_mb", "anon_mb", "heap_used_mb"):
        print(f"{key}_per_hour={slope_per_hour([s['t'] for s in use], [s[key] for s in use]):.2f}"
              f"  ({key} {use[0][key]:.1f} -> {use[-1][key]:.1f})")
    print(f"reader_queries={queries[0]} reader_errors={len(errors)}")
    for e in errors[:3]:
        print("reader error:", e)


if __name__ == "__main__":
    main()
