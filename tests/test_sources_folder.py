"""FolderSource / FileSource on real H.264 files written by the tests, with real watchdog
observers (inotify and polling) on a real folder."""

import os
import shutil
import time
from datetime import datetime, timezone

import av
import pytest

from pystream.decode import Frame
from pystream.sources import FileSource, FolderSource, Segment, SourceEvent, make_source
from streams import Collector, make_video, write_slowly

FPS = 2
SECONDS = 10


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    return {
        "mp4": make_video(d / "a.mp4", seconds=SECONDS),
        "mkv": make_video(d / "b.mkv", seconds=SECONDS),
        "ts": make_video(d / "c.ts", seconds=SECONDS),
        "short": make_video(d / "short.mp4", seconds=4),
    }


@pytest.fixture
def watch(tmp_path):
    """Starts a FolderSource on a fresh folder in a collector thread; always stopped."""
    started = []

    def start(folder=None, **kw):
        folder = folder or tmp_path / "watched"
        folder.mkdir(exist_ok=True)
        kw.setdefault("fps", FPS)
        kw.setdefault("size", 32)
        kw.setdefault("stable_s", 1.0)
        src = FolderSource("cams", str(folder), **kw)
        c = Collector(src).start()
        started.append(c)
        return c, folder

    yield start
    for c in started:
        assert c.close(10) < 3, "FolderSource did not honour stop promptly"


def by_name(c):
    return {os.path.basename(r["seg"].uri): r for r in c.segments}


@pytest.mark.slow
@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "polling"])
def test_slow_copies_yield_once_complete(watch, media, poll):
    c, folder = watch(poll=poll, poll_interval_s=0.3, stable_s=1.5 if poll else 1.0)
    time.sleep(0.5)  # observer up
    for ext in ("mp4", "mkv", "ts"):
        # 6 pieces, 0.4 s apart: partial for ~2.4 s, each pause shorter than stable_s
        write_slowly(media[ext], folder / f"cam1_{ext}.{ext}", pieces=6, pause=0.4)
    c.wait_for(lambda: len(c.segments) >= 3 and all(not r["seg"] is None for r in c.segments)
               and sum(len(r["frames"]) for r in c.segments) >= 3 * SECONDS * FPS,
               30, "3 complete files")
    time.sleep(2.5)  # would a later event/scan yield anything twice?
    segs = by_name(c)
    assert sorted(segs) == ["cam1_mkv.mkv", "cam1_mp4.mp4", "cam1_ts.ts"]
    assert len(c.segments) == 3, [r["seg"].uri for r in c.segments]
    for name, r in segs.items():
        seg: Segment = r["seg"]
        path = str(folder / name)
        assert seg.uri == path and seg.source == "cams" and not seg.live
        assert seg.stream_id == f"cams:{path}"
        assert seg.file_key == (path, os.path.getsize(path), os.stat(path).st_mtime)
        assert r["error"] is None
        assert len(r["frames"]) == SECONDS * FPS  # every frame: the file was complete
        assert [f.pts_s for f in r["frames"]] == pytest.approx([k / FPS for k in range(SECONDS * FPS)])
        assert all(isinstance(f, Frame) and f.rgb.shape == (32, 32, 3) for f in r["frames"])
    assert not c.kinds("error")
    st = c.source.status()
    assert st["files_seen"] == 3 and st["frames"] == 3 * SECONDS * FPS and st["last_error"] is None
    assert st["state"] == "idle"


@pytest.mark.slow
def test_temp_then_rename_yields_once_under_final_name(watch, media):
    c, folder = watch()
    (folder / "cam2").mkdir()
    time.sleep(0.5)
    tmp = folder / "cam2" / "clip.mkv.part"     # does not match the patterns
    hidden = folder / "cam2" / ".clip2.mp4"     # matches, but hidden (rsync style)
    write_slowly(media["mkv"], tmp, pieces=4, pause=0.4)
    write_slowly(media["mp4"], hidden, pieces=4, pause=0.4)
    os.rename(tmp, folder / "cam2" / "clip.mkv")
    os.rename(hidden, folder / "cam2" / "clip2.mp4")
    c.wait_for(lambda: len(c.segments) >= 2 and all(len(r["frames"]) == SECONDS * FPS for r in c.segments),
               20, "renamed files")
    time.sleep(2.0)
    assert sorted(by_name(c)) == ["clip.mkv", "clip2.mp4"]
    assert len(c.segments) == 2
    assert not c.events


def test_startup_scan_done_files_and_missed_while_down(watch, media, tmp_path):
    folder = tmp_path / "watched"
    folder.mkdir()
    shutil.copy(media["mp4"], folder / "old.mp4")
    c1, _ = watch(folder)
    c1.wait_for(lambda: c1.segments and len(c1.segments[0]["frames"]) == SECONDS * FPS, 15, "old.mp4")
    done = {r["seg"].file_key for r in c1.segments}
    assert c1.close(5) < 3
    # The daemon is down; a new recording arrives; the old one is untouched.
    (folder / "sub").mkdir()
    shutil.copy(media["ts"], folder / "sub" / "new.ts")
    asked = []

    def is_done(path, size, mtime):
        asked.append(path)
        return (path, size, mtime) in done

    c2, _ = watch(folder, is_done=is_done)
    c2.wait_for(lambda: c2.segments and len(c2.segments[0]["frames"]) == SECONDS * FPS
                and c2.source.status()["files_skipped"] == 1, 15, "new.ts and old.mp4 skipped")
    time.sleep(1.0)
    assert [r["seg"].uri for r in c2.segments] == [str(folder / "sub" / "new.ts")]
    assert not c2.events  # done files are skipped quietly
    assert set(asked) == {str(folder / "old.mp4"), str(folder / "sub" / "new.ts")}
    assert c2.source.status()["files_skipped"] == 1


def test_periodic_scan_catches_missed_events(watch, media, monkeypatch):
    # Simulate an inotify overflow: the observer delivers nothing at all.
    from pystream.sources import folder as folder_mod

    monkeypatch.setattr(folder_mod._Handler, "on_any_event", lambda self, event: None)
    c, folder = watch(scan_interval_s=1.0)
    time.sleep(1.5)  # past the start-up scan
    shutil.copy(media["short"], folder / "late.mp4")
    c.wait_for(lambda: c.segments and len(c.segments[0]["frames"]) == 4 * FPS, 10, "late.mp4 via scan")
    assert len(c.segments) == 1


def test_bad_files_give_errors_and_good_files_still_come_through(watch, media, tmp_path):
    folder = tmp_path / "watched"
    folder.mkdir()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mkv").write_text("this is not a video\n" * 100)
    data = media["mp4"].read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov atom (at the end) lost
    (folder / "garbage.ts").write_bytes(os.urandom(50_000))
    shutil.copy(media["ts"], folder / "good.ts")
    c, _ = watch(folder)
    c.wait_for(lambda: len(c.kinds("error")) >= 4 and c.segments
               and len(by_name(c).get("good.ts", {"frames": []})["frames"]) == SECONDS * FPS,
               20, "4 errors and good.ts")
    errors = {os.path.basename(e.uri): e.message for e in c.kinds("error")}
    assert set(errors) == {"empty.mp4", "notes.mkv", "truncated.mp4", "garbage.ts"}
    for name, msg in errors.items():
        assert name in msg  # the message names the file
    assert "empty" in errors["empty.mp4"]
    assert list(by_name(c)) == ["good.ts"]
    st = c.source.status()
    assert st["files_failed"] == 4 and st["last_error"]
    time.sleep(1.5)
    assert len(c.kinds("error")) == 4  # bad files are not retried until they change


def test_changed_file_is_indexed_again_as_new_version(watch, media, tmp_path):
    c, folder = watch()
    shutil.copy(media["short"], folder / "rec.mp4")
    c.wait_for(lambda: c.segments and len(c.segments[0]["frames"]) == 4 * FPS, 10, "first version")
    first_key = c.segments[0]["seg"].file_key
    # Replaced with a longer recording (temp + rename, as a writer would).
    shutil.copy(media["mp4"], folder / "rec.tmp")
    os.replace(folder / "rec.tmp", folder / "rec.mp4")
    c.wait_for(lambda: len(c.segments) == 2 and len(c.segments[1]["frames"]) == SECONDS * FPS, 10,
               "second version")
    second = c.segments[1]["seg"]
    assert second.uri == str(folder / "rec.mp4") and second.stream_id == c.segments[0]["seg"].stream_id
    assert second.file_key != first_key and second.file_key[1] == media["mp4"].stat().st_size


def test_missing_folder_is_an_error_then_recovers(watch, media, tmp_path):
    folder = tmp_path / "later"
    src = FolderSource("cams", str(folder), fps=FPS, size=32, stable_s=0.5, scan_interval_s=1.0)
    c = Collector(src).start()
    try:
        c.wait_for(lambda: c.kinds("error"), 5, "missing folder error")
        assert "does not exist" in c.kinds("error")[0].message
        # An unmounted share is a state the source waits out (shown in `pystream status`).
        assert src.status()["state"] == "waiting: folder missing"
        folder.mkdir()
        shutil.copy(media["short"], folder / "x.mp4")
        c.wait_for(lambda: c.segments and len(c.segments[0]["frames"]) == 4 * FPS, 15, "x.mp4")
    finally:
        assert c.close(5) < 3


def test_creation_time_metadata_sets_start_time(tmp_path):
    path = tmp_path / "meta.mp4"
    make_video(path, seconds=2)
    tagged = tmp_path / "tagged.mp4"
    with av.open(str(path)) as inp, av.open(str(tagged), "w") as out:
        out.metadata["creation_time"] = "2024-05-01T12:00:00.000000Z"
        s_in = inp.streams.video[0]
        s_out = out.add_stream_from_template(s_in)
        for pkt in inp.demux(s_in):
            if pkt.dts is None:
                continue
            pkt.stream = s_out
            out.mux(pkt)
    src = FileSource("one", str(tagged), fps=1, size=16)
    [seg] = list(src.segments(__import__("threading").Event()))
    expect = datetime(2024, 5, 1, 12, tzinfo=timezone.utc).timestamp()
    assert seg.start_time == pytest.approx(expect)
    frames = list(seg.frames)
    assert [f.t for f in frames] == pytest.approx([expect, expect + 1])


def test_file_source_once_with_configured_start_and_errors(media, tmp_path):
    import threading

    src = make_source({"type": "file", "name": "one", "path": str(media["short"]),
                       "fps": 1, "size": 16, "start_time": 1000.0})
    items = list(src.segments(threading.Event()))
    assert len(items) == 1 and isinstance(items[0], Segment)
    seg = items[0]
    assert not seg.live and seg.start_time == 1000.0 and seg.file_key[0] == str(media["short"])
    assert [f.t for f in seg.frames] == pytest.approx([1000.0, 1001.0, 1002.0, 1003.0])

    bad = tmp_path / "bad.mp4"
    bad.write_text("nope")
    items = list(FileSource("bad", str(bad)).segments(threading.Event()))
    assert len(items) == 1 and isinstance(items[0], SourceEvent) and items[0].kind == "error"
    assert "bad.mp4" in items[0].message

    skipped = list(FileSource("one", str(media["short"]), is_done=lambda *k: True).segments(threading.Event()))
    assert [e.kind for e in skipped] == ["file_skipped"]
