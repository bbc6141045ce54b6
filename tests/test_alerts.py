"""Standing queries (pystream/alerts): configuration, events and cooldown, exactly-once across
restarts (the alert log and the catch-up from LanceDB), retries while a real webhook receiver is
down, delivery through a real mosquitto broker, status / metrics, and `pystream triggers test`
on a recorded archive with the shipped model. The live end to end test (a UDP camera, the
daemon, kill -9) is tests/test_alerts_live.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from pystream.alerts.engine import AlertEngine
from pystream.alerts.events import alert_key
from pystream.config import ConfigError, parse_config
from pystream.store import ClipRow
from pystream.writer import ClipWriter

from alert_helpers import (EMPTY, RED_SQUARE, Mosquitto, Subscriber, WebhookReceiver,
                           have_mosquitto, scene_frames, wait_until, write_scene)

REPO = Path(__file__).resolve().parent.parent
DIM = 4
RED, BLUE = np.eye(DIM, dtype=np.float32)[0], np.eye(DIM, dtype=np.float32)[1]
GREY = np.eye(DIM, dtype=np.float32)[3]


class WordModel:
    """Stands in for a CLIP: a text's embedding is its colour word's axis."""
    dim, image_size, model_id = DIM, 8, "words"

    def encode_text(self, texts):
        import torch

        return torch.tensor(np.stack([RED if "red" in t else BLUE if "blue" in t else GREY
                                      for t in texts]))


def _cfg(tmp_path, triggers, **alerts):
    return parse_config({
        "archive": str(tmp_path / "archive"), "state_dir": str(tmp_path / "state"),
        "http": {"enabled": False},
        "sources": [{"type": "stream", "name": n, "url": f"udp://127.0.0.1:{p}"}
                    for n, p in (("cam1", 5001), ("cam2", 5002))],
        "triggers": triggers, "alerts": dict({"backoff_initial_s": 0.05, "backoff_max_s": 0.2},
                                             **alerts)})


def _row(source, start, vec, level=0, length=3.0):
    v = vec + 0.05 * GREY  # not exactly on the axis: scores just below 1
    return ClipRow(source=source, uri=f"udp://{source}", level=level, start=float(start),
                   end=float(start + length), vector=(v / np.linalg.norm(v)).astype(np.float32),
                   thumbnail=b"\xff\xd8jpeg", recording=False)


def _windows(source, first, last, vec, **kw):
    """Overlapping 3 s windows, one per second, starting at first..last."""
    return [_row(source, t, vec, **kw) for t in range(first, last + 1)]


RED_TRIGGER = {"name": "red", "text": "a red square", "threshold": 0.5, "cooldown_s": 5}


# ----------------------------------------------------------------------------- configuration

def test_trigger_config_is_validated_like_the_rest(tmp_path):
    def err(triggers, **top):
        with pytest.raises(ConfigError) as e:
            parse_config(dict({"triggers": triggers}, **top), "cfg.yaml")
        return str(e.value)

    ok = {"name": "t", "text": "a red square", "threshold": 0.3}
    assert "cfg.yaml" in err([dict(ok, threshold=1.5)])
    assert "[-1, 1]" in err([dict(ok, threshold=-2)])
    assert "unknown key 'treshold' in triggers.0" in err([dict(ok, treshold=0.3)])
    assert "two triggers are named 't'" in err([ok, ok])
    msg = err([dict(ok, image=str(tmp_path / "missing.jpg"))])
    assert "triggers.0.image" in msg and "missing.jpg' does not exist" in msg
    assert "needs `text:` or `image:`" in err([{"name": "t", "threshold": 0.3}])
    assert "threshold" in err([{"name": "t", "text": "x"}])  # required: calibrate it
    assert "names source 'cam9'" in err([dict(ok, sources=["cam9"])])
    assert "unknown key 'qso' in triggers.0.actions.0.mqtt" in err(
        [dict(ok, actions=[{"mqtt": {"host": "h", "topic": "t", "qso": 1}}])])
    assert "exactly one of" in err([dict(ok, actions=[{"webhook": "http://h/x",
                                                        "mqtt": {"host": "h", "topic": "t"}}])])
    assert "not an http" in err([dict(ok, actions=[{"webhook": "ftp://h/x"}])])
    assert "wildcards" in err([dict(ok, actions=[{"mqtt": {"host": "h", "topic": "a/#"}}])])
    assert "alerts.thumbnail" in err([], alerts={"thumbnail": "jpeg"})
    image = tmp_path / "ex.png"
    image.write_bytes(b"png")
    cfg = parse_config({"sources": [{"type": "stream", "name": "cam1", "url": "udp://x:1"}],
                        "triggers": [dict(ok, image=str(image), sources=["cam1"], level="coarse",
                                          actions=[{"webhook": "http://127.0.0.1:9/h"},
                                                   {"mqtt": {"host": "127.0.0.1",
                                                             "topic": "a/b"}}])]})
    t = cfg.triggers[0]
    assert t.level == 1 and t.image == str(image) and t.cooldown_s == 30
    assert t.target_ids() == ["webhook:http://127.0.0.1:9/h", "mqtt://127.0.0.1:1883/a/b"]


def test_default_yaml_documents_every_alert_key():
    from pystream.alerts.config import (ActionConfig, AlertsConfig, MqttConfig, TriggerConfig,
                                        WebhookConfig)

    text = (REPO / "config" / "default.yaml").read_text()
    for model in (TriggerConfig, ActionConfig, WebhookConfig, MqttConfig, AlertsConfig):
        for name in model.model_fields:
            assert f"{name}:" in text, f"default.yaml does not document {model.__name__}.{name}"
    # The commented example is a valid configuration.
    lines = text[text.index("# triggers:"):].splitlines()
    block = []
    for ln in lines:
        if not ln.startswith("#"):
            break
        block.append(ln[2:] if ln.startswith("# ") else ln[1:])
    example = yaml.safe_load("\n".join(block))
    example["sources"] = [{"type": "stream", "name": "gate", "url": "rtsp://x/1"}]
    assert parse_config(example).triggers


# ----------------------------------------------------------------------------- events

def test_one_alert_per_event_cooldown_sources_and_levels(tmp_path):
    cfg = _cfg(tmp_path, [RED_TRIGGER,
                          dict(RED_TRIGGER, name="red-cam2", sources=["cam2"]),
                          dict(RED_TRIGGER, name="coarse-red", level=1)],
               base_url="http://nvr:8765")
    eng = AlertEngine(cfg, WordModel(), "words")
    first = (_windows("cam1", 0, 4, GREY) + _windows("cam1", 5, 12, RED)
             + _windows("cam2", 8, 9, RED) + _windows("cam1", 0, 3, BLUE, level=1))
    rng = np.random.default_rng(0)
    rng.shuffle(first)  # order within a batch does not matter
    out = eng.evaluate(first, committed=1000.0)
    by = {(a.trigger, a.source): a for a in out.alerts}
    assert sorted(by) == [("red", "cam1"), ("red", "cam2"), ("red-cam2", "cam2")]
    a = by[("red", "cam1")]
    assert a.start == 5.0 and a.end == 15.0 and len(a.rows) == 8  # 8 overlapping windows
    assert a.key == alert_key("red", "cam1", "cam1|0|5000")
    p = a.payload
    assert {k: p[k] for k in ("trigger", "source", "uri", "start", "end", "clip_id", "key",
                              "committed", "level")} == {
        "trigger": "red", "source": "cam1", "uri": "udp://cam1", "start": 5.0, "end": 8.0,
        "clip_id": "cam1|0|5000", "key": a.key, "committed": 1000.0, "level": 0}
    assert 0.9 < p["score"] < 1.0 and p["thumbnail_b64"] == "/9hqcGVn"
    assert p["thumbnail_url"] == "http://nvr:8765/thumb/cam1%7C0%7C5000"
    assert p["player_url"] == "http://nvr:8765/?play=cam1%7C0%7C5000"
    # Still in view in the next batch, and within the cooldown after it left: same event.
    assert eng.evaluate(_windows("cam1", 13, 14, RED) + _windows("cam1", 21, 22, RED),
                        committed=1001.0).alerts == []
    # The same rows again (a replay after a crash): nothing new.
    assert eng.evaluate(first, committed=1002.0).alerts == []
    # Gone longer than the cooldown: a new event, a new alert.
    (again,) = eng.evaluate(_windows("cam1", 40, 43, RED), committed=1003.0).alerts
    assert again.start == 40.0 and again.trigger == "red"
    eng.close()

    # A restart: the open event and the covered rows come back from the alert log.
    eng = AlertEngine(cfg, WordModel(), "words")
    assert eng.evaluate(_windows("cam1", 44, 46, RED) + first, committed=1004.0).alerts == []
    logged = eng.store.alerts("red")
    assert sorted((x["start"], x["source"], x["end"], x["rows"]) for x in logged) == [
        (5.0, "cam1", 25.0, 12), (8.0, "cam2", 12.0, 2), (40.0, "cam1", 49.0, 7)]
    st = eng.status()["triggers"]["red"]
    assert st["fired"] == 3 and st["last_score"] == pytest.approx(again.score)
    # alerts.keep_days: old alerts that nothing waits for are forgotten.
    assert eng.store.prune(time.time() + 1) == 4 and eng.store.alerts() == []
    eng.close()


# ----------------------------------------------------------------------------- exactly once

def _writer(cfg, on_commit=None):
    return ClipWriter(cfg.archive, cfg.table, dim=DIM, model_id="words", batch_rows=1000,
                      flush_interval_s=60, on_commit=on_commit)


def test_rows_committed_but_never_evaluated_are_caught_up_at_start(tmp_path):
    """kill -9 between a LanceDB commit and its evaluation, or a full queue: at the next start
    the rows are read back from the archive (past the watermark) and fire exactly once; a
    trigger added since starts from now."""
    cfg = _cfg(tmp_path, [RED_TRIGGER])
    AlertEngine(cfg, WordModel(), "words").start().close()  # a previous run: the watermark
    w = _writer(cfg)  # committed, never evaluated (the process died)
    w.write(_windows("cam1", 0, 3, GREY) + _windows("cam1", 4, 9, RED)
            + _windows("cam2", 0, 5, BLUE))
    w.close(optimize=False)

    cfg2 = _cfg(tmp_path, [RED_TRIGGER, dict(RED_TRIGGER, name="blue", text="a blue circle")],
                queue_batches=1)
    eng = AlertEngine(cfg2, WordModel(), "words")
    w = _writer(cfg2, on_commit=eng.committed)
    for t in (20, 40):  # two more events; the second overflows the queue (size 1)
        w.write(_windows("cam1", t, t + 2, RED))
        w.flush()
    assert eng.overflows == 1
    eng.start()
    wait_until(lambda: eng.status()["rows_evaluated"] >= 22 and eng.status()["queued_batches"] == 0,
               30, "the catch-up")
    eng.close()
    w.close(optimize=False)
    from pystream.alerts.store import AlertStore

    logged = AlertStore(cfg.state_dir).alerts()
    assert [(a["trigger"], a["source"], a["start"]) for a in logged] == [
        ("red", "cam1", 4.0), ("red", "cam1", 20.0), ("red", "cam1", 40.0)]  # no blue: new


# ----------------------------------------------------------------------------- delivery

def test_webhook_retries_while_the_receiver_is_down(tmp_path):
    hook = WebhookReceiver()  # not listening yet: connection refused
    cfg = _cfg(tmp_path, [dict(RED_TRIGGER, actions=[{"webhook": hook.url}])])
    eng = AlertEngine(cfg, WordModel(), "words").start()
    try:
        (a,) = eng.evaluate(_windows("cam1", 0, 2, RED), committed=time.time()).alerts
        wait_until(lambda: eng.status()["triggers"]["red"]["delivery_failures"] >= 2, 10,
                   "failed attempts")
        target = eng.status()["targets"][f"webhook:{hook.url}"]
        assert target["state"] == "down" and "Connection refused" in target["last_error"]
        hook.status = 503  # up, but failing once
        hook.hook = lambda rec: setattr(hook, "status", 503 if len(hook.received) == 1 else 200)
        hook.up()
        wait_until(lambda: eng.status()["triggers"]["red"]["pending"] == 0, 10, "delivery")
        time.sleep(0.3)
        ok = [r for r in hook.received if r["body"]["key"] == a.key]
        assert len(ok) >= 2 and all(r["key"] == a.key for r in ok)  # 503 then 200, same key
        st = eng.status()
        assert st["targets"][f"webhook:{hook.url}"]["state"] == "up"
        assert st["triggers"]["red"]["fired"] == 1
        (d,) = eng.store.alerts()[0]["deliveries"]
        assert d["state"] == "delivered" and d["failures"] >= 3
    finally:
        eng.close()
        hook.down()


@pytest.mark.skipif(not have_mosquitto(), reason="needs mosquitto (scripts/install_test_deps.sh)")
def test_mqtt_delivery_through_a_real_broker_survives_a_broker_restart(tmp_path):
    broker = Mosquitto(tmp_path / "mqtt").start()
    sub = Subscriber(broker.port, "pystream/alerts")
    cfg = _cfg(tmp_path, [dict(RED_TRIGGER, actions=[{"mqtt": {
        "host": "127.0.0.1", "port": broker.port, "topic": "pystream/alerts", "timeout_s": 2}}])])
    eng = AlertEngine(cfg, WordModel(), "words").start()
    try:
        (a,) = eng.evaluate(_windows("cam2", 0, 2, RED), committed=time.time()).alerts
        wait_until(lambda: sub.messages, 10, "the first alert")
        broker.stop(graceful=True)  # the subscriber's session is kept
        (b,) = eng.evaluate(_windows("cam2", 60, 61, RED), committed=time.time()).alerts
        wait_until(lambda: eng.status()["triggers"]["red"]["delivery_failures"] >= 1, 15,
                   "a failed publish")
        broker.start()
        wait_until(lambda: any(m["key"] == b.key for _, m in sub.messages), 15,
                   "the second alert after the broker came back")
        assert eng.status()["targets"][f"mqtt://127.0.0.1:{broker.port}/pystream/alerts"][
            "state"] == "up"
        assert [m["key"] for _, m in sub.messages] == [a.key, b.key]
    finally:
        eng.close()
        sub.close()
        broker.stop()


# ----------------------------------------------------------------------------- visible

def test_status_metrics_and_cli_show_the_triggers(tmp_path, capsys):
    from pystream import cli
    from pystream.metrics import Metrics
    from pystream.status import write_status

    cfg = _cfg(tmp_path, [dict(RED_TRIGGER, actions=[{"webhook": "http://127.0.0.1:9/h"}])])
    eng = AlertEngine(cfg, WordModel(), "words")
    eng.evaluate(_windows("cam1", 0, 2, RED), committed=time.time())
    status = {"pid": 1, "updated": time.time(), "running": True, "sources": {},
              "alerts": eng.status()}
    body = Metrics(lambda: status).render().decode()
    assert 'pystream_alerts_fired_total{trigger="red"} 1.0' in body
    assert 'pystream_alert_deliveries_pending{trigger="red"} 1.0' in body
    assert 'pystream_alert_delivery_failures_total{trigger="red"} 0.0' in body
    assert 'pystream_alert_last_fired_timestamp_seconds{trigger="red"}' in body
    target = "webhook:http://127.0.0.1:9/h"
    assert f'pystream_alert_target_up{{kind="webhook",target="{target}"}} 0.0' in body
    write_status(cfg.state_dir, json.loads(json.dumps(status)))
    assert cli.main(["status", "--state-dir", cfg.state_dir]) == 0
    out = capsys.readouterr().out
    assert "TRIGGER" in out and "\nred " in out and f"target {target}: unknown" in out
    eng.close()


# ----------------------------------------------------------------------------- calibration

def test_triggers_test_on_a_recorded_archive_lists_the_expected_clips(tmp_path, capsys):
    """A recording (empty, a red square, empty, a red square again): `pystream triggers test`
    with the shipped model lists one alert per appearance, for a text and an image trigger."""
    from PIL import Image

    import pystream
    from pystream import cli

    # Recorded an hour ago, so the default --since 24h covers it.
    t0 = time.time() - 3600
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(t0))
    t0 = float(int(t0))
    segments = [(EMPTY, 6), (RED_SQUARE, 6), (EMPTY, 14), (RED_SQUARE, 6), (EMPTY, 4)]
    video = write_scene(tmp_path / "rec.mp4", segments, fps=4, creation_time=stamp)
    pystream.index([video], archive=tmp_path / "arc", source="rec", fps=4, model="shipped",
                   config=parse_config({"precision": "fp32", "reuse": {"threshold": 0}}))
    # An example picture of the subject: another background, another position.
    example = scene_frames([(RED_SQUARE, 1)], fps=4, seed=99)[2]
    Image.fromarray(example).save(tmp_path / "example.png")
    common = {"threshold": 0.4, "cooldown_s": 2}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "archive": str(tmp_path / "arc"),
        "triggers": [dict(common, name="red", text="a red square"),
                     dict(common, name="red-picture", image=str(tmp_path / "example.png")),
                     dict(common, name="blue", text="a blue circle")]}))
    shown = {}
    for name in ("red", "red-picture", "blue"):
        assert cli.main(["triggers", "test", name, "-c", str(tmp_path / "c.yaml"), "--json",
                         "--thumbnails", str(tmp_path / "thumbs")]) == 0
        shown[name] = json.loads(capsys.readouterr().out)
    for name in ("red", "red-picture"):
        alerts = shown[name]["alerts"]
        assert len(alerts) == 2, (name, alerts)
        for a, (lo, hi) in zip(alerts, [(6, 12), (26, 32)]):
            # the first matching window overlaps the appearance; the event spans it
            assert lo - 3 <= a["start"] - t0 <= lo + 1 and a["end"] - t0 >= hi, (name, a)
            assert a["rows"] >= 4 and a["peak"] > 0.6 and Path(a["thumbnail"]).is_file()
            assert a["clip_id"].startswith("rec|0|")
            assert a["key"] == alert_key(name, "rec", a["clip_id"])
    assert shown["blue"]["alerts"] == [] and shown["blue"]["near"]
    assert shown["red"]["scanned"] == shown["blue"]["scanned"] > 20
    # A higher threshold: fewer windows; the text form prints the table.
    assert cli.main(["triggers", "test", "red", "-c", str(tmp_path / "c.yaml"), "--threshold",
                     "0.99", "--no-thumbnails"]) == 0
    out = capsys.readouterr().out
    assert "0 alert(s)" in out and "closest below the threshold" in out
    assert cli.main(["triggers", "test", "nope", "-c", str(tmp_path / "c.yaml")]) == 2
    assert "no trigger named 'nope'" in capsys.readouterr().err
