"""What a live recording (`record:`) costs per camera: reader CPU with and without it, and disk.

One camera = a 720p25 H.264 stream (2 s GOP, about 2 Mbit/s, made once with PyAV) sent in real
time over UDP by `ffmpeg -re -c copy` (tests/streams.py's sender). The same StreamSource reads it
twice side by side in one run, once with `record:` and once without, for `--seconds` each
(alternating `--rounds` times, to average out the shared box); CPU is the reader thread's own
(time.thread_time in the thread, via the process's per-thread clocks), so the sender and the
other reader do not count.

    python benchmarks/recording.py --seconds 20 --rounds 2

Prints `reader_cpu_share_without`, `reader_cpu_share_with` (share of one core),
`recording_cpu_share` (the difference), `recording_cpu_ratio` (with / without),
`disk_mb_per_min`, `segments`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_clip(path: Path, seconds: int = 20, fps: int = 25) -> None:
    import av

    w, h = 1280, 720
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps, options={"g": str(2 * fps), "preset": "veryfast",
                                                      "b": "2M", "maxrate": "2M",
                                                      "bufsize": "4M"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        rng = np.random.default_rng(0)
        bg = rng.integers(40, 90, (h, w, 3), dtype=np.uint8)
        for i in range(seconds * fps):
            img = bg.copy()
            x = (i * 7) % (w - 200)
            img[300:420, x:x + 200] = (220, 220, 220)  # a van crossing
            img += rng.integers(0, 6, (h, w, 3), dtype=np.uint8)  # sensor noise
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_once(clip: Path, seconds: float, record_dir: str | None) -> dict:
    from pystream.sources.stream import StreamSource

    port = free_udp_port()
    sender = subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop",
                               "-1", "-i", str(clip), "-c", "copy", "-f", "mpegts",
                               f"udp://127.0.0.1:{port}?pkt_size=1316"])
    record = {"dir": record_dir, "segment_s": 10, "max_age_h": None} if record_dir else None
    src = StreamSource("cam", f"udp://127.0.0.1:{port}", fps=1.0, size=224, record=record)
    stop = threading.Event()
    frames = [0]

    def consume():
        for item in src.segments(stop):
            if hasattr(item, "frames"):
                for _ in item.frames:
                    frames[0] += 1

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    # Measure the reader thread's CPU from its native thread id.
    deadline = time.monotonic() + 20
    reader = None
    while reader is None and time.monotonic() < deadline:
        r = src._reader
        if r is not None and r.native_id is not None and r.opened_at is not None:
            reader = r
        time.sleep(0.05)
    assert reader is not None, "the stream did not open"
    time.sleep(2.0)  # past probing
    clk = time.pthread_getcpuclockid(reader.ident)
    c0, w0 = time.clock_gettime(clk), time.monotonic()
    rec0 = reader.recorder.bytes if reader.recorder else 0
    time.sleep(seconds)
    c1, w1 = time.clock_gettime(clk), time.monotonic()
    rec1 = reader.recorder.bytes if reader.recorder else 0
    stop.set()
    sender.kill()
    sender.wait()
    t.join(10)
    return {"cpu_share": (c1 - c0) / (w1 - w0), "bytes_per_s": (rec1 - rec0) / (w1 - w0),
            "frames": frames[0], "decode": "keyframes" if reader.keyframes_only else "all"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="pystream-recbench-"))
    try:
        clip = tmp / "cam720.mp4"
        make_clip(clip)
        size_mbit = os.path.getsize(clip) * 8 / 1e6 / 20
        print(f"clip: 1280x720 25 fps H.264, {size_mbit:.2f} Mbit/s, GOP 2 s")
        without, with_ = [], []
        for i in range(args.rounds):
            for rec in (False, True):
                d = str(tmp / f"rec{i}") if rec else None
                r = run_once(clip, args.seconds, d)
                (with_ if rec else without).append(r)
                print(f"round {i} record={rec}: reader CPU {100 * r['cpu_share']:.2f}% of a core, "
                      f"decode={r['decode']}, frames={r['frames']}"
                      + (f", {r['bytes_per_s'] * 60 / 1e6:.1f} MB/min" if rec else ""))
        cw = float(np.mean([r["cpu_share"] for r in with_]))
        co = float(np.mean([r["cpu_share"] for r in without]))
        mb = float(np.mean([r["bytes_per_s"] for r in with_])) * 60 / 1e6
        segs = sum(len(list((tmp / f"rec{i}" / "cam").glob("*.ts"))) for i in range(args.rounds))
        print(f"reader_cpu_share_without={100 * co:.2f}%")
        print(f"reader_cpu_share_with={100 * cw:.2f}%")
        print(f"recording_cpu_share={100 * (cw - co):.2f}%  (of one core, per camera)")
        print(f"recording_cpu_ratio={cw / co:.2f}")
        print(f"disk_mb_per_min={mb:.1f}  (= the stream's bitrate: no re-encoding; "
              f"{mb * 60 / 1000:.2f} GB/h)")
        print(f"segments={segs}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
