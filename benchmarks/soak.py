"""Accelerated soak: does a long run stay flat? (issue 12)

    python benchmarks/soak.py --minutes 30 [--cameras 8] [--seed 0]

One process runs the real Indexer (shipped model, the default precision and reuse) on:
- ``--cameras`` live UDP cameras (ffmpeg senders, ``-re -stream_loop -1 -c copy``, MPEG-TS on
  127.0.0.1) that go down and come back all the time: each sender is killed after a random
  40-100 s up and restarted on the same port after 3-20 s down (staggered, seeded);
- a folder receiving a new 20 s recording every ``--file-every`` s (written aside, renamed in),
  whose old files are expired by ``pystream.retention.prune_recordings``;
- a concurrent reader in another thread: ``Archive.search`` with a text query every second
  (filtered by time and source half of the time) and a row count every tenth query;
- retention and maintenance sped up (``--retention-s`` max age, applied every minute;
  optimize every 30 s; old versions kept 120 s) so what months would do happens in minutes.

Every minute it prints RSS (the minute's minimum and maximum of samples every 2 s), open fds,
threads, LanceDB fragments (maximum and minimum) and versions, the checkpoint
database's size, the writer's LanceDB cache, rows, reconnects and gaps. Last, the slope of each per hour (least squares
after ``--warmup`` minutes), the maxima, and the exactly-once check: every row the writer
committed is in the archive unless retention deleted it (``rows_lost=``), no id or (source,
level, start) twice (``rows_duplicated=``), and every recording still within retention has
all its expected windows. Key lines: ``rss_mb_per_hour=``, ``fragments_max=``,
``reader_errors=``, ``rows_lost=``, ``rows_duplicated=``.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pystream  # noqa: E402
from pystream.config import parse_config  # noqa: E402
from pystream.retention import prune_recordings  # noqa: E402

CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_clip(path: Path, seconds: float, fps: int, seed: int, size=(160, 120)) -> None:
    """Moving shapes on a fixed background, H.264 with a keyframe every second."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(30, 200, size=3)
    tmp = path.with_name("." + path.name)
    with av.open(str(tmp), "w", format="mpegts" if path.suffix == ".ts" else None) as c:
        s = c.add_stream(CODEC, rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.thread_count = 1
        if CODEC == "libx264":
            s.options = {"g": str(fps), "preset": "ultrafast"}
        colour = rng.integers(0, 255, size=3)
        for i in range(int(seconds * fps)):
            img = np.empty((h, w, 3), np.uint8)
            img[:] = base
            x = (i * 3) % (w - 24)
            img[40:64, x:x + 24] = colour
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    os.replace(tmp, path)


def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Camera:
    """One ffmpeg UDP sender that is killed and restarted on a random schedule."""

    def __init__(self, i: int, clip: Path, log_dir: Path, rng: random.Random):
        self.i, self.clip, self.port = i, clip, udp_port()
        self.log = log_dir / f"ffmpeg-{i}.log"
        self.rng = rng
        self.proc: subprocess.Popen | None = None
        self.cycles = 0
        self.next_change = time.monotonic() + rng.uniform(20, 100)  # staggered first outage

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
                 "-i", str(self.clip), "-c", "copy", "-f", "mpegts",
                 f"udp://127.0.0.1:{self.port}?pkt_size=1316"],
                stdout=log, stderr=log, start_new_session=True)

    def kill(self):
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.proc = None

    def tick(self, now: float):
        if now < self.next_change:
            return
        if self.proc is not None:
            self.kill()
            self.cycles += 1
            self.next_change = now + self.rng.uniform(3, 20)
        else:
            self.start()
            self.next_change = now + self.rng.uniform(40, 100)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def heap_numbers() -> dict:
    """glibc's view of the heap: what is in use vs held free (fragmentation), in MB.

    A leak grows ``heap_used``; fragmentation grows ``heap_free`` (RSS the allocator keeps but
    nobody uses); pyarrow's pool and Python's object count tell whose leak it is."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        m = libc.mallinfo2()
        used, free = (m.uordblks + m.hblkhd) / 2**20, m.fordblks / 2**20
    except (OSError, AttributeError):
        used = free = float("nan")
    import pyarrow as pa
    return dict(heap_used_mb=used, heap_free_mb=free,
                arrow_mb=pa.total_allocated_bytes() / 2**20,
                py_kblocks=sys.getallocatedblocks() / 1000)


def status_mb(*keys: str) -> dict:
    """Fields of /proc/self/status (VmRSS, RssAnon, RssFile, ...) in MB, read once."""
    out = {}
    with open("/proc/self/status") as f:
        for ln in f:
            key = ln.split(":", 1)[0]
            if key in keys:
                out[key] = int(ln.split()[1]) / 1024
    return out


def rss_split() -> dict:
    """RSS by kind, in MB: anonymous (heaps, allocator mappings, stacks), file-backed (libraries,
    mmap'd files) and LazyFree (pages an allocator gave back with MADV_FREE: still counted in
    RSS until the kernel needs them)."""
    out = dict(rss_anon_mb=float("nan"), rss_file_mb=float("nan"), lazyfree_mb=float("nan"))
    try:
        st = status_mb("RssAnon", "RssFile")
        out.update(rss_anon_mb=st["RssAnon"], rss_file_mb=st["RssFile"])
        with open("/proc/self/smaps_rollup") as f:
            for ln in f:
                if ln.startswith("LazyFree:"):
                    out["lazyfree_mb"] = int(ln.split()[1]) / 1024
    except (OSError, KeyError):  # not Linux
        pass
    return out


def proc_numbers() -> dict:
    return dict(rss_mb=status_mb("VmRSS")["VmRSS"], fds=len(os.listdir("/proc/self/fd")),
                threads=len(os.listdir("/proc/self/task")), py_threads=threading.active_count(),
                **rss_split(), **heap_numbers())


def jemalloc_dump(path: Path) -> None:
    """A jemalloc heap profile of this process now (``--heap-dumps``), for ``jeprof --base``."""
    mallctl = getattr(ctypes.CDLL(None), "mallctl", None)
    name = ctypes.c_char_p(str(path).encode())
    if mallctl is None or mallctl(b"prof.dump", None, None, ctypes.byref(name),
                                  ctypes.sizeof(name)) != 0:
        raise SystemExit("--heap-dumps needs jemalloc with profiling: LD_PRELOAD="
                         "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 MALLOC_CONF=prof:true")


class ShapeCensus:
    """Counts the distinct (weight shape, dtype, row count) of every ``F.linear`` call in the
    process (the matrix multiplies oneDNN builds and keeps a kernel for), by wrapping
    ``torch.nn.functional.linear``; ``line()``: the count, and how many appeared since the last
    call. This is how the TempMe layers' unbucketed row counts were found (issue 12)."""

    def __init__(self):
        import torch.nn.functional as F

        self.seen: set = set()
        self.reported = 0
        self._F, self._linear = F, F.linear
        linear = F.linear

        def counting(x, w, b=None):
            self.seen.add((tuple(w.shape), w.dtype, x.numel() // max(1, x.shape[-1])))
            return linear(x, w, b)
        F.linear = counting

    def close(self) -> None:
        """Puts ``torch.nn.functional.linear`` back."""
        self._F.linear = self._linear

    def line(self) -> str:
        n, new = len(self.seen), len(self.seen) - self.reported
        self.reported = n
        bf16 = sum(1 for _, dtype, _ in self.seen if str(dtype) == "torch.bfloat16")
        return f"linear_shapes={n} bf16={bf16} new={new}"


def count_versions(table, tries: int = 5) -> int:
    """LanceDB versions of ``table``. Listing reads every manifest, and the writer's cleanup may
    delete one between the listing and the read ("Not found: ..._versions/N.manifest"): that
    is the soak's own count racing maintenance (readers never list versions), so try again."""
    for i in range(tries):
        try:
            return len(table.to_lance().versions())
        except (ValueError, OSError) as e:
            if "Not found" not in str(e) or i == tries - 1:
                raise
            time.sleep(0.2)


def python_types() -> str:
    """Live Python objects per type (gc-tracked), most first: which kind piles up."""
    import gc
    counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    return "".join(f"{n} {name}\n" for name, n in counts.most_common())


def slope_per_hour(ts, ys) -> float:
    if len(ts) < 2:
        return float("nan")
    t = np.asarray(ts) / 3600.0
    return float(np.polyfit(t, np.asarray(ys, np.float64), 1)[0])


# Two-sided 95% quantiles of Student's t by degrees of freedom (no scipy in the venv).
_T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26,
         10: 2.23, 12: 2.18, 15: 2.13, 20: 2.09, 30: 2.04}


def slope_interval(ts, ys, block_s: float = 600.0) -> tuple[float, float, int]:
    """The slope per hour of 10-minute block means and its 95% half-width, and the blocks used.

    Minute samples are not independent (RSS wanders for minutes), so a least-squares error
    over them claims a precision the run does not have; the means of 10-minute blocks are
    nearer independent, and their fit's error says how far one run's slope can be trusted."""
    t, y = np.asarray(ts, np.float64), np.asarray(ys, np.float64)
    if len(t) < 2:
        return float("nan"), float("nan"), 0
    block = np.floor((t - t[0]) / block_s)
    keys = np.unique(block)
    bt = np.array([t[block == k].mean() for k in keys]) / 3600.0
    by = np.array([y[block == k].mean() for k in keys])
    if len(keys) < 3:
        return slope_per_hour(t, y), float("nan"), len(keys)
    (slope, icpt), df = np.polyfit(bt, by, 1), len(keys) - 2
    resid = by - (slope * bt + icpt)
    se = np.sqrt((resid @ resid) / df / ((bt - bt.mean()) @ (bt - bt.mean())))
    q = _T975[max(k for k in _T975 if k <= df)]
    return float(slope), float(q * se), len(keys)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--file-every", type=float, default=30.0, help="a new recording every N s")
    ap.add_argument("--retention-s", type=float, default=360.0, help="rows' max age")
    ap.add_argument("--warmup", type=float, default=15.0,
                    help="minutes left out of the slopes (the LanceDB caches fill to their caps "
                         "in about 12 minutes at the soak's commit a second)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--no-reader", action="store_true", help="no concurrent reader (to bisect)")
    ap.add_argument("--no-files", action="store_true", help="no folder source (to bisect)")
    ap.add_argument("--precision", default="auto", help="the encoder's precision (to bisect)")
    ap.add_argument("--no-outages", action="store_true",
                    help="cameras never go down (to bisect)")
    ap.add_argument("--malloc-trim", action="store_true",
                    help="call glibc's malloc_trim(0) before each sample (is the growth held "
                         "free memory?)")
    ap.add_argument("--heap-dumps", type=Path, metavar="DIR",
                    help="jemalloc heap profiles every 5 minutes into DIR (run under jemalloc "
                         "with MALLOC_CONF=prof:true); compare two with jeprof --base=A B")
    ap.add_argument("--smaps-dumps", type=Path, metavar="DIR",
                    help="copy /proc/self/smaps and the count of live Python objects per type "
                         "every 5 minutes into DIR: which mapping grows (python "
                         "benchmarks/smaps_diff.py A B), which objects pile up")
    ap.add_argument("--shape-census", action="store_true",
                    help="count the distinct matrix shapes (weight, rows) every linear call "
                         "sees and print them every minute: oneDNN keeps a kernel per bf16 shape "
                         "(benchmarks/kernel_shapes.py)")
    args = ap.parse_args()
    census = ShapeCensus() if args.shape_census else None
    rng = random.Random(args.seed)
    if args.smaps_dumps:
        args.smaps_dumps.mkdir(parents=True, exist_ok=True)
    if args.heap_dumps:
        args.heap_dumps.mkdir(parents=True, exist_ok=True)
        jemalloc_dump(args.heap_dumps / "heap-start.heap")  # fails early, with the fix
    root = Path(tempfile.mkdtemp(prefix="pystream-soak-"))
    import logging

    logging.basicConfig(filename=str(root / "soak.log"), level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    levels = collections.Counter()

    class Count(logging.Handler):
        def emit(self, record):
            levels[record.levelname] += 1
    logging.getLogger().addHandler(Count())
    folder, staging = root / "incoming", root / "staging"
    folder.mkdir()
    staging.mkdir()
    clip = root / "camera.ts"
    write_clip(clip, 30, fps=10, seed=args.seed)
    cams = [Camera(i, clip, root, rng) for i in range(args.cameras)]
    sources = [dict(type="stream", name=f"cam{c.i}", url=f"udp://127.0.0.1:{c.port}",
                    open_timeout_s=5, read_timeout_s=3, stall_timeout_s=5,
                    backoff_initial_s=0.5, backoff_max_s=4) for c in cams]
    if not args.no_files:
        sources.append(dict(type="folder", name="recordings", path=str(folder), stable_s=0.5,
                            scan_interval_s=10))
    cfg = parse_config(dict(
        archive=str(root / "archive"), state_dir=str(root / "state"), model="shipped",
        sample_fps=1.0, coarse_windows=15, sources=sources, http={"enabled": False},
        precision=args.precision,
        batching={"max_batch_chunks": 32, "max_wait_s": 0.2, "queue_chunks": 128},
        writer={"batch_rows": 256, "flush_interval_s": 1.0, "optimize_interval_s": 30,
                "keep_versions_s": 120},
        retention={"max_age": args.retention_s, "interval_s": 60}))

    from pystream.pipeline import Indexer

    # Every committed row goes to a ledger on disk, read back for the exactly-once check at the
    # end: kept in a dict here, 6600 rows an hour were ~2 MB/hour of the RSS slope this soak
    # measures (24k Python blocks an hour, soak-2026-12-03e.txt), the instrument's own growth.
    ledger_path = root / "committed.tsv"
    ledger = open(ledger_path, "w", buffering=1 << 16)
    lock = threading.Lock()

    def on_rows(batch):
        now = time.time()
        with lock:
            for r in batch:
                key = r.end if r.end >= 1e9 else now
                ledger.write(f"{r.row_id()}\t{r.source}\t{r.uri}\t{r.level}\t{key!r}\n")

    ix = Indexer(cfg, on_rows=on_rows)
    stop = threading.Event()
    reader_stats = collections.Counter()
    reader_errors: list = []

    reader_arc = pystream.open(cfg.archive)

    def reader():
        arc = reader_arc
        queries = ["a red square moves", "a green circle", "an empty scene", "a blue shape"]
        n = 0
        while not stop.wait(1.0):
            n += 1
            try:
                if n % 2:
                    hits = arc.search(queries[n % len(queries)], k=10)
                else:
                    hits = arc.search(queries[n % len(queries)], k=10,
                                      sources=[f"cam{n % max(args.cameras, 1)}"],
                                      since=time.time() - 120)
                reader_stats["queries"] += 1
                reader_stats["hits"] += len(hits)
                if n % 10 == 0:
                    reader_stats["counts"] += 1
                    arc.table.count_rows()
            except Exception as e:  # noqa: BLE001 - counted and reported
                if "no pystream archive" in str(e) or "not found" in str(e).lower():
                    continue  # before the first commit
                reader_errors.append(f"{type(e).__name__}: {e}")
                traceback.print_exc()

    def folder_feed():
        i = 0
        while not stop.wait(args.file_every):
            name = f"rec{i:05d}.mp4"
            write_clip(staging / name, 20, fps=2, seed=1000 + i)
            os.replace(staging / name, folder / name)
            i += 1
            # the recordings folder has a retention of its own (the rows outlive the files)
            prune_recordings(folder, max_age_s=args.retention_s, in_use_s=30)
        folder_feed.files = i
    folder_feed.files = 0

    # A kill (SIGTERM, Ctrl-C) still runs the finally below: the senders are in their own
    # sessions and would otherwise outlive the soak, loading the box.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for c in cams:
        c.start()
    ix.start()
    threads = ([] if args.no_reader else
               [threading.Thread(target=reader, name="soak-reader", daemon=True)]) + \
              ([] if args.no_files else
               [threading.Thread(target=folder_feed, name="soak-files", daemon=True)])
    for t in threads:
        t.start()
    t0 = time.monotonic()
    samples = []
    header = ("min  rss_mb  (max)  fds thr  frags (min) vers  ckpt_kb cache_mb   rows  pending  reconn gaps "
              "dropped queries errors cam_cycles  heap_used heap_free arrow_mb py_kblk rcache_mb  anon_mb "
              "file_mb lazyfree")
    print(f"soak: {args.cameras} cameras, a file every {args.file_every:g} s, retention "
          f"{args.retention_s:g} s, {args.minutes:g} min; work dir {root}", flush=True)
    print(header, flush=True)
    next_sample = t0 + 60
    # RSS and fragments are also sampled every few seconds: both rise between two maintenance
    # runs (fragments from the commits, RSS until maintenance trims the heap), and a once-a-minute
    # sample taken at a slowly drifting phase of the ~30 s maintenance cycle makes a sawtooth
    # with a period of tens of minutes (benchmarks/results/soak-2026-12-02e.txt) that biases the
    # slope. The slope is therefore taken over each minute's minimum RSS (right after a trim,
    # the same phase every minute); the maxima are printed beside it.
    rss_window, frag_window = [], []
    next_fast = t0
    try:
        while time.monotonic() - t0 < args.minutes * 60:
            now = time.monotonic()
            for c in cams if not args.no_outages else ():
                c.tick(now)
            if now >= next_fast:
                next_fast += 2.0
                rss_window.append(status_mb("VmRSS")["VmRSS"])  # only RSS every 2 s
                if len(rss_window) % 5 == 0:
                    frag_window.append(len(ix.writer.table.to_lance().get_fragments()))
            if now >= next_sample:
                next_sample += 60
                if args.malloc_trim:
                    ctypes.CDLL("libc.so.6").malloc_trim(0)
                minute = round((now - t0) / 60)
                if args.heap_dumps and minute % 5 == 0:
                    jemalloc_dump(args.heap_dumps / f"heap-{minute:03d}.heap")
                if census:
                    print(f"# shapes minute={minute} {census.line()}", flush=True)
                if args.smaps_dumps and minute % 5 == 0:
                    (args.smaps_dumps / f"smaps-{minute:03d}").write_text(
                        Path("/proc/self/smaps").read_text())
                    (args.smaps_dumps / f"types-{minute:03d}").write_text(python_types())
                p = proc_numbers()
                ds = ix.writer.table.to_lance()
                s = ix.status()
                srcs = s["sources"].values()
                row = dict(t=now - t0, **p, fragments=len(ds.get_fragments()),
                           versions=count_versions(ix.writer.table),
                           ckpt_kb=ix.checkpoints.size_bytes() / 1024,
                           cache_mb=(getattr(ix.writer.session, "size_bytes", 0) or 0) / 2**20,
                           reader_cache_mb=(getattr(reader_arc.session, "size_bytes", 0)
                                            or 0) / 2**20,
                           rows=ix.writer.table.count_rows(), pending=s["writer"]["pending"],
                           reconnects=sum(src.status().get("reconnects", 0)
                                          for src in ix.sources if hasattr(src, "url")),
                           gaps=sum(len(x["gaps"]) for x in srcs),
                           dropped=sum(x.get("frames_dropped", 0) for x in srcs))
                row["rss_mb_max"] = max(rss_window + [row["rss_mb"]])
                row["rss_mb"] = min(rss_window + [row["rss_mb"]])
                row["fragments_min"] = min(frag_window + [row["fragments"]])
                row["fragments"] = max(frag_window + [row["fragments"]])
                rss_window, frag_window = [], []
                samples.append(row)
                print(f"{row['t'] / 60:3.0f} {row['rss_mb']:7.1f} {row['rss_mb_max']:6.1f} "
                      f"{row['fds']:4d} {row['threads']:3d} {row['fragments']:6d} "
                      f"{row['fragments_min']:5d} {row['versions']:4d} "
                      f"{row['ckpt_kb']:8.1f} {row['cache_mb']:8.1f} {row['rows']:6d} "
                      f"{row['pending']:8d} "
                      f"{row['reconnects']:7d} {row['gaps']:4d} {row['dropped']:7d} "
                      f"{reader_stats['queries']:7d} {len(reader_errors):6d} "
                      f"{sum(c.cycles for c in cams):6d}  {row['heap_used_mb']:9.1f} "
                      f"{row['heap_free_mb']:9.1f} {row['arrow_mb']:8.1f} "
                      f"{row['py_kblocks']:7.0f} {row['reader_cache_mb']:8.1f}  "
                      f"{row['rss_anon_mb']:7.1f} {row['rss_file_mb']:7.1f} "
                      f"{row['lazyfree_mb']:8.1f}", flush=True)
            time.sleep(0.2)
    finally:
        stop.set()
        for c in cams:
            c.kill()
        ix.stop()
        code = ix.wait()
        for t in threads:
            t.join(30)

    # Exactly once.
    ledger.close()
    committed: dict = {}  # id -> (source, uri, level, age key)
    for line in ledger_path.read_text().splitlines():
        i, src, uri, level, key = line.split("\t")
        committed[i] = (src, uri, int(level), float(key))
    table = pystream.open(cfg.archive).table
    rows = table.search().select(["id", "source", "uri", "level", "start", "end", "created"]) \
        .limit(None).to_arrow().to_pylist()
    ids = [r["id"] for r in rows]
    keys = [(r["source"], r["uri"], r["level"], round(r["start"], 3)) for r in rows]
    duplicated = (len(ids) - len(set(ids))) + (len(keys) - len(set(keys)))
    present = set(ids)
    last = ix.writer.last_retention or {}
    cutoff = (last.get("time") or 0.0) - args.retention_s
    lost = [i for i, (_, _, _, key) in committed.items() if i not in present and key >= cutoff]
    expired = sum(1 for i, (_, _, _, key) in committed.items() if i not in present and key < cutoff)
    # Recordings: every file whose rows are all still within retention has all its windows.
    per_file = collections.Counter(r["uri"] for r in rows if r["source"] == "recordings"
                                   and r["level"] == 0)
    newest = {}
    for i, (src, uri, level, key) in committed.items():
        if src == "recordings":
            newest[uri] = min(newest.get(uri, key), key)
    short_files = [u for u, oldest in newest.items() if oldest >= cutoff + 60
                   and per_file.get(u, 0) != 3]  # 20 samples: 5 chunks -> 3 windows

    print()
    use = [r for r in samples if r["t"] >= args.warmup * 60] or samples
    ts = [r["t"] for r in use]
    for key in ("rss_mb", "rss_mb_max", "fds", "threads", "fragments", "versions", "ckpt_kb", "cache_mb",
                "heap_used_mb", "heap_free_mb", "arrow_mb", "py_kblocks", "reader_cache_mb",
                "rss_anon_mb", "rss_file_mb", "lazyfree_mb"):
        print(f"{key}_per_hour={slope_per_hour(ts, [r[key] for r in use]):.2f}  "
              f"({key} min {min(r[key] for r in use):.1f}, max {max(r[key] for r in use):.1f}, "
              f"last {use[-1][key]:.1f})")
    early = [r for r in samples if r["t"] >= 5 * 60] or samples
    early_slope = slope_per_hour([r["t"] for r in early], [r["rss_mb"] for r in early])
    print(f"rss_mb_per_hour_from_5min={early_slope:.2f}  (includes the caches filling)")
    print(f"rss_mb_per_hour={slope_per_hour(ts, [r['rss_mb'] for r in use]):.2f}  (each "
          f"minute's minimum RSS, sampled every 2 s; of the maxima: "
          f"{slope_per_hour(ts, [r['rss_mb_max'] for r in use]):.2f})")
    b_slope, b_half, n_blocks = slope_interval(ts, [r["rss_mb"] for r in use])
    print(f"rss_mb_per_hour_blocks={b_slope:.2f} +- {b_half:.2f}  (10-minute means, {n_blocks} "
          f"blocks, 95% interval: how far one run's slope can be trusted)")
    print(f"fragments_max={max(r['fragments'] for r in samples)}")
    print(f"versions_max={max(r['versions'] for r in samples)}")
    print(f"reader_errors={len(reader_errors)}")
    print(f"reader_queries={reader_stats['queries']} reader_hits={reader_stats['hits']}")
    print(f"rows_committed={len(committed)} rows_in_archive={len(rows)} "
          f"rows_expired_by_retention={expired} retention_deleted={ix.writer.retention_deleted}")
    print(f"rows_lost={len(lost)}")
    print(f"rows_duplicated={duplicated}")
    print(f"recordings_incomplete={len(short_files)} (files written {folder_feed.files})")
    print(f"camera_outages={sum(c.cycles for c in cams)} exit_code={code}")
    print(f"log records: {dict(levels)} (in {root / 'soak.log'}{'' if args.keep else ', deleted'})")
    stalls = ix.writer.stats()["errors"]
    print(f"writer_errors={stalls} maintenance_errors={ix.writer.maintenance_errors}")
    for e in reader_errors[:5]:
        print("reader error:", e)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
