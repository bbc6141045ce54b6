"""Helpers for the source tests: small real videos and real local stream servers.

Everything listens on 127.0.0.1 only. Servers are subprocesses started in their own
process group so that ``stop()`` kills the whole tree (vlc forks helpers, ffmpeg may too);
use them as context managers or through fixtures with finalizers so a failing test never
leaves a server behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np

CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"
_FORMATS = {"mp4": "mp4", "mkv": "matroska", "ts": "mpegts", "mov": "mov"}

# A world-readable place for files that the RTSP server (running as nobody) must read;
# pytest's tmp_path lives under /tmp/pytest-of-root/ which nobody cannot enter.
SHARED_TMP = Path("/tmp/pystream-test-media")


def have(cmd: str) -> bool:
    return shutil.which(cmd) is not None


def make_video(path, seconds: float = 10, fps: int = 10, size=(160, 120), container=None,
               gop: int | None = None) -> Path:
    """Writes an H.264 video of moving coloured shapes (every frame differs).

    size is (width, height). container: "mp4" | "mkv" | "ts" | None (from the suffix).
    gop: keyframe interval in frames (default one per second, so that a client joining a
    live stream can start decoding quickly).
    """
    path = Path(path)
    fmt = _FORMATS.get(container or path.suffix.lstrip("."), None)
    w, h = size
    n = int(round(seconds * fps))
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(CODEC, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if CODEC == "libx264":
            s.options = {"g": str(gop or fps), "preset": "ultrafast", "tune": "zerolatency"}
        for i in range(n):
            a = np.zeros((h, w, 3), np.uint8)
            a[..., 2] = (i * 255 // max(n - 1, 1))  # blue ramps up over the video
            # a red square moving right, a green disc moving down
            x0 = (i * 4) % max(w - 20, 1)
            a[10:30, x0:x0 + 20] = (255, 0, 0)
            cy = (i * 3) % h
            a[(yy - cy) ** 2 + (xx - w // 2) ** 2 < 100] = (0, 255, 0)
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def shared_copy(src: Path, name: str | None = None) -> Path:
    """Copies ``src`` to a directory that user nobody can read (for vlc)."""
    SHARED_TMP.mkdir(parents=True, exist_ok=True)
    os.chmod(SHARED_TMP, 0o755)
    dst = SHARED_TMP / (name or f"{os.getpid()}-{Path(src).name}")
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o644)
    return dst


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_tcp(port: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class Server:
    """A subprocess in its own process group; ``stop()`` kills the group."""

    def __init__(self, argv: list[str], log: Path | None = None, cwd=None):
        self.argv = argv
        self.log = log
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Server":
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=self.cwd,
                                         start_new_session=True)
        finally:
            if self.log:
                out.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig) -> None:
        if self.alive():
            os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _as_nobody(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv  # vlc only refuses to run as root
    if have("runuser"):
        return ["runuser", "-u", "nobody", "--", *argv]
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]


class RtspServer(Server):
    """VLC serving ``media`` (looped) at rtsp://127.0.0.1:PORT/cam1 (see design.md)."""

    def __init__(self, media: Path, port: int | None = None, log: Path | None = None):
        self.port = port or free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/cam1"
        media = Path(media)
        argv = _as_nobody(["cvlc", "-I", "dummy", "--no-stats", str(media), "--loop",
                           "--sout", f"#rtp{{sdp={self.url}}}", "--sout-keep"])
        super().__init__(argv, log)

    def start(self) -> "RtspServer":
        super().start()
        if not wait_tcp(self.port, 20):
            self.stop()
            raise RuntimeError(f"vlc RTSP server did not start on port {self.port}")
        return self


def ffmpeg_udp(media: Path, port: int, log: Path | None = None) -> Server:
    """ffmpeg pushing ``media`` (looped, real time) as MPEG-TS to udp://127.0.0.1:PORT."""
    return Server(["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
                   "-i", str(media), "-c", "copy", "-f", "mpegts",
                   f"udp://127.0.0.1:{port}?pkt_size=1316"], log)


class HlsServer:
    """ffmpeg writing a live HLS playlist + ``python -m http.server`` on 127.0.0.1."""

    def __init__(self, media: Path, workdir: Path, log: Path | None = None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/live.m3u8"
        self.ffmpeg = Server(["ffmpeg", "-nostdin", "-loglevel", "error", "-re",
                              "-stream_loop", "-1", "-i", str(media), "-c", "copy",
                              "-f", "hls", "-hls_time", "1", "-hls_list_size", "4",
                              "-hls_flags", "delete_segments+omit_endlist",
                              str(self.dir / "live.m3u8")], log)
        self.http = Server([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                            str(self.port), "--directory", str(self.dir)], None)

    def start(self) -> "HlsServer":
        self.ffmpeg.start()
        self.http.start()
        deadline = time.monotonic() + 20
        # wait until the playlist lists a couple of segments
        while time.monotonic() < deadline:
            p = self.dir / "live.m3u8"
            if p.exists() and p.read_text().count(".ts") >= 2 and wait_tcp(self.port, 0.5):
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("HLS server did not start")

    def stop(self) -> None:
        self.ffmpeg.stop()
        self.http.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def write_slowly(src: Path, dst: Path, pieces: int = 8, pause: float = 0.3) -> None:
    """Copies ``src`` to ``dst`` in ``pieces`` writes with pauses and fsyncs, like a slow
    network copy (the file exists, partial, for pieces*pause seconds)."""
    data = Path(src).read_bytes()
    step = max(1, len(data) // pieces + 1)
    with open(dst, "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i:i + step])
            f.flush()
            os.fsync(f.fileno())
            time.sleep(pause)


class Collector:
    """Runs ``source.segments(stop)`` in a thread and records everything it yields.

    segments: list of dicts {"seg": Segment, "frames": [Frame...], "error": exc | None}.
    """

    def __init__(self, source):
        import threading

        self.source = source
        self.stop = threading.Event()
        self.events = []
        self.segments = []
        self.crash = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="collector")

    def start(self) -> "Collector":
        self.thread.start()
        return self

    def _run(self):
        from pystream.sources import SourceEvent

        try:
            for item in self.source.segments(self.stop):
                if isinstance(item, SourceEvent):
                    self.events.append(item)
                    continue
                rec = {"seg": item, "frames": [], "error": None}
                self.segments.append(rec)
                try:
                    for f in item.frames:
                        rec["frames"].append(f)
                except Exception as e:  # the daemon reports these; tests inspect them
                    rec["error"] = e
        except Exception as e:
            self.crash = e

    def kinds(self, kind):
        return [e for e in self.events if e.kind == kind]

    def frames(self):
        return [f for r in self.segments for f in r["frames"]]

    def wait_for(self, pred, timeout: float, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            if self.crash is not None:
                raise AssertionError(f"source crashed: {self.crash!r}")
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; "
                             f"events={self.events!r} status={self.source.status()!r}")

    def close(self, timeout: float = 5.0) -> float:
        """Sets stop and joins; returns how long the source took to finish."""
        t0 = time.monotonic()
        self.stop.set()
        self.thread.join(timeout)
        return time.monotonic() - t0
