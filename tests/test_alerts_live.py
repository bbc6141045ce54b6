"""Alerts end to end, with real components on 127.0.0.1: the daemon (daemon/pystreamd.py, a
subprocess, the shipped model) indexes a live UDP camera (ffmpeg, real time, looping a 20 s
scene: empty 5 s, a red square 4 s, empty 11 s) with a trigger "a red square" whose alerts go
to a mosquitto broker (a subscriber listens) and to a webhook receiver.

- event A: the webhook receiver is down; the MQTT subscriber gets A once (the overlapping
  windows of one sighting are one event), with the right fields; the receiver comes back and
  gets A by retry, with the same key; status.json, /status and /metrics show the trigger;
- SIGHUP with a second trigger added: the daemon reloads and shows it;
- event B: the receiver holds B's request and the test kills the daemon with kill -9 before
  the answer (between the commit and the delivery's acknowledgement); after a restart the
  receiver gets B again with the same idempotency key, A is not sent again, and the alert log
  holds A and B once each.
Alert latency is measured by benchmarks/alerts.py, not asserted here.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from alert_helpers import (EMPTY, RED_SQUARE, Mosquitto, Subscriber, WebhookReceiver,
                           have_mosquitto, wait_until, write_scene)
from streams import ffmpeg_udp, free_port, have
from test_pipeline_fixtures import REPO, env_for_subprocess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (have("ffmpeg") and have_mosquitto()),
                       reason="needs ffmpeg and mosquitto (scripts/install_test_deps.sh)"),
]

TOPIC = "site/alerts"
PERIOD = 20.0  # seconds of the looped scene


def _status(state_dir) -> dict:
    try:
        return json.loads((Path(state_dir) / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.status, r.read()


def test_live_camera_alerts_once_per_event_retries_and_survives_kill9(tmp_path):
    procs = []
    broker = Mosquitto(tmp_path / "mqtt").start()
    procs.append(broker)
    sub = Subscriber(broker.port, TOPIC)
    hook = WebhookReceiver()  # down until event A has fired
    media = write_scene(tmp_path / "scene.mp4", [(EMPTY, 5), (RED_SQUARE, 4), (EMPTY, 11)], fps=4)
    udp = free_port()
    sender = ffmpeg_udp(Path(media), udp, tmp_path / "ffmpeg.log").start()
    procs.append(sender)
    http_port = free_port()
    state = tmp_path / "state"
    trigger = {"name": "red", "text": "a red square", "threshold": 0.4, "cooldown_s": 3,
               "sources": ["cam1"],
               "actions": [{"webhook": {"url": hook.url, "timeout_s": 30}},
                           {"mqtt": {"host": "127.0.0.1", "port": broker.port, "topic": TOPIC}}]}
    cfg = {"archive": str(tmp_path / "archive"), "state_dir": str(state), "model": "shipped",
           "precision": "fp32", "reuse": {"threshold": 0}, "sample_fps": 4, "coarse_windows": 0,
           "batching": {"max_wait_s": 0.05},
           "writer": {"batch_rows": 16, "flush_interval_s": 0.2, "optimize_interval_s": 3600},
           "http": {"host": "127.0.0.1", "port": http_port},
           "log": {"level": "INFO", "format": "text"},
           "sources": [{"type": "stream", "name": "cam1",
                        "url": f"udp://127.0.0.1:{udp}?overrun_nonfatal=1&fifo_size=32768"}],
           "triggers": [trigger],
           "alerts": {"backoff_initial_s": 0.2, "backoff_max_s": 1.0}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    log = open(tmp_path / "daemon.log", "ab")

    def start():
        p = subprocess.Popen([sys.executable, str(REPO / "daemon" / "pystreamd.py"), "-c",
                              str(config)], stdout=log, stderr=log, env=env_for_subprocess(),
                             cwd=str(REPO))
        procs.append(p)
        return p

    def logtail():
        return (tmp_path / "daemon.log").read_text()[-4000:]

    try:
        daemon = start()
        # ------------------------------------------------------------ event A, webhook down
        wait_until(lambda: sub.messages or daemon.poll() is not None, 90, "event A on MQTT")
        assert daemon.poll() is None, logtail()
        t_a, a = sub.messages[0]
        assert a["trigger"] == "red" and a["source"] == "cam1" and a["uri"].startswith("udp://")
        assert a["score"] >= 0.4 and 0 < a["end"] - a["start"] < 4
        assert abs(a["start"] - time.time()) < 30  # a live window: wall-clock times
        assert a["clip_id"].startswith("cam1|0|") and len(a["key"]) == 32
        assert base64.b64decode(a["thumbnail_b64"])[:2] == b"\xff\xd8"
        assert a["thumbnail_url"].startswith(f"http://127.0.0.1:{http_port}/thumb/cam1%7C0%7C")
        assert a["player_url"].startswith(f"http://127.0.0.1:{http_port}/?play=cam1%7C0%7C")
        assert a["committed"] <= a["fired"] <= t_a
        # The clip is in the archive: its thumbnail is served.
        code, jpeg = _get(http_port, a["thumbnail_url"].split(str(http_port), 1)[1])
        assert code == 200 and jpeg[:2] == b"\xff\xd8"
        wait_until(lambda: (_status(state).get("alerts") or {}).get("triggers", {}).get(
            "red", {}).get("delivery_failures", 0) >= 1, 20, "failed webhook attempts")
        st = _status(state)["alerts"]
        assert st["targets"][f"webhook:{hook.url}"]["state"] == "down"
        assert st["targets"][f"mqtt://127.0.0.1:{broker.port}/{TOPIC}"]["state"] == "up"
        hook.up()
        wait_until(lambda: hook.received, 20, "event A at the webhook after it came back")
        assert hook.received[0]["key"] == a["key"] and hook.received[0]["body"] == a
        code, body = _get(http_port, "/metrics")
        assert 'pystream_alerts_fired_total{trigger="red"} ' in body.decode()
        assert 'pystream_alert_target_up{kind="webhook",target="webhook:' in body.decode()
        code, body = _get(http_port, "/status")
        assert json.loads(body)["alerts"]["triggers"]["red"]["fired"] >= 1

        # ------------------------------------------------------------ SIGHUP: a new trigger
        cfg["triggers"].append(dict(trigger, name="red-too", actions=[]))
        config.write_text(yaml.safe_dump(cfg))
        daemon.send_signal(signal.SIGHUP)
        wait_until(lambda: "red-too" in ((_status(state).get("alerts") or {}).get("triggers")
                                         or {}), 60, "the reloaded trigger in status")

        # ------------------------------------------------------------ event B, kill -9
        got_b, release = threading.Event(), threading.Event()

        def hold_b(rec):  # hold B's first delivery until the daemon is dead
            if rec["key"] != a["key"] and not got_b.is_set():
                got_b.set()
                release.wait(60)

        hook.hook = hold_b
        wait_until(lambda: got_b.is_set() or daemon.poll() is not None, PERIOD + 40,
                   "event B at the webhook")
        assert daemon.poll() is None, logtail()
        b_key = hook.received[-1]["key"]
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        release.set()
        assert len([m for _, m in sub.messages if m["key"] == a["key"]]) == 1  # once per event
        daemon = start()
        wait_until(lambda: sum(r["key"] == b_key for r in hook.received) >= 2
                   or daemon.poll() is not None, 90, "B delivered again after the restart")
        assert daemon.poll() is None, logtail()
        b_bodies = [r["body"] for r in hook.received if r["key"] == b_key]
        assert all(body == b_bodies[0] for body in b_bodies)  # the same payload, same key
        assert b_bodies[0]["key"] == b_key and b_bodies[0]["start"] > a["end"] + 3
        time.sleep(1.0)
        assert sum(r["key"] == a["key"] for r in hook.received) == 1  # A is not sent again
        mqtt_keys = [m["key"] for _, m in sub.messages]
        assert mqtt_keys.count(a["key"]) == 1 and mqtt_keys.count(b_key) in (1, 2)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0, logtail()

        from pystream.alerts.store import AlertStore

        store = AlertStore(state)
        logged = store.alerts("red")
        store.close()
        keys = [x["key"] for x in logged]
        assert keys[0] == a["key"] and b_key in keys and len(set(keys)) == len(keys), logged
        assert all(d["state"] == "delivered" for x in logged if x["key"] in (a["key"], b_key)
                   for d in x["deliveries"])
        print(f"alerts live: A at {a['start']:.1f} (MQTT {t_a - a['committed']:.2f} s after "
              f"commit), B key {b_key} delivered {len(b_bodies)}x to the webhook; "
              f"MQTT keys {len(mqtt_keys)}")
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
