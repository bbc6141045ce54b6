"""A real full disk mid-indexing (issue 12), for the archive and for the state directory.

Each test mounts a small tmpfs (root only; skipped with the reason where mounting is not
allowed), indexes a folder of real H.264 files into it with the shipped model, fills the
filesystem to the last byte with a ballast file once the first rows are committed, and checks:

- the signals, at once: ``status()["writer"]`` state "stalled" with the error and since when,
  ``pystream status`` (from the status file, itself written on the full disk), /status,
  /healthz 503 "degraded", /metrics ``pystream_writer_stalled 1`` and the error counter;
- bounded memory: pending rows stay at ``max_pending_rows`` (plus one encoder batch), the
  encoder is held back and the files pause (no new frames decoded while stalled);
- recovery on its own once the ballast is deleted: every file done, the writer "ok", and the
  archive holds exactly the rows of an unfaulted run (same ids, each once, same vectors).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import pystream
from pystream.config import parse_config

from test_pipeline_fixtures import write_video

FILES = 5
SAMPLES = 40  # per file, at 1 fps: 10 chunks -> 8 windows + 2 coarse rows
MAX_PENDING = 24


def _mount(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")


def _umount(path: Path):
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(directory: Path) -> Path:
    """Write a ballast file until the filesystem has not one byte left."""
    ballast = directory / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        for block in (1 << 16, 4096, 1):
            while True:
                try:
                    f.write(b"\0" * block)
                except OSError:
                    break
    return ballast


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    for i in range(FILES):
        write_video(d / f"cam{i}.mp4", SAMPLES, fps=1.0, seed=i)
    return d


@pytest.fixture(scope="module")
def model():
    from pystream.engine import load_video_model

    return load_video_model(parse_config({"model": "shipped"}))


def _config(archive, state, folder):
    return parse_config(dict(
        archive=str(archive), state_dir=str(state), model="shipped", coarse_windows=4,
        sources=[{"type": "folder", "name": "cams", "path": str(folder), "stable_s": 0.2,
                  "scan_interval_s": 1.0}],
        batching={"max_batch_chunks": 4, "max_wait_s": 0.02, "queue_chunks": 4},
        writer={"batch_rows": 8, "flush_interval_s": 0.1, "optimize_interval_s": 3600,
                "max_pending_rows": MAX_PENDING, "retry_max_s": 0.5},
        disk={"warn_free_mb": 1}, http={"enabled": False}))


def _wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _rows(archive):
    t = pystream.open(archive).table
    return t.search().select(["id", "vector"]).limit(None).to_arrow().to_pylist()


def _run(cfg, model, fault=None):
    """Index the folder until every file is done; ``fault(ix)`` runs once rows are committed."""
    from pystream.pipeline import Indexer

    from pystream.status import StatusReporter

    ix = Indexer(cfg, model=model)
    reporter = StatusReporter(cfg.state_dir, ix.status, interval_s=0.2).start()  # as the daemon
    ix.start()
    try:
        if fault is not None:
            _wait(lambda: ix.writer.stats()["rows_written"] > 0, 120, "a first commit")
            fault(ix)
        _wait(lambda: ix.status()["sources"]["cams"]["files_done"] == FILES
              and ix.writer.stats()["pending"] == 0, 240, "every file indexed")
    finally:
        ix.stop()
        code = ix.wait()
        reporter.stop()
    assert code == 0
    return ix


@pytest.fixture(scope="module")
def reference(tmp_path_factory, videos, model):
    root = tmp_path_factory.mktemp("ref")
    _run(_config(root / "arc", root / "state", videos), model)
    rows = _rows(root / "arc")
    assert len(rows) == FILES * (8 + 2)
    return {r["id"]: np.asarray(r["vector"]) for r in rows}


def _same_as_reference(archive, reference):
    rows = _rows(archive)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "a row is there twice"
    assert sorted(ids) == sorted(reference), "rows lost or extra"
    # Same rows, same vectors up to bf16 rounding: the default precision's bf16 kernels give
    # results that depend slightly on how many rows a batch holds, and a stalled writer
    # changes how chunks fall into batches (up to 7e-5 measured for one file batched 1 vs 4
    # chunks a pass; 2.2e-4 once in a CI run under load). Reuse itself is batch-independent.
    worst = max(float(np.abs(np.asarray(r["vector"]) - reference[r["id"]]).max()) for r in rows)
    assert worst < 1e-3, worst


def _check_stalled(ix, error_words, state_dir):
    """Every signal says stalled; memory stays bounded; the files pause."""
    from fastapi.testclient import TestClient

    from pystream.cli import main
    from pystream.http import create_app
    from pystream.metrics import Metrics

    w = _wait(lambda: (lambda s: s if s["state"] == "stalled" else None)(ix.writer_status()),
              30, "the writer to report the stall")
    assert any(word in w["error"] for word in error_words), w["error"]
    assert time.time() - 30 < w["since"] <= time.time() and w["errors"] >= 1
    # Bounded: the encoder is held back and nothing piles up, the files pause.
    _wait(lambda: ix.writer.backpressure.is_set(), 60, "backpressure on the encoder")
    frames = ix.status()["sources"]["cams"]["frames"]
    time.sleep(1.5)
    s = ix.status()
    assert s["writer"]["pending"] <= MAX_PENDING + 4 * 2 + 2, s["writer"]  # + one batch
    assert s["sources"]["cams"]["frames"] == frames, "files kept decoding while stalled"
    assert s["writer"]["state"] == "stalled" and s["writer"]["backpressure"]
    # pystream status, from the status file (written on the full disk if that is where it is)
    time.sleep(0.5)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["status", "--state-dir", str(state_dir)]) == 0
    text = out.getvalue()
    assert "writer: stalled" in text and "STALLED since" in text, text
    assert any(word in text for word in error_words), text
    # HTTP
    c = TestClient(create_app(pystream.open(ix.cfg.archive), ix.status, Metrics(ix.status)))
    h = c.get("/healthz")
    assert h.status_code == 503 and h.json()["status"] == "degraded", h.text
    assert "writer stalled" in h.json()["problems"][0]
    assert c.get("/status").json()["writer"]["state"] == "stalled"
    m = c.get("/metrics").text
    assert "pystream_writer_stalled 1.0" in m
    errors = [ln for ln in m.splitlines() if ln.startswith("pystream_writer_errors_total ")]
    assert errors and float(errors[0].split()[1]) >= 1, m
    return c


def test_archive_disk_full_mid_indexing(tmp_path, videos, model, reference):
    mnt = tmp_path / "small"
    _mount(mnt, "16m")
    try:
        cfg = _config(mnt / "arc", tmp_path / "state", videos)
        seen = {}

        def fault(ix):
            ballast = _fill(mnt)
            c = _check_stalled(ix, ["No space left on device"], tmp_path / "state")
            assert ix.status()["disk"]["archive"]["low"]  # 1 MB warning threshold
            assert "low disk space" in c.get("/healthz").json()["warnings"][0]
            seen["rows_before"] = ix.writer.stats()["rows_written"]
            os.unlink(ballast)  # space comes back: indexing resumes by itself
            _wait(lambda: ix.writer_status()["state"] == "ok", 30, "recovery")
            assert c.get("/healthz").status_code == 200
            assert "pystream_writer_stalled 0.0" in c.get("/metrics").text

        ix = _run(cfg, model, fault)
        assert seen["rows_before"] < FILES * 10  # the fault really landed mid-indexing
        assert ix.status()["writer"]["state"] == "ok"
        _same_as_reference(mnt / "arc", reference)
    finally:
        _umount(mnt)


def test_state_dir_disk_full_mid_indexing(tmp_path, videos, model, reference):
    mnt = tmp_path / "small"
    _mount(mnt, "16m")  # the WAL alone grows to about 4 MB before a checkpoint
    try:
        cfg = _config(tmp_path / "arc", mnt / "state", videos)

        def fault(ix):
            ballast = _fill(mnt)
            _check_stalled(ix, ["checkpoint", "disk is full"], mnt / "state")
            os.unlink(ballast)
            _wait(lambda: ix.writer_status()["state"] == "ok", 30, "recovery")

        ix = _run(cfg, model, fault)
        assert ix.checkpoints is not None
        _same_as_reference(tmp_path / "arc", reference)
        from pystream.checkpoint import CheckpointStore

        with CheckpointStore(mnt / "state") as store:
            assert len(store.files_done("cams")) == FILES  # every checkpoint got written
    finally:
        _umount(mnt)
