"""Does one operation of the soak leak native memory? Repeat it N times and watch glibc. (issue 12)

    python benchmarks/leak_probe.py udp 300      # open a live UDP stream, decode 5 frames, close
    python benchmarks/leak_probe.py file 2000    # open a recording, decode it all, close
    python benchmarks/leak_probe.py search 5000  # Archive.search, as the soak's reader does

benchmarks/soak.py runs everything at once, where a slope of a few MB an hour hides in minutes
of noise. Here one operation runs alone, many times faster than the soak does it (each in a
new thread, as a stream source's reader or the web server's worker would), and every tenth of
the run prints glibc's heap in use (mallinfo2, after ``malloc_trim``), the free memory it
holds, RSS and its anonymous part. A leak of the operation shows as heap in use that keeps
rising after the first tenth; divide by the count for bytes per operation, and multiply by the
soak's rate (about 350 reconnects, 120 recordings, 3600 searches an hour) for its share of the
soak's slope. The search op's archive does not change; ``lance_churn.py --reader`` searches
one that is written, deleted from and optimized all the time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pystream.memory import trim_heap, use_system_arrow_pool  # noqa: E402
from pystream.sources.stream import default_options  # noqa: E402
from soak import heap_numbers, status_mb, udp_port, write_clip  # noqa: E402


def in_thread(fn) -> None:
    t = threading.Thread(target=fn)
    t.start()
    t.join()


def decode(url: str, options: dict, frames: int | None) -> None:
    with av.open(url, mode="r", options=options, timeout=(5, 5)) as c:
        for n, f in enumerate(c.decode(c.streams.video[0]), 1):
            f.to_ndarray(format="rgb24")
            if frames and n >= frames:
                break


def udp_op(work: Path):
    """A sender looping a 30 s clip, as the soak's cameras; each op is one reconnect."""
    clip = work / "cam.ts"
    write_clip(clip, 30, fps=10, seed=0)
    port = udp_port()
    sender = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i",
         str(clip), "-c", "copy", "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"])
    url = f"udp://127.0.0.1:{port}"
    return (lambda: in_thread(lambda: decode(url, default_options(url), 5))), sender.kill


def file_op(work: Path):
    clip = work / "rec.ts"
    write_clip(clip, 3, fps=10, seed=0)
    return (lambda: in_thread(lambda: decode(str(clip), {}, None))), None


def search_op(work: Path):
    """A small archive indexed by the CLI, searched as the soak's reader searches it."""
    import pystream

    folder, archive = work / "in", work / "archive"
    folder.mkdir()
    write_clip(folder / "a.ts", 20, fps=2, seed=1)
    subprocess.run([sys.executable, "-m", "pystream", "index", "-q", str(folder),
                    "--archive", str(archive)], check=True,
                   cwd=Path(__file__).resolve().parent.parent)
    arc = pystream.open(str(archive))
    queries = ["a red square moves", "a green circle", "an empty scene", "a blue shape"]
    n = [0]

    def op():
        n[0] += 1
        q = queries[n[0] % len(queries)]
        if n[0] % 2:
            arc.search(q, k=10)
        else:
            arc.search(q, k=10, sources=["cam1"], since=time.time() - 120)
        if n[0] % 10 == 0:
            arc.table.count_rows()
    return op, None


OPS = {"udp": udp_op, "file": file_op, "search": search_op}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("op", choices=sorted(OPS))
    ap.add_argument("count", type=int)
    args = ap.parse_args()
    if args.count < 10:
        raise SystemExit("count must be at least 10 (it prints every tenth)")
    use_system_arrow_pool()  # as the Indexer does
    op, cleanup = OPS[args.op](Path(tempfile.mkdtemp(prefix="leak-probe-")))
    print(f"leak_probe: {args.op} x {args.count}")
    print("     n  heap_used_mb heap_free_mb  rss_mb anon_mb  seconds", flush=True)
    t0, first = time.monotonic(), None
    try:
        for i in range(args.count + 1):
            if i % (args.count // 10) == 0:
                trim_heap()
                h, s = heap_numbers(), status_mb("VmRSS", "RssAnon")
                print(f"{i:6d} {h['heap_used_mb']:13.2f} {h['heap_free_mb']:12.1f} "
                      f"{s['VmRSS']:7.1f} {s['RssAnon']:7.1f} {time.monotonic() - t0:8.0f}",
                      flush=True)
                if i == args.count // 10:
                    first = h["heap_used_mb"]
            if i < args.count:
                op()
    finally:
        if cleanup:
            cleanup()
    grown = h["heap_used_mb"] - first
    per_op = grown * 2**20 / (args.count - args.count // 10)
    print(f"heap_used_growth_mb={grown:.2f} bytes_per_op={per_op:.0f}  (after the first tenth)")


if __name__ == "__main__":
    main()
