"""The engine behind the real FolderSource: files copied slowly into a watched folder (and
temp-then-rename writers) are indexed once, completely; a restart indexes nothing again."""

import os
import shutil
import time

import pytest

import pystream
from pystream.config import parse_config
from pystream.decode import decode_frames
from pystream.pipeline import Indexer

from test_pipeline_fixtures import expected_windows, make_model_dir, write_video


def _cfg(tmp_path, model, folder):
    return parse_config(dict(
        archive=str(tmp_path / "arc"), state_dir=str(tmp_path / "state"), model=model,
        coarse_windows=0, batching={"max_batch_chunks": 4, "max_wait_s": 0.02},
        writer={"batch_rows": 8, "flush_interval_s": 0.1}, http={"enabled": False},
        sources=[{"type": "folder", "name": "rec", "path": str(folder), "stable_s": 1.0,
                  "scan_interval_s": 1.0}]))


def _rows(cfg):
    try:
        return pystream.open(cfg.archive).table.search().select(["id", "uri", "level", "start"]) \
            .limit(None).to_arrow().to_pylist()
    except pystream.archive.ArchiveNotFoundError:
        return []


def _slow_copy(src, dst, pieces=6, pause=0.4):
    data = open(src, "rb").read()
    step = -(-len(data) // pieces)
    with open(dst, "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i:i + step])
            f.flush()
            time.sleep(pause)


@pytest.mark.slow
def test_slow_copies_and_renames_indexed_once_completely(tmp_path):
    model = make_model_dir(tmp_path / "model")
    staging, watched = tmp_path / "staging", tmp_path / "watched"
    staging.mkdir()
    watched.mkdir()
    srcs = [write_video(staging / f"s{i}.{ext}", 4 * 30, seed=i)
            for i, ext in enumerate(["mp4", "mkv", "ts"])]
    cfg = _cfg(tmp_path, model, watched)
    ix = Indexer(cfg)
    ix.start()
    try:
        _slow_copy(srcs[0], watched / "s0.mp4")  # written in pieces over ~2.4 s
        _slow_copy(srcs[1], watched / "s1.mkv")
        shutil.copy(srcs[2], watched / ".s2.ts.part")  # temp name, then rename
        os.rename(watched / ".s2.ts.part", watched / "s2.ts")
        expected = {}
        for i, ext in enumerate(["mp4", "mkv", "ts"]):
            p = str(watched / f"s{i}.{ext}")
            expected[p] = expected_windows(sum(1 for _ in decode_frames(p, 1.0, 64)))[0]
        deadline = time.time() + 120
        while time.time() < deadline:
            rows = _rows(cfg)
            if ix.stats["rec"].files_done == 3 and len(rows) >= sum(expected.values()):
                break
            time.sleep(0.3)
        time.sleep(2.0)  # a rescan now must not index anything twice
    finally:
        ix.stop()
        assert ix.wait() == 0
    rows = _rows(cfg)
    assert len(rows) == len({r["id"] for r in rows})
    for p, w0 in expected.items():
        got = sorted(r["start"] for r in rows if r["uri"] == p)
        assert len(got) == w0, p
        assert got == [got[0] + 4 * i for i in range(w0)]
    assert ix.status()["sources"]["rec"]["errors"] == 0

    # Restart: nothing is decoded again.
    ix2 = Indexer(cfg)
    ix2.start()
    time.sleep(3.0)
    ix2.stop()
    assert ix2.wait() == 0
    assert ix2.status()["sources"]["rec"]["frames"] == 0
    assert len(_rows(cfg)) == len(rows)
