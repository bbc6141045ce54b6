"""A small pystream site for the browser tests (tests/test_web.py) and for looking at the page
by hand (``python tests/web_site.py DIR``: builds it, serves it on 127.0.0.1:8765, Ctrl-C stops).

- recordings/: three rendered recordings with known events (pystream.demo.make_recordings),
  indexed with the shipped model as source "recordings"; one of them also as MKV (remuxed for
  the browser) in the folder;
- a status with a running, a reconnecting and a down source (the down one has gaps);
- a headless Chromium (Debian's chromium + chromium-driver) driven by Selenium.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("PYSTREAM_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PYSTREAM_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage", "--mute-audio", "--window-size=1440,900",
                "--autoplay-policy=no-user-gesture-required"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (requirements.txt, test section)"
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(exe):
            return f"{exe} is missing (scripts/install_test_deps.sh installs chromium and chromium-driver)"
    return None


def start_browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    return driver


def build_site(root: Path) -> dict:
    """Renders and indexes the recordings (about 20 s on the 2-core box)."""
    import pystream
    from pystream.demo import make_recordings

    root = Path(root)
    videos = root / "recordings"
    truth = make_recordings(videos, n=3, seconds=48, seed=300)
    # One recording also as Matroska: a container the page gets remuxed.
    import av

    with av.open(str(videos / "recording_00.mp4")) as src, \
            av.open(str(videos / "recording_00_copy.mkv"), "w") as dst:
        s = src.streams.video[0]
        o = dst.add_stream_from_template(s)
        for p in src.demux(s):
            if p.dts is None:
                continue
            p.stream = o
            dst.mux(p)
    pystream.index([videos], archive=root / "archive", source="recordings",
                   state_dir=root / "state")
    return {"root": root, "videos": videos, "archive": root / "archive", "truth": truth}


def site_config(root: Path, **http):
    from pystream.config import parse_config

    return parse_config({
        "archive": str(root / "archive"), "state_dir": str(root / "state"),
        "sources": [{"type": "folder", "name": "recordings", "path": str(root / "recordings")},
                    {"type": "stream", "name": "gate", "url": "udp://127.0.0.1:9",
                     "record": {"dir": str(root / "rec"), "segment_s": 10}},
                    {"type": "stream", "name": "dock", "url": "rtsp://10.0.0.2/s1"}],
        "http": dict({"port": 0}, **http)})


def fake_status() -> dict:
    now = time.time()
    return {
        "pid": os.getpid(), "started": now - 3000, "updated": now, "running": True,
        "stale": False, "model": "shipped",
        "encoder": {"queued_chunks": 0, "last_batch_s": 0.042, "precision": "fp32"},
        "writer": {"pending": 0},
        "sources": {
            "recordings": {"name": "recordings", "kind": "folder", "state": "running",
                           "uri": "/srv/recordings", "frames": 144, "rows": 33, "fps": 0.0,
                           "lag_s": None, "errors": 0, "files_done": 3, "gaps": [],
                           "last_frame_t": now - 40},
            "gate": {"name": "gate", "kind": "stream", "state": "running",
                     "uri": "udp://127.0.0.1:9", "frames": 2950, "rows": 731, "fps": 1.0,
                     "lag_s": 1.4, "errors": 2, "last_frame_t": now - 0.5,
                     "last_error": "udp://127.0.0.1:9: stream lost (no frame decoded for 15 s "
                                   "(stalled)); reconnecting in 0.6 s",
                     "last_error_time": now - 1900,
                     "gaps": [{"kind": "gap", "message": "no frames for 41.0 s",
                               "time": now - 1880, "start": now - 1921, "end": now - 1880}]},
            "dock": {"name": "dock", "kind": "stream", "state": "down",
                     "uri": "rtsp://10.0.0.2/s1", "frames": 1210, "rows": 290, "fps": 0.0,
                     "lag_s": 412.0, "errors": 37, "last_frame_t": now - 420,
                     "last_error": "rtsp://10.0.0.2/s1: cannot connect (Connection refused); "
                                   "retry 37 in 30.0 s",
                     "last_error_time": now - 12,
                     "gaps": [{"kind": "gap", "message": "no frames for 95.0 s",
                               "time": now - 2500, "start": now - 2595, "end": now - 2500}]},
        },
    }


def serve(site: dict, token: str | None = None, status=fake_status, host="127.0.0.1"):
    """The site's HTTP server in a thread: (base URL, uvicorn server)."""
    import pystream
    from pystream.http import create_app, serve_in_thread

    cfg = site_config(site["root"], **({"token": token} if token else {}))
    arc = pystream.open(site["archive"])
    port = free_port()
    app = create_app(arc, status, config=cfg, token=token, host=host)
    server = serve_in_thread(app, host, port)
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


if __name__ == "__main__":  # build and serve by hand
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/pystream-site")
    if not (root / "archive").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        site = build_site(root)
    else:
        site = {"root": root, "videos": root / "recordings", "archive": root / "archive"}
    url, server = serve(site)
    print("serving", url, flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        server.should_exit = True
