"""Real components for the alert tests and benchmarks/alerts.py, all on 127.0.0.1:

- scene_frames() / write_scene(): synthetic camera footage (pystream.synthetic's world) whose
  content changes between an empty scene and a subject the shipped model knows ("a red square");
- Mosquitto: Debian's broker, started on a free port with its own config (no system service);
- Subscriber: a paho-mqtt client that records what arrives on a topic;
- WebhookReceiver: an HTTP server that records POSTed alerts, can be taken down and brought
  back on the same port, and can answer with an error or call a hook on each request.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from streams import Server, free_port, wait_tcp

RED_SQUARE = {"event": "move", "shape": "square", "colour": "red", "size": "large",
              "direction": "right", "colour_to": None, "shape2": None, "colour2": None,
              "size2": None, "distractor": None}
BLUE_CIRCLE = dict(RED_SQUARE, shape="circle", colour="blue", direction="left")
EMPTY = {"event": "none"}


def scene_frames(segments, fps: float, size: int = 128, seed: int = 7) -> np.ndarray:
    """Frames [N, size, size, 3] of one fixed camera (background, jitter) showing, in turn,
    each (label, seconds) of `segments` (EMPTY, RED_SQUARE, ...)."""
    from pystream.synthetic import videos as V

    rng = V._rng(seed, 99)
    margin = V._margin(size)
    bg = V._background(rng, size + 2 * margin)
    jp = V._jitter_params(rng, margin)
    parts, n0 = [], 0
    for i, (label, seconds) in enumerate(segments):
        n = int(round(seconds * fps))
        u = np.arange(n) / max(n, 1)
        s_u = (n0 + np.arange(n)) / fps / 12.0
        parts.append(V._render(label, V._rng(seed, i), size, u, bg, V._jitter(jp, s_u, margin),
                               margin))
        n0 += n
    return np.concatenate(parts)


def write_scene(path, segments, fps: int = 4, size: int = 128, creation_time: str | None = None,
                seed: int = 7) -> str:
    """H.264 file of scene_frames (a keyframe every second, so a live reader starts at once)."""
    import av

    frames = scene_frames(segments, fps, size, seed)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(os.fspath(path), "w") as c:
        if creation_time:
            c.metadata["creation_time"] = creation_time
        s = c.add_stream(codec, rate=Fraction(fps))
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.codec_context.thread_count = 1
        if codec == "libx264":
            s.options = {"g": str(fps), "preset": "ultrafast", "tune": "zerolatency"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return os.fspath(path)


def have_mosquitto() -> bool:
    return shutil.which("mosquitto") is not None or os.path.exists("/usr/sbin/mosquitto")


class Mosquitto(Server):
    """mosquitto on 127.0.0.1:PORT (anonymous), in its own process group. It keeps its
    sessions in `workdir` across a graceful restart (stop(graceful=True), then start())."""

    def __init__(self, workdir, port: int | None = None):
        self.port = port or free_port()
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / f"mosquitto-{self.port}.conf"
        text = (f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                f"persistence true\npersistence_location {workdir}/\n")
        if os.geteuid() == 0:
            text += "user root\n"  # else it drops to user mosquitto, who cannot read tmp dirs
        conf.write_text(text)
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        super().__init__([exe, "-c", str(conf)], workdir / f"mosquitto-{self.port}.log")

    def start(self) -> "Mosquitto":
        super().start()
        if not wait_tcp(self.port, 10):
            self.stop()
            raise RuntimeError(f"mosquitto did not start on port {self.port}")
        return self

    def stop(self, graceful: bool = False) -> None:
        if graceful and self.alive():  # SIGTERM: mosquitto saves its sessions first
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except Exception:  # noqa: BLE001 - then kill it below
                pass
        super().stop()


class Subscriber:
    """Records (arrival time, JSON payload) of every message on `topic`. A persistent session
    (clean_session=False) that reconnects by itself: qos 1 messages published while it is
    away (a broker restart) are delivered when it is back."""

    def __init__(self, port: int, topic: str):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[float, dict]] = []
        self._ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{port}",
                             clean_session=False)
        self.c.reconnect_delay_set(0.1, 0.5)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.c.on_subscribe = lambda *a: self._ready.set()
        self.c.on_message = lambda c, u, m: self.messages.append(
            (time.time(), json.loads(m.payload)))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError("MQTT subscriber did not subscribe")

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


class WebhookReceiver:
    """POST receiver on 127.0.0.1:PORT. `up()` / `down()` start and stop listening (the port is
    kept); `status` is the answer; `hook(record)` runs before answering (may block)."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.received: list[dict] = []  # {"time", "key" (header), "body"}
        self.status = 200
        self.hook = None
        self._server = None
        self._lock = threading.Lock()

    def up(self) -> "WebhookReceiver":
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                rec = {"time": time.time(), "key": self.headers.get("Idempotency-Key"),
                       "body": json.loads(self.rfile.read(n))}
                with outer._lock:
                    outer.received.append(rec)
                if outer.hook is not None:
                    outer.hook(rec)
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True,
                         name="webhook-receiver").start()
        return self

    def down(self) -> None:
        s, self._server = self._server, None
        if s is not None:
            s.shutdown()
            s.server_close()

    def bodies(self) -> list[dict]:
        with self._lock:
            return [r["body"] for r in self.received]


def wait_until(pred, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
