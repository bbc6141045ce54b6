"""kill -9 of the daemon, over and over, while it indexes; then a clean finish: every expected
row is in the archive exactly once, and ids and vectors equal those of an uninterrupted run.

The daemon (daemon/pystreamd.py, a real subprocess) watches a folder of real H.264 files (MP4,
MKV, MPEG-TS) with a tiny random-weight CLIP. What is killed when:

- START_KILLS kills during start-up: a random 0.3-4 s after the process starts (imports, model
  load, LanceDB / SQLite opening, the first scan); the phase it was really in is recorded.
- INDEXING_KILLS kills while indexing: once this process's status shows a finished encoder
  batch, after a further random 0-0.6 s (so between a LanceDB commit and its checkpoint,
  mid-file with carried state, during finish, ...). Just before each kill the checkpoint store
  is read: work is pending when some file in the folder is not marked done yet. At least
  MIN_PENDING_KILLS must land with work pending (asserted), and a daemon that does not reach
  its first batch within 90 s fails the test.

Recordings keep arriving, as in a real recordings folder: before each start, new files are moved
into the folder until AHEAD of them are not done yet, so however fast the machine indexes,
every kill has work in front of it (and the workload grows only as far as it needs to).

Then the daemon runs to completion and stops on SIGTERM with exit 0, and a second daemon indexes
the same folder into a fresh archive without interruption: both archives hold the same row ids
and, id for id, the same vectors (so a resume from corrupt carried state would fail).
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

import numpy as np
import pytest

import pystream
from pystream.checkpoint import CheckpointStore
from pystream.decode import decode_frames

from test_pipeline_fixtures import (REPO, env_for_subprocess, expected_windows, make_model_dir,
                                    write_config, write_video)

pytestmark = pytest.mark.slow

AHEAD = 8  # files not done yet in the folder at each start (5 let a faster encoder finish them all
#   between its first batch and the kill: 19 of 20 kills with work pending in one CI run)
MAX_FILES = 160
FILE_FPS = 1.0  # written at the sampling rate: every frame is a sample, decoding stays cheap
SAMPLES = 160  # sampled frames per file: 40 chunks -> 38 windows + 13 coarse rows
COARSE = 3
START_KILLS = 2
INDEXING_KILLS = 20
MIN_PENDING_KILLS = 20
VECTOR_TOL = 1e-4


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


def _config(tmp_path, name, model, folder):
    return write_config(tmp_path / f"{name}.yaml", archive=tmp_path / f"{name}-archive",
                        state_dir=tmp_path / f"{name}-state", model=model, folder=folder,
                        coarse_windows=COARSE,
                        batching={"max_batch_chunks": 4, "max_wait_s": 0.02},
                        writer={"batch_rows": 8, "flush_interval_s": 0.1,
                                "optimize_interval_s": 3600})


def _run_to_completion(runs, log, procs, n_files):
    """Start one daemon per (config, state dir) at once, wait until each has indexed and
    committed every file, stop each with SIGTERM (exit 0)."""
    started = []
    for cfg, state in runs:
        proc = _start(cfg, log)
        procs.append(proc)
        started.append((proc, state))

    def finished(proc, state):
        s = _status(state)
        if s is None or s["pid"] != proc.pid:
            return False
        c = s["sources"]["cams"]
        return (_files_done(state) == n_files and s["writer"]["pending"] == 0
                and s["encoder"]["queued_chunks"] == 0 and s["encoder"]["open_streams"] == 0
                and c["state"] == "running")
    for proc, state in started:
        assert _wait_for(lambda: finished(proc, state), 240, proc), \
            Path(log.name).read_text()[-3000:]
    for proc, _ in started:
        proc.send_signal(signal.SIGTERM)
    for proc, _ in started:
        assert proc.wait(60) == 0


def _archive(path):
    rows = pystream.open(path).table.search() \
        .select(["id", "source", "uri", "level", "start", "end", "vector"]) \
        .limit(None).to_arrow().to_pylist()
    return rows


def test_kill9_many_times_then_every_row_exactly_once(tmp_path):
    rng = random.Random(int(os.environ.get("PYSTREAM_CRASH_SEED", "1234")))
    model = make_model_dir(tmp_path / "model")
    folder = tmp_path / "videos"
    folder.mkdir()
    log = open(tmp_path / "daemon.log", "ab")
    procs = []
    try:
        _crash_then_compare(tmp_path, rng, model, folder, log, procs)
    finally:
        for p in procs:  # a failing assertion must not leave a daemon running
            if p.poll() is None:
                p.kill()
                p.wait()


def _crash_then_compare(tmp_path, rng, model, folder, log, procs):
    cfg = _config(tmp_path, "crash", model, folder)
    state, archive = tmp_path / "crash-state", tmp_path / "crash-archive"
    staging = tmp_path / "staging"
    staging.mkdir()
    files: list[str] = []
    exts = ["mp4", "mkv", "ts"]

    def top_up():  # new recordings arrive (written elsewhere, then moved in)
        while len(files) - _files_done(state) < AHEAD:
            assert len(files) < MAX_FILES, "the daemon indexes faster than files can be made"
            i = len(files)
            name = f"cam{i:03d}.{exts[i % 3]}"
            write_video(staging / name, int(FILE_FPS * SAMPLES), fps=FILE_FPS, seed=i)
            os.replace(staging / name, folder / name)
            files.append(str(folder / name))

    kinds = ["start-up"] * START_KILLS + ["indexing"] * INDEXING_KILLS
    rng.shuffle(kinds)
    kills = []  # what each kill hit
    t_start = time.time()
    for kind in kinds:
        top_up()
        proc = _start(cfg, log)
        procs.append(proc)
        if kind == "start-up":
            time.sleep(rng.uniform(0.3, 4.0))
        else:
            def busy():
                s = _status(state)
                return s is not None and s["pid"] == proc.pid and s["encoder"]["batches"] >= 1
            assert _wait_for(busy, 90, proc), \
                f"daemon never encoded (rc={proc.poll()}); see {Path(log.name).read_text()[-3000:]}"
            time.sleep(rng.uniform(0.0, 0.6))
        s = _status(state)
        batches = s["encoder"]["batches"] if s is not None and s["pid"] == proc.pid else 0
        done = _files_done(state)
        assert proc.poll() is None, f"daemon exited by itself (rc={proc.returncode}); see {log.name}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills.append(dict(kind=kind, batches_seen=batches, files_done=done, files=len(files),
                          pending=done < len(files)))
    t_kills = time.time() - t_start
    pending_indexing = [k for k in kills if k["kind"] == "indexing" and k["pending"]]
    assert len(pending_indexing) >= MIN_PENDING_KILLS, kills
    assert len(kills) == START_KILLS + INDEXING_KILLS

    # Let it finish, then stop it cleanly; meanwhile a second daemon indexes the same folder
    # into a fresh archive without interruption (the reference).
    t_fin = time.time()
    ref_cfg = _config(tmp_path, "clean", model, folder)
    _run_to_completion([(cfg, state), (ref_cfg, tmp_path / "clean-state")], log, procs, len(files))
    t_end = time.time()
    rows = _archive(archive)

    # Exactly once.
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

    # The same as the uninterrupted run, id for id and vector for vector.
    ref = {r["id"]: np.asarray(r["vector"]) for r in _archive(tmp_path / "clean-archive")}
    got = {r["id"]: np.asarray(r["vector"]) for r in rows}
    assert sorted(got) == sorted(ref)
    worst = max(float(np.abs(got[k] - ref[k]).max()) for k in ref)
    assert worst < VECTOR_TOL, worst
    by = collections.Counter((k["kind"], k["pending"]) for k in kills)
    print(f"crash test: {len(kills)} kills ({dict(by)}: (kind, work pending)), "
          f"files done / in the folder at each kill "
          f"{[(k['files_done'], k['files']) for k in kills]}, {len(rows)} rows, "
          f"max |vector - clean run| {worst:.2e}; kills {t_kills:.0f} s, "
          f"finish + clean run {t_end - t_fin:.0f} s")
