"""The indexing engine (pystream.pipeline.Indexer) on real encoded files.

These tests drive the engine through a small in-test source (decode_frames over a list of
files), so they exercise the pipeline logic alone: chunking, batching, finish, row ids and times,
checkpoints, resume with carried state, bad files. tests/test_pipeline_folder.py runs the same
engine behind the real FolderSource.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import pystream
from pystream.sources import Segment, SourceEvent
from pystream.config import parse_config
from pystream.decode import decode_frames
from pystream.pipeline import ENCODER_KEY, Indexer, load_video_model
from pystream.checkpoint import CheckpointStore

from test_pipeline_fixtures import expected_windows, make_model_dir, write_video



class ListSource:
    """Files one after another, like FileSource; DecodeError of a file -> error event."""

    def __init__(self, name, paths, size=64, fps=1.0, start=1000.0, slow_s=0.0):
        self.name, self.paths, self.size, self.fps, self.start = name, paths, size, fps, start
        self.slow_s = slow_s

    def _frames(self, path, stop):
        for f in decode_frames(path, self.fps, self.size, start_time=self.start):
            if self.slow_s:
                time.sleep(self.slow_s)
            yield f

    def segments(self, stop):
        import os
        for p in self.paths:
            if stop.is_set():
                return
            st = os.stat(p)
            yield Segment(self.name, p, f"{self.name}:{p}", False, self.start, self._frames(p, stop),
                      (p, st.st_size, st.st_mtime))

    def status(self):
        return {}


class LiveSource:
    """A 'camera': synthetic frames with wall-clock times, `n` frames per connection."""

    def __init__(self, name, connections=(9,), fps=4.0, size=64):
        self.name, self.connections, self.fps, self.size = name, connections, fps, size

    def segments(self, stop):
        from pystream.decode import Frame
        rng = np.random.default_rng(0)
        for c, n in enumerate(self.connections):
            t0 = time.time()

            def frames(n=n, t0=t0):
                for i in range(n):
                    if stop.is_set():
                        return
                    yield Frame(i, i / self.fps, t0 + i / self.fps,
                                rng.integers(0, 255, (self.size, self.size, 3), dtype=np.uint8))
            yield Segment(self.name, "rtsp://cam", self.name, True, t0, frames())
            if c + 1 < len(self.connections):
                yield SourceEvent(self.name, "gap", "rtsp://cam", "camera went away", t0, time.time())

    def status(self):
        return {}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    # 4 fps files sampled at 1 fps: 14, 21 and 9 sampled frames.
    return [write_video(d / "a.mp4", 56, seed=1), write_video(d / "b.mkv", 84, seed=2),
            write_video(d / "c.ts", 36, seed=3)]


def _cfg(tmp_path, model_dir, **over):
    d = dict(archive=str(tmp_path / "arc"), state_dir=str(tmp_path / "state"), model=model_dir,
             coarse_windows=2, batching={"max_batch_chunks": 4, "max_wait_s": 0.02},
             writer={"batch_rows": 4, "flush_interval_s": 0.1}, http={"enabled": False})
    d.update(over)
    return parse_config(d)


def _rows(archive):
    t = pystream.open(archive).table
    return t.search().select(["id", "source", "uri", "level", "start", "end", "thumbnail"]) \
        .limit(None).to_arrow().to_pylist()


def _vectors(archive):
    t = pystream.open(archive).table
    rows = t.search().select(["id", "vector"]).limit(None).to_arrow().to_pylist()
    return {r["id"]: np.asarray(r["vector"]) for r in rows}


def _samples(path):
    return sum(1 for _ in decode_frames(path, 1.0, 64))


def test_files_indexed_once_with_exact_windows(tmp_path, model_dir, videos):
    cfg = _cfg(tmp_path, model_dir)
    ix = Indexer(cfg, sources=[ListSource("cams", videos)])
    assert ix.run() == 0
    rows = _rows(cfg.archive)
    for v in videos:
        n = _samples(v)
        w0, w1 = expected_windows(n, coarse=2)
        mine = [r for r in rows if r["uri"] == v]
        assert sum(r["level"] == 0 for r in mine) == w0, v
        assert sum(r["level"] == 1 for r in mine) == w1, v
        # Windows start on chunk boundaries and cover 12 frames (1 s each), file times + 1000.
        starts = sorted(r["start"] for r in mine if r["level"] == 0)
        assert starts == [1000.0 + 4 * i for i in range(w0)]
        for r in mine:
            if r["level"] == 0:
                assert r["end"] == min(r["start"] + 12.0, 1000.0 + n) or r["end"] == 1000.0 + n
            assert r["thumbnail"][:2] == b"\xff\xd8"  # JPEG
    assert len({r["id"] for r in rows}) == len(rows)
    st = ix.status()["sources"]["cams"]
    assert st["rows"] == len(rows) and st["files_done"] == 3 and st["errors"] == 0
    # Searchable, from another handle, by the vector of a stored row.
    vecs = _vectors(cfg.archive)
    some_id = sorted(k for k in vecs if "|0|" in k)[0]  # a window (a 1-window coarse row ties)
    hit = pystream.open(cfg.archive).search(vecs[some_id], k=1, level=0)[0]
    assert hit.id == some_id and hit.score > 0.999
    # Text search through the model's own text tower ranks windows by cosine with the query:
    # the hits are the stored windows with the highest text . vector, best first, scores equal.
    model = load_video_model(cfg)
    arc = pystream.open(cfg.archive, text_encoder=lambda q: model.encode_text(q).numpy())
    q = model.encode_text("a red circle").numpy()[0]
    want = sorted(((float(q @ v), k) for k, v in vecs.items() if "|0|" in k), reverse=True)[:3]
    hits = arc.search("a red circle", k=3)
    assert [h.id for h in hits] == [k for _, k in want]
    assert [h.score for h in hits] == pytest.approx([sc for sc, _ in want], abs=1e-4)

    # A restart does not index the files again.
    ix2 = Indexer(cfg, sources=[ListSource("cams", videos)])
    assert ix2.run() == 0
    assert len(_rows(cfg.archive)) == len(rows)
    assert ix2.status()["sources"]["cams"]["files_skipped"] == 3
    assert ix2.status()["sources"]["cams"]["frames"] == 0


def test_stop_mid_file_resumes_with_carried_state(tmp_path, model_dir, videos):
    """Stop during a file, restart: the resumed run skips what was encoded, restores the
    carried tokens, and the archive equals an uninterrupted run's, vector for vector."""
    ref_cfg = _cfg(tmp_path / "ref", model_dir)
    assert Indexer(ref_cfg, sources=[ListSource("cams", videos[1:2])]).run() == 0
    ref = _vectors(ref_cfg.archive)

    cfg = _cfg(tmp_path / "cut", model_dir)
    ix = Indexer(cfg, sources=[ListSource("cams", videos[1:2], slow_s=0.05)])
    ix.start()
    deadline = time.time() + 30
    while ix.status()["sources"]["cams"]["rows"] < 3 and time.time() < deadline:
        time.sleep(0.02)
    ix.stop()
    assert ix.wait() == 0
    partial = _vectors(cfg.archive)
    assert 0 < len(partial) < len(ref)
    progress, state = CheckpointStore(cfg.state_dir).get_with_state(ENCODER_KEY)
    (info,) = progress["streams"].values()
    assert info["next_frame"] % 4 == 0 and info["next_frame"] > 0 and state

    ix2 = Indexer(cfg, sources=[ListSource("cams", videos[1:2])])
    assert ix2.run() == 0
    got = _vectors(cfg.archive)
    assert sorted(got) == sorted(ref)
    for k in ref:
        assert np.abs(got[k] - ref[k]).max() < 1e-5, k
    # The resumed run decoded only what was left (frames counted after the resume point).
    assert ix2.status()["sources"]["cams"]["frames"] == _samples(videos[1]) - info["next_frame"]


def test_bad_files_reported_good_ones_indexed(tmp_path, model_dir, videos):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "text.mp4").write_text("not a video at all\n" * 100)
    good = videos[0]
    raw = open(videos[1], "rb").read()
    (bad / "trunc.mkv").write_bytes(raw[: len(raw) // 2])
    paths = [str(bad / "empty.mp4"), good, str(bad / "text.mp4"), str(bad / "trunc.mkv")]
    cfg = _cfg(tmp_path, model_dir)
    ix = Indexer(cfg, sources=[ListSource("cams", paths)])
    assert ix.run() == 0
    st = ix.status()["sources"]["cams"]
    assert st["errors"] == 2 and "text.mp4" in st["last_error"]
    rows = _rows(cfg.archive)
    assert {r["uri"] for r in rows} == {good, str(bad / "trunc.mkv")}
    # The truncated file is indexed up to the cut, then counts as done.
    assert st["files_done"] == 4


def test_live_source_finishes_at_disconnect_and_records_gap(tmp_path, model_dir):
    cfg = _cfg(tmp_path, model_dir, coarse_windows=0)
    ix = Indexer(cfg, sources=[LiveSource("cam", connections=(14, 6))])
    assert ix.run() == 0
    rows = sorted(_rows(cfg.archive), key=lambda r: r["start"])
    # 14 frames: 3 chunks + tail of 2 -> 2 windows; 6 frames: 1 chunk + tail -> 1 short window.
    assert len(rows) == 3
    assert rows[-1]["start"] > rows[0]["end"] - 12  # the second connection starts afresh
    st = ix.status()["sources"]["cam"]
    assert st["lag_s"] is not None and st["lag_s"] < 60
    assert len(st["gaps"]) == 1
    p = CheckpointStore(cfg.state_dir).get("cam")
    assert p["live"] and p["last_end"] == rows[-1]["end"]
    # A restart records the downtime as a gap.
    ix2 = Indexer(cfg, sources=[LiveSource("cam", connections=(0,))])
    assert any(g["message"] == "daemon was down" for g in ix2.status()["sources"]["cam"]["gaps"])
    ix2.run()


def test_batches_chunks_across_sources(tmp_path, model_dir, videos):
    cfg = _cfg(tmp_path, model_dir, batching={"max_batch_chunks": 8, "max_wait_s": 0.3})
    sizes = []
    ix = Indexer(cfg, sources=[ListSource(f"s{i}", [v]) for i, v in enumerate(videos)])
    ix.batch_latency_observer = lambda dt, n: sizes.append(n)
    assert ix.run() == 0
    assert max(sizes) > 1  # chunks of different sources shared a forward pass
    assert {r["source"] for r in _rows(cfg.archive)} == {"s0", "s1", "s2"}


# Test-split videos (seed 1) that the shipped model tells apart from each other by a wide margin
# (chosen again for the retrained tiny-clip of 2026-12-03: offline margin 0.77 among these four).
SHIPPED_VIDEOS = (5, 19, 20, 21)


def test_text_search_finds_the_captioned_video_with_the_shipped_model(tmp_path):
    """Index four synthetic videos through the engine with the shipped model, then search each
    one's caption: that video's window ranks first."""
    from pystream import synth

    exs = synth.make_split("test", max(SHIPPED_VIDEOS) + 1, 1)
    paths = {}
    for i in SHIPPED_VIDEOS:
        # 48 frames at 4 fps, sampled at 1 fps: the 12 frames of one window.
        paths[i] = str(tmp_path / f"v{i}.mp4")
        synth.write_video(synth.render_example(exs[i], 112, 48), paths[i], fps=4.0)
    cfg = _cfg(tmp_path, "shipped", coarse_windows=0)
    assert Indexer(cfg, sources=[ListSource("cams", list(paths.values()), size=112)]).run() == 0
    model = load_video_model(cfg)
    arc = pystream.open(cfg.archive, text_encoder=lambda q: model.encode_text(q).numpy())
    for i, path in paths.items():
        hits = arc.search(exs[i].caption, k=len(paths))
        assert len(hits) == len(paths)
        assert hits[0].uri == path, (exs[i].caption, [(h.uri, round(h.score, 3)) for h in hits])
        assert hits[0].score > hits[1].score + 0.05
