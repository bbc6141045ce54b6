"""Retention with controlled clocks (issue 12): rows past their limit go (per source and
global age, size cap), the rest stay intact and searches stay right; old versions are cleaned
up; recordings in a folder expire by age and size; `pystream prune --dry-run`."""

from __future__ import annotations

import contextlib
import io
import os
import time

import numpy as np
import pytest
import yaml

import pystream
from pystream.config import ConfigError, parse_config
from pystream.retention import (RetentionPolicy, parse_duration, parse_size, plan,
                                prune_recordings)
from pystream.store import ClipRow
from pystream.writer import ClipWriter

DIM = 8
DAY = 86400.0
NOW = 1_800_000_000.0  # a fixed "now" (2027-01-15)


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def _vec(i):
    v = np.zeros(DIM, np.float32)
    v[i % DIM] = 1.0
    v[(i + 1) % DIM] = 0.1 * (i // DIM + 1)
    return v / np.linalg.norm(v)


def _writer(path, clock, policy, **kw):
    return ClipWriter(str(path), dim=DIM, model_id="m", optimize_every_s=1e9, clock=clock,
                      retention=policy, keep_versions_s=0, **kw)


def _ids(table):
    return {r["id"] for r in table.search().select(["id"]).limit(None).to_arrow().to_pylist()}


def test_durations_and_sizes():
    assert parse_duration("30d") == 30 * DAY and parse_duration("36h") == 36 * 3600
    assert parse_duration("2w") == 14 * DAY and parse_duration(90) == 90.0
    assert parse_duration("1.5m") == 90.0
    assert parse_size("500MB") == 500 * 2**20 and parse_size("2GiB") == 2 * 2**30
    assert parse_size(4096) == 4096
    for bad in ("30x", "-1d", "0", "d"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(ValueError):
        parse_size("12 parsecs")
    cfg = parse_config({"retention": {"max_age": "30d", "max_size": "1GB"},
                        "sources": [{"type": "stream", "name": "gate", "url": "udp://h:1",
                                     "retention": {"max_age": "7d"}}]})
    p = RetentionPolicy.from_config(cfg)
    assert p.max_age_s == 30 * DAY and p.max_bytes == 2**30 and p.per_source == {"gate": 7 * DAY}
    with pytest.raises(ConfigError, match="max_age"):
        parse_config({"retention": {"max_age": "soon"}})
    with pytest.raises(ConfigError, match="unknown key 'max_size'"):
        parse_config({"sources": [{"type": "stream", "name": "g", "url": "udp://h:1",
                                   "retention": {"max_size": "1GB"}}]})


def test_age_limits_per_source_and_global_with_a_moving_clock(tmp_path):
    clock = Clock(NOW)
    policy = RetentionPolicy(max_age_s=30 * DAY, per_source={"gate": 7 * DAY}, interval_s=3600)
    w = _writer(tmp_path / "arc", clock, policy)
    rows = []
    # Live rows (wall-clock times): every 12 h over 40 days, for two cameras.
    for src in ("gate", "dock"):
        for j in range(80):
            end = NOW - j * 0.5 * DAY
            rows.append(ClipRow(src, f"rtsp://{src}", 0, end - 12, end, _vec(len(rows))))
    # A recording with file-relative times: its age counts from when it was indexed.
    clock.t = NOW - 40 * DAY
    w.write([ClipRow("archive", "/rec/old.mp4", 0, 0.0, 12.0, _vec(1), recording=True)])
    w.flush()
    clock.t = NOW - 2 * DAY
    w.write([ClipRow("archive", "/rec/new.mp4", 0, 0.0, 12.0, _vec(2), recording=True)])
    w.write(rows)
    w.flush()
    clock.t = NOW
    table = w.table
    before = {r["id"]: r for r in table.search().limit(None).to_arrow().to_pylist()}
    assert len(before) == 162

    dry = plan(table, policy, NOW)
    assert table.count_rows() == 162  # a plan deletes nothing
    deleted = w.apply_retention(force=True)
    assert deleted == dry["rows"]
    # exactly the rows past their limit: gate > 7 d, dock > 30 d, the old recording
    expect_gone = {i for i, r in before.items()
                   if (r["source"] == "gate" and r["end"] < NOW - 7 * DAY)
                   or (r["source"] == "dock" and r["end"] < NOW - 30 * DAY)
                   or r["uri"] == "/rec/old.mp4"}
    assert len(expect_gone) == 65 + 19 + 1 and deleted == len(expect_gone)
    assert dry["sources"]["gate"]["rows"] == 65 and dry["sources"]["dock"]["rows"] == 19
    assert _ids(table) == set(before) - expect_gone
    # the kept rows are intact, vector for vector
    after = {r["id"]: r for r in table.search().limit(None).to_arrow().to_pylist()}
    for i, r in after.items():
        assert np.array_equal(r["vector"], before[i]["vector"]) and r["end"] == before[i]["end"]
    # not due again before interval_s; a day later the next rows go, never younger ones
    assert w.apply_retention() == 0
    clock.t = NOW + DAY
    w._last_retention -= 3600
    assert w.apply_retention() == 2 + 2  # two gate rows, two dock rows crossed their limit
    cutoff = {"gate": clock.t - 7 * DAY, "dock": clock.t - 30 * DAY}
    for r in table.search().select(["source", "end"]).limit(None).to_arrow().to_pylist():
        if r["source"] in cutoff:
            assert r["end"] >= cutoff[r["source"]]
    # searches see only what is left, and still rank right
    words = {"q": _vec(3)}
    arc = pystream.open(tmp_path / "arc", text_encoder=lambda q: np.stack([words[t] for t in q]))
    hits = arc.search("q", k=5, level=None)
    assert hits and hits[0].id in after and all(h.id in _ids(table) for h in hits)
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert not arc.search("q", k=5, sources=["gate"], until=NOW - 8 * DAY)
    # maintenance compacts and removes old versions: deleted rows' data is gone from disk
    w.maintain(force=True)
    ds = table.to_lance()
    assert len(ds.versions()) <= 2 and ds.count_rows() == table.count_rows()
    assert sum(f.physical_rows for f in ds.get_fragments()) == table.count_rows()
    assert w.stats()["retention_deleted"] == deleted + 4
    w.close(optimize=False)


def test_size_cap_deletes_the_oldest_rows(tmp_path):
    clock = Clock(NOW)
    w = _writer(tmp_path / "arc", clock, None, batch_rows=1000)
    w.write([ClipRow("cam", "rtsp://cam", 0, NOW - 1000 + i, NOW - 990 + i, _vec(i),
                     thumbnail=os.urandom(2000)) for i in range(400)])
    w.flush()
    w.maintain(force=True)
    from pystream.retention import table_data_bytes

    size = table_data_bytes(w.table)
    assert size and size > 400 * 2000
    w.retention = RetentionPolicy(max_bytes=size // 4)
    w.apply_retention(force=True)
    w.maintain(force=True)
    left = w.table.search().select(["end"]).limit(None).to_arrow().column("end").to_pylist()
    assert 80 <= len(left) <= 100  # about a quarter stays
    assert min(left) > NOW - 990 + 299  # ... the newest
    assert table_data_bytes(w.table) <= size // 4 + size // 40
    w.close(optimize=False)


def _touch(path, mtime, size=1000):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    os.utime(path, (mtime, mtime))


def test_prune_recordings_by_age_and_size(tmp_path):
    d = tmp_path / "rec"
    for h in range(48):  # hourly segments in dated folders, 1000 bytes each
        t = NOW - h * 3600 - 100
        _touch(d / time.strftime("%Y-%m-%d", time.gmtime(t)) / f"seg{h:02d}.mp4", t)
    _touch(d / "writing.mp4", NOW - 5)  # being written
    _touch(d / "notes.txt", NOW - 90 * DAY)  # not a video
    _touch(d / ".hidden.mp4", NOW - 90 * DAY)
    dry = prune_recordings(d, max_age_s=DAY, now=NOW, dry_run=True)
    assert len(dry) == 24 and all(f.reason == "age" for f in dry)
    assert len(list(d.rglob("*.mp4"))) == 50  # dry run deleted nothing
    gone = prune_recordings(d, max_age_s=DAY, now=NOW)
    assert [f.path for f in gone] == [f.path for f in dry]
    left = sorted(p.name for p in d.rglob("*.mp4") if not p.name.startswith("."))
    assert left == sorted([f"seg{h:02d}.mp4" for h in range(24)] + ["writing.mp4"])
    assert (d / "notes.txt").exists() and (d / ".hidden.mp4").exists()
    # the size cap: the oldest go until 10 files' worth is left; the file being written stays
    gone = prune_recordings(d, max_bytes=10_000, now=NOW)
    assert len(gone) == 15 and all(f.reason == "size" for f in gone)
    assert sorted(p.name for p in d.rglob("seg*.mp4")) == [f"seg{h:02d}.mp4" for h in range(9)]
    assert (d / "writing.mp4").exists()
    # dated folders left empty are removed, the root stays
    assert all(any(p.iterdir()) for p in d.iterdir() if p.is_dir())
    assert prune_recordings(d, max_age_s=1, now=NOW + 10 * DAY, in_use_s=0) and d.is_dir()


def test_prune_cli_dry_run_then_prune(tmp_path):
    from pystream.cli import main

    arc = tmp_path / "arc"
    now = time.time()
    w = ClipWriter(str(arc), dim=DIM, model_id="m", optimize_every_s=1e9)
    w.write([ClipRow("gate", "rtsp://gate", 0, now - d * DAY - 12, now - d * DAY, _vec(d))
             for d in range(10)])
    w.close(optimize=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"archive": str(arc), "retention": {"max_age": "7d"}}))

    def run(*args):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["prune", "-c", str(cfg), *args])
        return code, out.getvalue()

    code, out = run("--dry-run")
    assert code == 0 and "would delete 3" in out and "gate" in out, out
    assert ClipWriter  # noqa
    assert pystream.open(arc).table.count_rows() == 10
    code, out = run()
    assert code == 0 and "deleted 3 rows" in out, out
    assert pystream.open(arc).table.count_rows() == 7
    cfg.write_text(yaml.safe_dump({"archive": str(arc)}))
    code, _ = run("--dry-run")
    assert code == 2  # no retention configured: says so


def test_checkpoints_forget_gone_files_past_retention(tmp_path):
    """The checkpoint database stays bounded while files come and go: a done-mark goes once its
    file is gone from disk and its rows are past retention, never before."""
    from pystream.checkpoint import CheckpointStore

    kept, gone_old, gone_new = (tmp_path / n for n in ("kept.mp4", "gone_old.mp4", "new.mp4"))
    kept.write_bytes(b"x")
    with CheckpointStore(tmp_path / "state") as ck:
        for p in (kept, gone_old, gone_new):
            ck.mark_file_done("rec", str(p), 1, 1.0)
        ck.mark_file_done("other", str(gone_old), 1, 1.0)
        ck._db.execute("UPDATE files_done SET done = ? WHERE path != ?", (NOW - 2 * DAY,
                                                                          str(gone_new)))
        ck._db.execute("UPDATE files_done SET done = ? WHERE path = ?", (NOW, str(gone_new)))
        # "rec" keeps 1 day, every other source 7 days: only rec's old gone file is moot.
        policy = RetentionPolicy(max_age_s=7 * DAY, per_source={"rec": DAY})
        assert ck.forget_files(policy.cutoffs(NOW)) == 1
        assert ck.is_file_done("rec", str(kept), 1, 1.0)  # still on disk: kept
        assert not ck.is_file_done("rec", str(gone_old), 1, 1.0)
        assert ck.is_file_done("rec", str(gone_new), 1, 1.0)  # rows not past retention yet
        assert ck.is_file_done("other", str(gone_old), 1, 1.0)
        assert ck.forget_files({}) == 0  # no retention: marks kept forever


def test_the_writer_hands_retention_cutoffs_on(tmp_path):
    seen = []
    clock = Clock(NOW)
    w = _writer(tmp_path / "a", clock, RetentionPolicy(max_age_s=DAY, interval_s=0),
                after_retention=seen.append)
    w.write([ClipRow("s", "rtsp://s", 0, NOW - 2 * DAY - 5, NOW - 2 * DAY, _vec(0)),
             ClipRow("s", "rtsp://s", 0, NOW - 10, NOW - 5, _vec(1))])
    w.flush()
    assert w.apply_retention(force=True) == 1
    w.close()
    assert seen and all(c == {None: NOW - DAY} for c in seen)  # close() maintains too
