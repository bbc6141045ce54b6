"""Alert latency: how long after a row's commit, and after the end of the chunk's last frame,
an alert reaches its receivers.

Real components on 127.0.0.1: the daemon (daemon/pystreamd.py, a subprocess, the shipped model,
the default configuration apart from the sample rate), N live UDP cameras (ffmpeg -re, looping
a scene that is empty and then shows a red square, each camera at another phase), a trigger
"a red square" with a webhook (a local HTTP receiver) and an MQTT action (Debian's mosquitto,
started here, and a subscriber), both receivers in this process.

Per alert, at the receiver (same clock as the daemon):
  past_commit = received - payload.committed   (the writer's commit of the row that fired)
  past_end    = received - payload.end         (the end of the window: its last frame's time
                                                plus one sample interval)
  past_frame  = received - (payload.end - 1 / sample_fps)   (the time of the last frame of the
                                                chunk that completed the window)
  evaluation  = payload.fired - payload.committed
Alerts whose window started before the daemon had been running WARMUP_S are left out (the
first windows of a live stream after it is joined are short, see README).

    python benchmarks/alerts.py                      # 4 cameras, 150 s
    python benchmarks/alerts.py --cameras 1 --seconds 40
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from alert_helpers import (EMPTY, RED_SQUARE, Mosquitto, Subscriber, WebhookReceiver,  # noqa: E402
                           have_mosquitto, wait_until, write_scene)
from streams import ffmpeg_udp, free_port  # noqa: E402

WARMUP_S = 15.0


def percentile(values, q: float) -> float:
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def summary(name: str, values) -> str:
    if not values:
        return f"{name}: no samples"
    return (f"{name}: p50 {percentile(values, 0.5):.3f} s, p95 {percentile(values, 0.95):.3f} s, "
            f"max {max(values):.3f} s, n={len(values)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--seconds", type=float, default=150.0)
    p.add_argument("--fps", type=float, default=2.0, help="sample_fps of the daemon")
    p.add_argument("--period", type=float, default=24.0, help="seconds of the looped scene")
    args = p.parse_args()
    if not have_mosquitto():
        print("needs mosquitto (scripts/install_test_deps.sh)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="pystream-alerts-bench-"))
    procs = []
    broker = Mosquitto(tmp / "mqtt").start()
    procs.append(broker)
    sub = Subscriber(broker.port, "bench/alerts")
    hook = WebhookReceiver().up()
    sources = []
    red = 5.0
    for i in range(args.cameras):
        lead = 2.0 + (args.period - red - 4.0) * i / max(args.cameras, 1)  # phases apart
        media = write_scene(tmp / f"cam{i}.mp4", [(EMPTY, lead), (RED_SQUARE, red),
                                                  (EMPTY, args.period - red - lead)],
                            fps=4, seed=10 + i)
        port = free_port()
        procs.append(ffmpeg_udp(Path(media), port, tmp / f"ffmpeg{i}.log").start())
        sources.append({"type": "stream", "name": f"cam{i}",
                        "url": f"udp://127.0.0.1:{port}?overrun_nonfatal=1&fifo_size=32768"})
    cfg = {"archive": str(tmp / "archive"), "state_dir": str(tmp / "state"), "model": "shipped",
           "sample_fps": args.fps, "http": {"enabled": False},
           "log": {"level": "WARNING", "format": "text"}, "sources": sources,
           "triggers": [{"name": "red", "text": "a red square", "threshold": 0.4,
                         "cooldown_s": 2,
                         "actions": [{"webhook": hook.url},
                                     {"mqtt": {"host": "127.0.0.1", "port": broker.port,
                                               "topic": "bench/alerts"}}]}]}
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    log = open(tmp / "daemon.log", "ab")
    daemon = subprocess.Popen([sys.executable, str(REPO / "daemon" / "pystreamd.py"), "-c",
                               str(tmp / "config.yaml")], stdout=log, stderr=log, env=env)
    procs.append(daemon)
    t_start = time.time()
    try:
        wait_until(lambda: (tmp / "state" / "status.json").exists() or daemon.poll() is not None,
                   120, "the daemon")
        t_ready = time.time()
        deadline = t_ready + args.seconds
        while time.time() < deadline and daemon.poll() is None:
            time.sleep(1.0)
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(120)
    finally:
        for p in procs:
            if isinstance(p, subprocess.Popen):
                if p.poll() is None:
                    p.kill()
                    p.wait()
            else:
                p.stop()
        sub.close()
        hook.down()
        log.close()
    status = json.loads((tmp / "state" / "status.json").read_text())
    fired = status.get("alerts", {}).get("triggers", {}).get("red", {}).get("fired", 0)
    by_target = {"webhook": [(r["time"], r["body"]) for r in hook.received],
                 "mqtt": list(sub.messages)}
    print(f"alerts benchmark: {args.cameras} live UDP camera(s), sample_fps {args.fps}, "
          f"{args.seconds:.0f} s after start-up ({t_ready - t_start:.1f} s), daemon exit {code}, "
          f"{fired} alert(s) fired")
    warm = t_ready + WARMUP_S
    for target, items in by_target.items():
        items = [(t, b) for t, b in items if b["start"] >= warm]
        keys = [b["key"] for _, b in items]
        print(f"{target}: {len(items)} alert(s) after warm-up, {len(keys) - len(set(keys))} "
              "repeated")
        print("  " + summary(f"{target}_past_commit", [t - b["committed"] for t, b in items]))
        print("  " + summary(f"{target}_past_end", [t - b["end"] for t, b in items]))
        print("  " + summary(f"{target}_past_frame",
                             [t - (b["end"] - 1.0 / args.fps) for t, b in items]))
    ev = [b["fired"] - b["committed"] for _, b in by_target["mqtt"] if b["start"] >= warm]
    print("  " + summary("evaluation (fired - committed)", ev))
    if ev:
        print(f"evaluation mean {statistics.mean(ev) * 1000:.1f} ms")
    print(f"raw: {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
