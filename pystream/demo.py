"""`make demo`: index a few minutes of sample video plus a live local stream, then search.

Everything runs offline on this machine:
1. render sample recordings with pystream.synthetic.videos (events that need time: moving, appearing,
   stopping, crossing, changing colour) and write them as H.264 files into a watched folder;
2. push a live MPEG-TS stream of more such events to udp://127.0.0.1 in real time (PyAV);
3. run the indexer (folder + stream sources, the shipped model with its TempMe adapter, the
   streaming encoder) into an embedded LanceDB under demo_data/;
4. search the live archive for several captions and print source, seconds, score, and whether
   the hit overlaps the ground-truth event; then, for each event that moves one way, whether
   its caption beats the same words with the direction turned around; then stop cleanly.

    python -m pystream.demo                   # what `make demo` runs (about 3 minutes)
    python -m pystream.demo --out demo_data --files 1 --file-seconds 16 --live-seconds 16
"""

from __future__ import annotations

import argparse
import logging
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np

from .synthetic import videos as synth

log = logging.getLogger("pystream.demo")
SIZE = 128  # rendered frame size; the decoder resizes to the model's input in libav


def make_recordings(folder: Path, n: int, seconds: int, seed: int):
    """Write n recordings of concatenated events; return ground truth [(file, start, end, caption)]."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = []
    for i in range(n):
        frames, events = synth.render_stream_frames(seed + i, seconds, size=SIZE, fps=1.0)
        path = folder / f"recording_{i:02d}.mp4"
        tmp = folder / f".recording_{i:02d}.tmp.mp4"  # hidden temp, then rename, like real recorders
        synth.write_video(_repeat(frames, 4), tmp, fps=4.0)
        tmp.rename(path)
        truth += [(path.name, s, e, c) for s, e, c in events]
    return truth


def _repeat(frames: np.ndarray, k: int) -> np.ndarray:
    return np.repeat(frames, k, axis=0)  # 1 fps content shown at k fps (real players expect it)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LivePusher(threading.Thread):
    """Sends rendered frames as a live H.264 MPEG-TS stream over UDP, paced in real time."""

    def __init__(self, url: str, seconds: int, seed: int, fps: int = 4):
        super().__init__(daemon=True, name="demo-live")
        self.url, self.fps = url, fps
        self.frames, self.events = synth.render_stream_frames(seed, seconds, size=SIZE, fps=1.0)
        self.t0 = None  # wall-clock time of the first frame sent
        self.stop = threading.Event()

    def run(self):
        import av

        with av.open(self.url, mode="w", format="mpegts") as out:
            st = out.add_stream("libx264", rate=self.fps)
            st.width, st.height, st.pix_fmt = SIZE, SIZE, "yuv420p"
            st.options = {"tune": "zerolatency", "preset": "ultrafast", "g": str(self.fps)}
            self.t0 = time.time()
            for i, rgb in enumerate(_repeat(self.frames, self.fps)):
                if self.stop.is_set():
                    break
                delay = self.t0 + i / self.fps - time.time()
                if delay > 0:
                    time.sleep(delay)
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = i
                for pkt in st.encode(frame):
                    out.mux(pkt)
            for pkt in st.encode():
                out.mux(pkt)


def run(out: Path, live_seconds: int, model: str, n_files: int, file_seconds: int) -> int:
    from .config import parse_config
    from .pipeline import Indexer

    for sub in ("archive", "state", "videos"):
        shutil.rmtree(out / sub, ignore_errors=True)
    print(f"[1/4] rendering {n_files} recordings of {file_seconds} s into {out / 'videos'}")
    truth = make_recordings(out / "videos", n_files, file_seconds, seed=100)

    port = free_udp_port()
    url = f"udp://127.0.0.1:{port}"
    cfg = parse_config({
        "archive": str(out / "archive"),
        "state_dir": str(out / "state"),
        "model": model,
        "merge": {"preset": "default"},
        "sample_fps": 1.0,
        "coarse_windows": 0,
        "writer": {"flush_interval_s": 0.5, "index_min_rows": 4096},
        "http": {"enabled": False},
        "log": {"level": "WARNING", "format": "text"},
        "sources": [
            {"type": "folder", "name": "recordings", "path": str(out / "videos"),
             "stable_s": 1.0, "scan_interval_s": 5.0},
            {"type": "stream", "name": "live-cam", "url": url, "stall_timeout_s": 10,
             "open_timeout_s": 10, "read_timeout_s": 5},
        ],
    }, where="demo config")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(f"[2/4] starting the indexer (model {model}) and a live stream on {url}")
    ix = Indexer(cfg)
    ix.start()
    pusher = LivePusher(url, live_seconds, seed=7)
    pusher.start()
    try:
        _wait_and_report(ix, pusher, n_files)
    finally:
        pusher.stop.set()
        ix.stop()
        code = ix.wait()
    print(f"[4/4] searching {out / 'archive'}")
    _search(cfg, ix.model, truth, pusher)
    print(f"indexer exit code {code}")
    return code


def _wait_and_report(ix, pusher, n_files):
    deadline = time.time() + pusher.frames.shape[0] + 120
    last = 0.0
    while time.time() < deadline:
        st = ix.status()["sources"]
        rec, cam = st.get("recordings", {}), st.get("live-cam", {})
        done = rec.get("files_done", 0) >= n_files and not pusher.is_alive()
        if time.time() - last > 5 or done:
            last = time.time()
            lag = cam.get("lag_s")
            print(f"      recordings: {rec.get('files_done', 0)}/{n_files} files, "
                  f"{rec.get('rows', 0)} rows | live-cam: {cam.get('state', '?')}, "
                  f"{cam.get('rows', 0)} rows, lag {lag if lag is None else round(lag, 1)} s")
        if done:
            time.sleep(2.0)  # the live stream's last windows
            return
        time.sleep(0.5)
    print("      (time limit reached; searching what is indexed)")


def _search(cfg, model, truth, pusher):
    import pystream

    arc = pystream.open(cfg.archive, model=model)  # the loaded model; by default the recorded one
    print(f"      {arc.count()} rows in the archive: {arc.stats().get('rows_per_source')}")
    live_truth = [("live-cam", pusher.t0 + s, pusher.t0 + e, c) for s, e, c in pusher.events] \
        if pusher.t0 else []
    queries = [c for _, _, _, c in truth[:: max(1, len(truth) // 4)]][:4]
    queries += [c for _, _, _, c in live_truth[:2]]
    for q in queries:
        print(f'\n  query: "{q}"')
        for hit in arc.search(q, k=3):
            where = Path(hit.uri).name if hit.source == "recordings" else hit.source
            if hit.source == "live-cam":
                span = f"{time.strftime('%H:%M:%S', time.localtime(hit.start))}-" \
                       f"{time.strftime('%H:%M:%S', time.localtime(hit.end))}"
                gts = live_truth
            else:
                span = f"{hit.start:6.1f}-{hit.end:6.1f} s"
                gts = [t for t in truth if t[0] == where]
            match = any(c == q and s < hit.end and hit.start < e for _, s, e, c in gts)
            print(f"    {hit.score:6.3f}  {where:<18} {span}  {'<- matches the event' if match else ''}")
    events = [("recordings", name, s, e, c) for name, s, e, c in truth]
    events += [(src, None, s, e, c) for src, s, e, c in live_truth]
    direction_check(arc, events)


def direction_check(arc, events, min_cover: float = 0.75) -> tuple[int, int]:
    """Which way does it move? For each event whose caption names a direction, score the caption
    and the same words with the direction turned around ("moves left" / "moves right") on the
    window that lies most inside the event; the model knows the direction when its caption wins.
    An event whose best window is less than ``min_cover`` inside it (a short event, or one cut
    by the end of a recording) is skipped: a window that is mostly another event does not ask
    which way this one went. ``events``: (source, file name or None, start, end, caption).
    Prints one line per event and a total; returns (told apart, events checked)."""
    from .archive import sql_string
    from .synthetic.vocabulary import opposite_direction

    rows, skipped = [], 0
    for source, name, s, e, caption in events:
        other = opposite_direction(caption)
        if other is None:
            continue
        scores = []
        for text in (caption, other):
            q = arc.query(text).where(sources=[source], since=s, until=e, level=0)
            if name is not None:
                q = q.where(f"uri LIKE {sql_string('%' + name)}")
            scores.append({h.id: h for h in q.limit(100).to_hits()})
        cover = {i: (min(h.end, e) - max(h.start, s)) / max(h.end - h.start, 1e-9)
                 for i, h in scores[0].items()}
        best = max(cover, key=cover.get, default=None)
        if best is None or cover[best] < min_cover or best not in scores[1]:
            skipped += 1
            continue
        rows.append((caption, other, scores[0][best].score, scores[1][best].score))
    told = sum(a > b for _, _, a, b in rows)
    print("\n  which way? each caption that names a direction against the same words turned "
          "around,\n  scored on the window that lies most inside its event:")
    for caption, other, a, b in rows:
        print(f"    {a:6.3f} \"{caption}\"  vs  {b:6.3f} \"{other}\"  "
              f"{'<- right way' if a > b else '<- WRONG way'}")
    print(f"  direction told apart: {told} of {len(rows)} events"
          f"{f' ({skipped} skipped: no window at least {min_cover:.0%} inside them)' if skipped else ''}")
    return told, len(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_data", type=Path)
    ap.add_argument("--live-seconds", type=int, default=60)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--file-seconds", type=int, default=45)
    ap.add_argument("--model", default="shipped-tempme")
    a = ap.parse_args(argv)
    return run(a.out, a.live_seconds, a.model, a.files, a.file_seconds)


if __name__ == "__main__":
    raise SystemExit(main())
