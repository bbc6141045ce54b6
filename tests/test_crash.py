"""kill -9 of the daemon at random moments, at least 20 times, then a clean finish: every
expected row is in the archive exactly once.

The daemon (daemon/pystreamd.py, a real subprocess) watches a folder of real H.264 files (MP4,
MKV, MPEG-TS) with a tiny random-weight CLIP. Kills land at two kinds of moments: during start-up
(model load, LanceDB / SQLite opening) and while indexing (after this process's first encoder
batch, plus a random delay: between a LanceDB commit and its checkpoint, mid-file with carried
state, during finish...). Then the daemon runs to completion and stops on SIGTERM with exit 0.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pystream
from pystream.checkpoint import CheckpointStore
from pystream.decode import decode_frames

from test_pipeline_fixtures import (REPO, env_for_subprocess, expected_windows, make_model_dir,
                                    write_config, write_video)

pytestmark = pytest.mark.slow

N_FILES = 6
SAMPLES = 80  # sampled frames per file (1 fps): 20 chunks -> 18 windows + 6 coarse rows
COARSE = 3
EARLY_KILLS = 10  # during start-up
INDEXING_KILLS = 12  # after the first encoder batch of that process


def _status(state_dir):
    try:
        return json.loads((Path(state_dir) / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _files_done(state_dir) -> int:
    if not (Path(state_dir) / CheckpointStore.FILENAME).exists():
        return 0
    with CheckpointStore(state_dir) as store:
        return len(store.files_done("cams"))


def _start(cfg, log):
    return subprocess.Popen([sys.executable, str(REPO / "daemon" / "pystreamd.py"), "-c", cfg],
                            stdout=log, stderr=log, env=env_for_subprocess(), cwd=str(REPO))


def _wait_for(pred, timeout, proc):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def test_kill9_many_times_then_every_row_exactly_once(tmp_path):
    rng = random.Random(int(os.environ.get("PYSTREAM_CRASH_SEED", "1234")))
    model = make_model_dir(tmp_path / "model")
    folder = tmp_path / "videos"
    folder.mkdir()
    exts = ["mp4", "mkv", "ts"]
    files = [write_video(folder / f"cam{i}.{exts[i % 3]}", 4 * SAMPLES, fps=4.0, seed=i)
             for i in range(N_FILES)]
    state = tmp_path / "state"
    archive = tmp_path / "archive"
    cfg = write_config(tmp_path / "config.yaml", archive=archive, state_dir=state, model=model,
                       folder=folder, coarse_windows=COARSE,
                       batching={"max_batch_chunks": 4, "max_wait_s": 0.02},
                       writer={"batch_rows": 8, "flush_interval_s": 0.1,
                               "optimize_interval_s": 3600})
    log = open(tmp_path / "daemon.log", "ab")
    procs = []
    try:
        _crash_loop(rng, cfg, log, state, archive, files, procs)
    finally:
        for p in procs:  # a failing assertion must not leave a daemon running
            if p.poll() is None:
                p.kill()
                p.wait()


def _crash_loop(rng, cfg, log, state, archive, files, procs):

    kills = ["early"] * EARLY_KILLS + ["indexing"] * INDEXING_KILLS
    rng.shuffle(kills)
    done_kills = collections.Counter()
    t_start = time.time()
    for kind in kills:
        proc = _start(cfg, log)
        procs.append(proc)
        if kind == "early":
            time.sleep(rng.uniform(0.3, 6.0))
        else:
            def busy():
                s = _status(state)
                return s is not None and s["pid"] == proc.pid and (
                    s["encoder"]["batches"] >= 1 or _files_done(state) == N_FILES)
            if not _wait_for(busy, 90, proc):
                # Nothing left to encode in this process (all done) or it died: still a kill.
                pass
            time.sleep(rng.uniform(0.0, 1.5))
        assert proc.poll() is None, f"daemon exited by itself (rc={proc.returncode}); see {log.name}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done_kills[kind] += 1
    assert sum(done_kills.values()) >= 20

    # Let it finish, then stop it cleanly.
    proc = _start(cfg, log)
    procs.append(proc)

    def finished():
        s = _status(state)
        if s is None or s["pid"] != proc.pid:
            return False
        c = s["sources"]["cams"]
        return (_files_done(state) == N_FILES and s["writer"]["pending"] == 0
                and s["encoder"]["queued_chunks"] == 0 and s["encoder"]["open_streams"] == 0
                and c["state"] == "running")
    assert _wait_for(finished, 150, proc), Path(log.name).read_text()[-3000:]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    elapsed = time.time() - t_start

    rows = pystream.open(archive).table.search().select(["id", "source", "uri", "level", "start", "end"]) \
        .limit(None).to_arrow().to_pylist()
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate row ids"
    keys = [(r["source"], r["uri"], r["level"], round(r["start"], 3)) for r in rows]
    assert len(keys) == len(set(keys)), "duplicate (source, uri, level, start)"

    for f in files:
        n = sum(1 for _ in decode_frames(f, 1.0, 64))
        w0, w1 = expected_windows(n, coarse=COARSE)
        mine = [r for r in rows if r["uri"] == f]
        assert mine, f"{f} never indexed"
        t0 = min(r["start"] for r in mine)
        got0 = sorted(round(r["start"] - t0, 3) for r in mine if r["level"] == 0)
        got1 = sorted(round(r["start"] - t0, 3) for r in mine if r["level"] == 1)
        assert got0 == [4.0 * i for i in range(w0)], f
        assert got1 == [4.0 * COARSE * j for j in range(w1)], f
    print(f"crash test: {dict(done_kills)} kills, {len(rows)} rows, {elapsed:.0f} s")
