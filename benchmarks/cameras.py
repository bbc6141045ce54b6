"""How many live 720p cameras one box indexes in real time, per configuration, side by side.

    python benchmarks/cameras.py [--seconds 120] [--configs baseline,tempme,default]
                                 [--height 720] [--start 8 | --start baseline=8,default=32]
                                 [--max 64] [--skip-live] [--encoder-configs ...]
                                 [--senders replay|ffmpeg]

1. Renders surveillance-like clips once (cached in ~/.cache/pystream-bench): a fixed camera on
   a textured scene (procedural buildings, road, foliage), objects entering, crossing, stopping
   and leaving, slow lighting drift, sensor noise; scenes from almost empty to busy; H.264,
   25 fps, 1 s GOP, as IP cameras send it.
2. Encoder only (no decoding): frames/s of each configuration on the same decoded frames,
   interleaved rounds, plus fidelity against exact fp32 TempMe (cosine of window embeddings,
   recall@10 agreement of queries) with random ViT-B/32 weights.
3. Decode cost per camera (CPU share of one core for a real-time 25 fps stream): all frames vs
   keyframes only, at 1080p, 720p and 360p (the substream case, ``index_url``).
4. Live: N cameras sending MPEG-TS over UDP on 127.0.0.1 in real time (``--senders replay``:
   one process replaying the clips muxed once by ffmpeg ``-c copy``, paced by their PCR,
   benchmarks/ts_replay.py; ``--senders ffmpeg``: one ``ffmpeg -re -stream_loop -1 -c copy``
   per camera, 4x the sender CPU) and the real Indexer with the configuration under test; a run holds when, after a warm-up, the
   p95 of (commit time - window end) is within hop + 2 s, no sampled frame was dropped, every
   camera delivered >= 90% of its frames and the encoder queue did not grow. The largest N held
   is found by doubling then bisection. Per-stage CPU shares come from per-thread CPU times.

Configurations (all ViT-B/32 shapes, random weights, 1 fps, windows of 12 s every 4 s):
  baseline  per-frame CLIP, fp32, every frame decoded (what pystream did before this work)
  tempme    TempMe fp32, every frame decoded (the previous default)
  default   the shipped config/default.yaml: precision auto, static-patch reuse, decode auto
  (also: bf16 = TempMe bf16 without reuse, perframe-bf16 = per-frame CLIP in bf16, int8 = the
  default with int8 dynamic quantisation instead of bf16, for the share of each lever)

Last lines: cameras_held_baseline=, cameras_held=, cameras_ratio=.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from pystream.config import load_config, parse_config  # noqa: E402
from pystream.model.configs import random_clip  # noqa: E402
from pystream.model.reuse import ReuseSettings  # noqa: E402
from pystream.model.streaming import Chunk, StreamingEncoder  # noqa: E402
from pystream.model.tempme import ClipVideoModel  # noqa: E402
from ts_replay import mux_ts  # noqa: E402

CACHE = Path(os.environ.get("PYSTREAM_BENCH_CACHE", Path.home() / ".cache" / "pystream-bench"))
FPS_VIDEO = 25
SCENES = ("empty", "quiet", "busy")


# ----------------------------------------------------------------------------- rendering

def _texture(rng, h, w):
    """A scene a fixed camera might see: sky, buildings with windows, a road, foliage."""
    img = np.zeros((h, w, 3), np.float32)
    sky = np.linspace(200, 140, h // 3)[:, None, None] * np.array([0.8, 0.9, 1.0])
    img[: h // 3] = sky
    img[h // 3:] = np.array([90, 95, 85])  # ground
    x = 0
    while x < w:  # buildings
        bw = int(rng.integers(w // 12, w // 5))
        bh = int(rng.integers(h // 6, h // 2))
        col = rng.uniform(60, 180, 3)
        top = max(0, h // 2 - bh)
        img[top:h // 2, x:x + bw] = col
        for wy in range(top + 8, h // 2 - 8, 18):  # windows
            for wx in range(x + 6, x + bw - 10, 16):
                img[wy:wy + 8, wx:wx + 8] = col * rng.uniform(0.3, 1.3)
        x += bw + int(rng.integers(0, w // 30))
    img[int(h * 0.62):int(h * 0.8)] = np.array([70, 70, 75])  # road
    for lx in range(0, w, w // 16):  # lane marks
        img[int(h * 0.71):int(h * 0.715), lx:lx + w // 40] = 220
    # foliage / asphalt grain: low-pass noise at two scales
    for scale, amp in ((16, 18.0), (4, 8.0)):
        n = rng.normal(0, 1, (h // scale + 1, w // scale + 1, 1)).astype(np.float32)
        n = np.repeat(np.repeat(n, scale, 0), scale, 1)[:h, :w]
        img += amp * n
    return img


def _objects(rng, scene, seconds, h, w):
    """Tracks: (t_in, t_out, y, x0, x1, size, colour, stop_at): enter, cross, maybe stop."""
    n = {"empty": 1, "quiet": 4, "busy": 16}[scene]
    tracks = []
    for _ in range(n):
        t_in = float(rng.uniform(0, seconds * 0.8))
        dur = float(rng.uniform(6, 20))
        y = int(rng.uniform(h * 0.55, h * 0.85))
        left = rng.random() < 0.5
        x0, x1 = (-80, w + 80) if left else (w + 80, -80)
        size = int(rng.uniform(h * 0.05, h * 0.15))
        col = rng.uniform(0, 255, 3)
        stop = float(rng.uniform(0.3, 0.7)) if rng.random() < 0.3 else None
        tracks.append((t_in, t_in + dur, y, x0, x1, size, col, stop))
    return tracks


def render_clip(path: Path, scene: str, seconds: int, height: int, seed: int):
    w = height * 16 // 9
    rng = np.random.default_rng(seed)
    bg = _texture(rng, height, w)
    tracks = _objects(rng, scene, seconds, height, w)
    noise = [rng.normal(0, 2.5, (height, w, 1)).astype(np.float32) for _ in range(8)]
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as c:
        s = c.add_stream("libx264", rate=FPS_VIDEO)
        s.width, s.height, s.pix_fmt = w, height, "yuv420p"
        s.options = {"g": str(FPS_VIDEO), "keyint_min": str(FPS_VIDEO), "sc_threshold": "0",
                     "preset": "veryfast", "crf": "26", "bf": "0"}
        for i in range(seconds * FPS_VIDEO):
            t = i / FPS_VIDEO
            gain = 1.0 + 0.08 * np.sin(2 * np.pi * t / seconds)  # slow lighting drift
            img = bg * gain + noise[i % len(noise)]
            for t_in, t_out, y, x0, x1, size, col, stop in tracks:
                if not t_in <= t < t_out:
                    continue
                u = (t - t_in) / (t_out - t_in)
                if stop is not None:  # stops for a while in the middle of its path
                    u = u * 2 if u < stop / 2 else (stop if u < stop + (1 - stop) / 2 else
                                                     stop + (u - stop - (1 - stop) / 2) * 2)
                    u = min(u, 1.0)
                x = int(x0 + (x1 - x0) * u)
                a, b = max(0, x - size), min(w, x + size)
                if a < b:
                    img[y - size // 2:y + size // 2, a:b] = col
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), "rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    tmp.rename(path)


def clips(height: int, seconds: int = 60, scenes=SCENES) -> list[Path]:
    CACHE.mkdir(parents=True, exist_ok=True)
    out = []
    for i, scene in enumerate(SCENES):
        if scene not in scenes:
            continue
        p = CACHE / f"cam-{scene}-{height}p-{seconds}s-v1.mp4"
        if not p.exists():
            print(f"rendering {p.name} ...", flush=True)
            render_clip(p, scene, seconds, height, seed=100 + i)
        out.append(p)
    return out


def decoded_frames(path: Path, size: int, n: int, offset_s: float = 0.0) -> torch.Tensor:
    """n frames at 1 fps from ``offset_s``, resized in libav: uint8 [n, size, size, 3]."""
    from pystream.decode import decode_frames

    out = []
    for f in decode_frames(str(path), 1.0, size):
        if f.pts_s + 1e-6 < offset_s:
            continue
        out.append(f.rgb)
        if len(out) == n:
            break
    if not out:  # the loop below would never end
        raise ValueError(f"{path.name} has no frame after {offset_s} s")
    while len(out) < n:  # loop like the senders do
        out += out[: n - len(out)]
    return torch.from_numpy(np.stack(out))


# ----------------------------------------------------------------------------- configurations

def config_overrides(name: str) -> dict:
    if name == "baseline":
        return dict(merge="off", precision="fp32", reuse={"threshold": 0}, decode="all",
                    decode_threads=0)
    if name == "tempme":
        return dict(merge="default", precision="fp32", reuse={"threshold": 0}, decode="all",
                    decode_threads=0)
    if name == "default":
        d = load_config(None)  # the shipped defaults, whatever they are
        return dict(merge=d.merge.schedule_dict(), precision=d.precision,
                    reuse=d.reuse.model_dump(), decode="auto", decode_threads=1)
    if name == "perframe-bf16":  # per-frame CLIP with the bf16 lever alone
        return dict(merge="off", precision="bf16", reuse={"threshold": 0}, decode="auto",
                    decode_threads=1)
    if name == "int8":  # the default with int8 dynamic quantisation instead of bf16
        ov = config_overrides("default")
        ov["precision"] = "int8"
        return ov
    if name.startswith("reuse"):  # the default with other reuse settings: reuse0.2 or reuse0.2r16
        thr, _, refresh = name[len("reuse"):].partition("r")
        ov = config_overrides("default")
        ov["reuse"] = {"threshold": float(thr),
                       "refresh_chunks": int(refresh or ov["reuse"].get("refresh_chunks", 8))}
        return ov
    if name.startswith("bf16"):
        return dict(merge="default", precision="bf16", reuse={"threshold": 0}, decode="auto",
                    decode_threads=1)
    raise SystemExit(f"unknown configuration {name!r}")


def encoder_for(model, ov: dict) -> StreamingEncoder:
    r = ov["reuse"]
    return StreamingEncoder(model, schedule=ov["merge"], coarse_windows=0,
                            precision=ov["precision"],
                            reuse=ReuseSettings(r["threshold"], r.get("refresh_chunks", 8)))


# ----------------------------------------------------------------------------- encoder only

def fidelity(ref: dict, got: dict, queries: np.ndarray, k: int = 10):
    """(mean cosine, min cosine, recall@k agreement) of embeddings ``got`` against ``ref``
    (both {window key: unit vector}). Agreement: the share of each query's top-k windows under
    ``ref`` that are also in its top-k under ``got``, averaged over the queries."""
    if set(ref) != set(got):
        raise ValueError(f"windows differ: {len(set(ref) ^ set(got))} not in both")
    keys = sorted(ref)
    R = np.stack([ref[x] for x in keys])
    A = np.stack([got[x] for x in keys])
    cos = np.sum(R * A, axis=1) / (np.linalg.norm(R, axis=1) * np.linalg.norm(A, axis=1))
    k = min(k, len(keys))
    agree = np.mean([len(set(np.argsort(-R @ q)[:k]) & set(np.argsort(-A @ q)[:k])) / k
                     for q in queries])
    return float(cos.mean()), float(cos.min()), float(agree)


def encoder_section(names, streams: int, frames_per_cam: int, height: int,
                    model_name: str = "b32"):
    if model_name == "shipped":
        model = ClipVideoModel.from_pretrained("shipped")
    else:
        model = ClipVideoModel(random_clip(model_name), model_id=f"random-{model_name}")
    paths = clips(height)
    size = model.image_size
    cams = [decoded_frames(paths[s % len(paths)], size, frames_per_cam,
                           offset_s=7.0 * (s // len(paths) % 7))  # 7 offsets within a clip
            for s in range(streams)]
    n_chunks = frames_per_cam // 4
    names = list(dict.fromkeys(["tempme", *names]))  # exact fp32 TempMe is the fidelity reference
    encs = {n: encoder_for(model, config_overrides(n)) for n in names}
    out_vecs = {n: [] for n in names}
    fps = {n: [] for n in names}
    torch.set_grad_enabled(False)
    for c in range(n_chunks):  # every chunk of every camera, configurations interleaved
        for n in names:
            chunks = [Chunk(f"cam{s}", cams[s][4 * c:4 * c + 4], [4.0 * c + j for j in range(4)],
                            4 * c, 1.0) for s in range(streams)]
            t0 = time.perf_counter()
            em = encs[n].encode(chunks)
            dt = time.perf_counter() - t0
            if c >= 3:  # windows are full: steady state
                fps[n].append(4 * streams / dt)
            out_vecs[n] += [(e.stream, e.first_frame, e.vector) for e in em]
    ref = {(s, f): v for s, f, v in out_vecs["tempme"]}
    base = statistics.median(fps["baseline"]) if "baseline" in fps else None
    print(f"\nencoder only: {streams} cameras x {frames_per_cam} frames, model {model.model_id} "
          f"({size} px), threads={torch.get_num_threads()}")
    print(f"{'config':<10}{'frames/s':>10}{'x baseline':>12}{'x tempme':>10}{'reused':>8}"
          f"{'cos mean':>10}{'cos min':>9}{'R@10 agree':>12}")
    qs = torch.randn(64, model.dim, generator=torch.Generator().manual_seed(0))
    qs = torch.nn.functional.normalize(qs, dim=-1).numpy()
    results = {}
    for n in names:
        got = {(s, f): v for s, f, v in out_vecs[n]}
        cos_mean, cos_min, agree = fidelity(ref, got, qs)
        f = statistics.median(fps[n])
        reused = np.mean([encs[n].reused_share(f"cam{s}") for s in range(streams)])
        results[n] = dict(fps=f, cos_mean=cos_mean, cos_min=cos_min, agree=agree)
        if encs[n].reuse is not None:
            print(f"  ({n}: reuse state per camera {encs[n].reuse.nbytes('cam0') / 2**20:.2f} MiB, "
                  f"constant over time)")
        print(f"{n:<10}{f:>10.1f}{(f / base if base else float('nan')):>12.2f}"
              f"{f / statistics.median(fps['tempme']):>10.2f}{reused:>8.2f}{cos_mean:>10.4f}"
              f"{cos_min:>9.4f}{agree:>12.2f}")
    return results


# ----------------------------------------------------------------------------- decode cost

def decode_section(seconds: int = 20):
    print("\ndecode cost per camera (share of one core for a real-time 25 fps stream):")
    print(f"{'input':<8}{'all frames':>12}{'keyframes (decoder skips)':>27}"
          f"{'keyframes (packets skipped, as the reader does)':>49}")
    for height in (1080, 720, 360):
        path = clips(height, scenes=("quiet",))[0]
        row = []
        for skip, drop in (("DEFAULT", False), ("NONKEY", False), ("NONKEY", True)):
            with av.open(str(path)) as c:
                st = c.streams.video[0]
                st.codec_context.thread_count = 1
                st.codec_context.skip_frame = skip
                t0 = time.thread_time()
                for pkt in c.demux(st):
                    if pkt.pts is not None and float(pkt.pts * pkt.time_base) > seconds:
                        break
                    if drop and not pkt.is_keyframe:
                        continue
                    for fr in pkt.decode():
                        fr.reformat(width=224, height=224, format="rgb24") if fr.key_frame else None
                row.append((time.thread_time() - t0) / seconds)
        print(f"{str(height) + 'p':<8}{100 * row[0]:>11.2f}%{100 * row[1]:>26.2f}%{100 * row[2]:>48.2f}%")


# ----------------------------------------------------------------------------- live

class Senders:
    """N live cameras on 127.0.0.1: ``replay`` (default) sends pre-muxed MPEG-TS from one
    process paced by its PCR (benchmarks/ts_replay.py: 0.05% of a core per camera), ``ffmpeg``
    one ``ffmpeg -re -stream_loop -1 -c copy`` per camera (0.2% each, measured side by side);
    either way the indexer receives the same H.264 bytes in real time. Camera i plays clip
    i % len(paths) from offset 7 * (i // len(paths)) % 50 s."""

    def __init__(self, n: int, paths: list[Path], log_dir: Path, kind: str = "replay",
                 seconds: float = 120.0):
        self.procs, self.ports = [], []
        for i in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            self.ports.append(s.getsockname()[1])
            s.close()
        self.paths, self.log_dir, self.kind, self.seconds = paths, log_dir, kind, seconds

    def _offset(self, i: int) -> int:
        return (7 * (i // len(self.paths))) % 50

    def start(self):
        if self.kind == "replay":
            # sent for longer than the run (it is killed at the end); 50 s of offsets on top
            dur = int(self.seconds) + 60
            ts = [mux_ts(p, p.with_name(f"{p.stem}-{dur + 50}s.ts"), dur + 50) for p in self.paths]
            argv = [sys.executable, str(ROOT / "benchmarks" / "ts_replay.py"), "--seconds",
                    str(dur)] + [f"{port}:{ts[i % len(ts)]}:{self._offset(i)}"
                                 for i, port in enumerate(self.ports)]
            log = open(self.log_dir / "ts_replay.log", "w")
            self.procs.append(subprocess.Popen(argv, stdout=log, stderr=log,
                                               start_new_session=True))
            return self
        for i, port in enumerate(self.ports):
            p = self.paths[i % len(self.paths)]
            argv = ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
                    "-ss", str(self._offset(i)), "-i", str(p), "-c", "copy",
                    "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"]
            log = open(self.log_dir / f"ffmpeg-{i}.log", "w")
            self.procs.append(subprocess.Popen(argv, stdout=log, stderr=log,
                                               start_new_session=True))
        return self

    def stop(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.procs:
            p.wait()


def _thread_cpu() -> dict:
    """CPU seconds per thread of this process: native id -> seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
            out[int(tid)] = ((int(fields[11]) + int(fields[12])) / tick, comm)
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return out


def _machine_busy() -> tuple:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat), to tell how much CPU
    other processes took during a run: a run shares the box with nothing else only if that is
    about the senders' share."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v) - idle) / tick, sum(v) / tick


def _children_cpu(pids) -> float:
    """CPU seconds of the given processes (the ffmpeg senders)."""
    tick, out = os.sysconf("SC_CLK_TCK"), 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out += (int(fields[11]) + int(fields[12])) / tick
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return out


def _stage_of(name: str | None, comm: str = "") -> str:
    if comm.startswith("av:"):
        return "decode"  # libav's own frame/slice threads (decode_threads != 1)
    if name is None:
        return "encode"  # other native threads: torch's OpenMP workers
    if name.startswith("pystream-src-"):
        return "decode"
    if name.startswith("pystream-source-"):
        return "chunking"
    if name == "pystream-encoder":
        return "encode"
    if name == "pystream-clip-writer":
        return "store"
    return "other"


def live_run(name: str, n: int, seconds: float, model, paths, warmup: float = 25.0,
             senders_kind: str = "replay") -> dict:
    from pystream.pipeline import Indexer

    ov = config_overrides(name)
    root = Path(tempfile.mkdtemp(prefix="pystream-cams-"))
    senders = Senders(n, paths, root, senders_kind, seconds)
    sources = [dict(type="stream", name=f"cam{i}", url=f"udp://127.0.0.1:{p}",
                    decode=ov["decode"], decode_threads=ov["decode_threads"],
                    read_timeout_s=10, stall_timeout_s=20)
               for i, p in enumerate(senders.ports)]
    cfg = parse_config(dict(
        archive=str(root / "arc"), state_dir=str(root / "state"), model="bench",
        merge=ov["merge"], precision=ov["precision"], reuse=ov["reuse"], sample_fps=1.0,
        hop_chunks=1, coarse_windows=15, sources=sources, http={"enabled": False},
        batching={"max_batch_chunks": 64, "max_wait_s": 0.2, "queue_chunks": 256},
        writer={"batch_rows": 256, "flush_interval_s": 0.5, "optimize_interval_s": 3600}))
    lags, lock = [], threading.Lock()
    t_start = [0.0]

    def on_rows(rows):
        now = time.time()
        with lock:
            for r in rows:
                if r.level == 0 and r.end > t_start[0] + warmup:
                    lags.append(now - r.end)

    ix = Indexer(cfg, model=model, on_rows=on_rows)
    ix.start()  # receivers bind before the senders start, as real UDP listeners would
    time.sleep(1.0)
    senders.start()
    t_start[0] = time.time()
    queue, frames0 = [], None
    cpu0 = None
    try:
        while time.time() - t_start[0] < seconds:
            time.sleep(1.0)
            el = time.time() - t_start[0]
            queue.append((el, ix.status()["encoder"]["queued_chunks"]))
            if cpu0 is None and el >= warmup:
                cpu0, wall0 = _thread_cpu(), time.time()
                busy0, send0 = _machine_busy()[0], _children_cpu(p.pid for p in senders.procs)
                frames0 = {s.name: s.status()["frames"] for s in ix.sources}
                drop0 = {s.name: s.status()["dropped"] for s in ix.sources}
                resize0 = sum(s.status()["resize_cpu_s"] for s in ix.sources)
                stage0 = dict(ix.stage_s)
        cpu1, wall1 = _thread_cpu(), time.time()
        busy1, send1 = _machine_busy()[0], _children_cpu(p.pid for p in senders.procs)
        names = {t.native_id: t.name for t in threading.enumerate()}  # before the threads end
        st = {s.name: s.status() for s in ix.sources}
        stage1 = dict(ix.stage_s)
    finally:
        ix.stop()
        senders.stop()
        ix.wait(source_timeout=5, flush_timeout=30)
        shutil.rmtree(root, ignore_errors=True)
    span = wall1 - wall0
    share = {}
    for tid, (c, comm) in cpu1.items():
        stage = _stage_of(names.get(tid), comm)
        share[stage] = share.get(stage, 0.0) + (c - cpu0.get(tid, (0.0, ""))[0]) / span
    resize = (sum(s["resize_cpu_s"] for s in st.values()) - resize0) / span
    share["decode"] = share.get("decode", 0.0) - resize
    share["resize"] = resize
    thumbs = (stage1.get("rows", 0.0) - stage0.get("rows", 0.0)) / span
    share["encode"] = share.get("encode", 0.0) - thumbs
    share["thumbnails"] = thumbs
    ours = sum(share.values())
    senders_cores = (send1 - send0) / span
    others = (busy1 - busy0) / span - ours - senders_cores  # anything else on the machine
    got = [(st[k]["frames"] - frames0[k]) / span for k in st]
    dropped = sum(st[k]["dropped"] - drop0[k] for k in st)
    p95 = float(np.percentile(lags, 95)) if lags else float("inf")
    tail = [q for el, q in queue if el >= warmup]
    third = max(1, len(tail) // 3)
    growth = statistics.mean(tail[-third:]) - statistics.mean(tail[:third]) if tail else 0.0
    hop = 4.0
    held = (bool(lags) and p95 <= hop + 2.0 and dropped == 0 and min(got) >= 0.9
            and growth <= max(2.0, n / 4))
    return dict(n=n, held=held, p95=p95, rows=len(lags), dropped=dropped, min_fps=min(got),
                queue_growth=growth, share=share, senders=senders_cores, others=max(others, 0.0))


def _print_run(name, r):
    sh = " ".join(f"{k}={v:.2f}" for k, v in sorted(r["share"].items()))
    print(f"  {name:<9} N={r['n']:<3} {'HELD' if r['held'] else 'not held':<9} "
          f"p95_lag={r['p95']:.2f}s rows={r['rows']} dropped={r['dropped']} "
          f"min_fps={r['min_fps']:.2f} queue_growth={r['queue_growth']:.1f} cores: {sh} "
          f"| senders={r['senders']:.2f} other_processes={r['others']:.2f}", flush=True)


def largest_held(name, seconds, model, paths, start, maxn, senders_kind="replay"):
    runs = []
    lo, hi, n = 0, None, start
    while True:  # doubling, then bisection to within max(1, lo // 16)
        r = live_run(name, n, seconds, model, paths, senders_kind=senders_kind)
        runs.append(r)
        _print_run(name, r)
        if r["held"]:
            lo = n
        else:
            hi = n
        if hi is None:
            if n >= maxn:
                break
            n = min(maxn, n * 2)
            continue
        if hi - lo <= max(1, lo // 16):
            break
        n = (lo + hi) // 2
    return lo, runs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="baseline,tempme,default")
    ap.add_argument("--seconds", type=float, default=120.0, help="length of one live run")
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--start", default="8", help="first N tried: one number, or per "
                    "configuration, e.g. baseline=8,default=32 (others: 8)")
    ap.add_argument("--encoder-configs", help="configurations of the encoder-only section "
                    "(default: --configs), e.g. baseline,perframe-bf16,tempme,bf16,int8,default")
    ap.add_argument("--max", default="64", help="largest N tried: one number, or per "
                    "configuration like --start")
    ap.add_argument("--streams", type=int, default=8, help="cameras in the encoder-only section")
    ap.add_argument("--frames", type=int, default=48, help="frames per camera, encoder-only")
    ap.add_argument("--fidelity-models", default="b32,shipped",
                    help="models of the encoder-only section: b32 (random weights), shipped")
    ap.add_argument("--skip-live", action="store_true")
    ap.add_argument("--senders", choices=("replay", "ffmpeg"), default="replay",
                    help="live cameras: one process replaying pre-muxed MPEG-TS (default) or "
                    "one ffmpeg -re per camera")
    ap.add_argument("--skip-encoder", action="store_true")
    args = ap.parse_args()
    names = args.configs.split(",")
    def per_config(value: str, default: int) -> dict:
        if "=" not in value:
            return {n: int(value) for n in names}
        return {**{n: default for n in names},
                **{k: int(v) for k, v in (kv.split("=") for kv in value.split(","))}}
    starts, maxes = per_config(args.start, 8), per_config(args.max, 64)
    print(f"machine: {os.cpu_count()} cpus, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}; default config: {config_overrides('default')}")
    paths = clips(args.height)
    if not args.skip_encoder:
        for m in args.fidelity_models.split(","):
            encoder_section((args.encoder_configs or args.configs).split(","), args.streams,
                            args.frames, args.height, m)
        decode_section()
    if args.skip_live:
        return
    if shutil.which("ffmpeg") is None:
        raise SystemExit("the live part needs ffmpeg (scripts/install_test_deps.sh)")
    model = ClipVideoModel(random_clip("b32"), model_id="random-b32")
    torch.set_grad_enabled(False)
    held = {}
    print(f"\nlive: {args.height}p25 H.264 over UDP, 1 fps, {args.seconds:.0f} s per run "
          "(held: p95 lag <= hop + 2 s, no drops, >= 90% of frames, queue flat)")
    for name in names:
        held[name], _ = largest_held(name, args.seconds, model, paths, starts[name],
                                     maxes[name], args.senders)
        print(f"cameras_held_{name}={held[name]}", flush=True)
    base = held.get("baseline")
    best = held.get("default", max(held.values()))
    print(f"cameras_held_baseline={base}")
    print(f"cameras_held={best}")
    if base:
        print(f"cameras_ratio={best / base:.2f}")


if __name__ == "__main__":
    main()
