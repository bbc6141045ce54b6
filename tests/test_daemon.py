"""pystreamd as a subprocess: JSON logs, HTTP on 127.0.0.1, SIGTERM drains + checkpoints + exit 0,
and a restart finishes the work with every row exactly once."""

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import pystream
from pystream.checkpoint import CheckpointStore
from pystream.decode import decode_frames
from pystream.pipeline import ENCODER_KEY

from test_pipeline_fixtures import (REPO, env_for_subprocess, expected_windows, make_model_dir,
                                    write_config, write_video)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(state):
    try:
        return json.loads((Path(state) / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@pytest.fixture(autouse=True)
def _no_orphans(monkeypatch):
    """Kill daemons a failing test left behind."""
    procs = []
    real = subprocess.Popen

    def popen(*a, **kw):
        p = real(*a, **kw)
        procs.append(p)
        return p
    monkeypatch.setattr(subprocess, "Popen", popen)
    yield
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def _wait(pred, timeout, proc):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if pred():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_sigterm_drains_checkpoints_and_restart_completes(tmp_path):
    model = make_model_dir(tmp_path / "model")
    folder = tmp_path / "videos"
    folder.mkdir()
    files = [write_video(folder / f"v{i}.{ext}", 4 * 60, seed=i)
             for i, ext in enumerate(["mp4", "mkv", "ts"])]
    port = _free_port()
    state, archive = tmp_path / "state", tmp_path / "archive"
    cfg = write_config(tmp_path / "c.yaml", archive=archive, state_dir=state, model=model,
                       folder=folder, batching={"max_batch_chunks": 2, "max_wait_s": 0.01},
                       http={"enabled": True, "host": "127.0.0.1", "port": port})
    cmd = [sys.executable, str(REPO / "daemon" / "pystreamd.py"), "-c", cfg]
    log = tmp_path / "log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stderr=f, stdout=f, env=env_for_subprocess())
        assert _wait(lambda: (_status(state) or {}).get("writer", {}).get("rows_written", 0) > 0,
                     120, proc), log.read_text()[-2000:]
        # HTTP API of the running daemon.
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        r = httpx.get(f"http://127.0.0.1:{port}/search", params={"q": "red circle", "k": 2},
                      timeout=30)
        assert r.status_code == 200 and r.json()["hits"], r.text
        assert "pystream_rows_total" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0
    lines = [l for l in log.read_text().splitlines() if l.startswith("{")]
    msgs = [json.loads(l)["msg"] for l in lines]  # every record is one JSON object
    assert any("SIGTERM" in m for m in msgs) and any("stopped (exit 0)" in m for m in msgs)
    with CheckpointStore(state) as store:
        progress, blob = store.get_with_state(ENCODER_KEY)
        done = store.files_done("cams")
    assert progress is not None
    assert done or progress["streams"], "nothing checkpointed"
    assert len(done) < len(files) or not progress["streams"]

    # Restart: it resumes and finishes; every expected row exactly once.
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, stderr=f, stdout=f, env=env_for_subprocess())

        def finished():
            s = _status(state)
            with CheckpointStore(state) as st:
                n = len(st.files_done("cams"))
            return s and s["pid"] == proc.pid and n == len(files) and s["writer"]["pending"] == 0
        assert _wait(finished, 150, proc), log.read_text()[-2000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0
    rows = pystream.open(archive).table.search().select(["id", "uri", "level", "start"]) \
        .limit(None).to_arrow().to_pylist()
    assert len(rows) == len({r["id"] for r in rows})
    for f in files:
        w0, _ = expected_windows(sum(1 for _ in decode_frames(f, 1.0, 64)))
        assert sum(r["uri"] == f and r["level"] == 0 for r in rows) == w0
