"""make_source and the small pieces of pystream.sources (no servers)."""

import random

import pytest

from pystream.sources import FileSource, FolderSource, Source, StreamSource, make_source
from pystream.sources._util import Backoff, parse_creation_time
from pystream.sources.stream import _redact, default_options


def test_make_source_builds_each_type(tmp_path):
    f = make_source({"type": "folder", "name": "cams", "path": str(tmp_path), "patterns": ["*.MP4"],
                     "stable_s": 1, "poll": True}, is_done=lambda *a: False)
    assert isinstance(f, FolderSource) and f.poll and f.patterns == ("*.mp4",) and f.is_done
    s = make_source({"type": "stream", "name": "gate", "url": "rtsp://127.0.0.1:8554/cam1",
                     "options": {"rtsp_transport": "tcp"}, "fps": 2})
    assert isinstance(s, StreamSource) and s.options["rtsp_transport"] == "tcp" and s.fps == 2
    one = make_source({"type": "file", "name": "one", "path": str(tmp_path / "x.mp4"), "start_time": 5})
    assert isinstance(one, FileSource) and one.start_time == 5
    for src in (f, s, one):
        assert isinstance(src, Source)
        st = src.status()
        assert st["state"] == "idle" and st["last_error"] is None
        assert {"reconnects", "files_seen", "frames", "fps", "lag_s"} <= set(st)


@pytest.mark.parametrize("cfg,msg", [
    ({"name": "x", "path": "/tmp"}, "'type' must be one of"),
    ({"type": "camera", "name": "x"}, "'type' must be one of"),
    ({"type": "folder", "path": "/tmp"}, "'name'"),
    ({"type": "stream", "name": "x"}, "'url' is required"),
    ({"type": "folder", "name": "x", "path": "/tmp", "recursve": True}, "unknown key(s) ['recursve']"),
    ({"type": "stream", "name": "x", "url": "rtsp://h/", "fps": 0}, "fps must be > 0"),
    ("not a dict", "must be a mapping"),
])
def test_make_source_clear_errors(cfg, msg):
    with pytest.raises(ValueError) as e:
        make_source(cfg)
    assert msg in str(e.value)


def test_backoff_grows_with_jitter_and_caps():
    b = Backoff(0.5, 30, rng=random.Random(1))
    d = [b.next_delay() for _ in range(10)]
    for n, x in enumerate(d):
        cap = min(30, 0.5 * 2 ** n)
        assert cap / 2 <= x <= cap
    assert max(d) <= 30 and d[-1] >= 15
    b.reset()
    assert b.next_delay() <= 0.5


def test_parse_creation_time():
    assert parse_creation_time("1970-01-02T00:00:00.000000Z") is None  # "unknown" zero dates
    assert parse_creation_time("2024-05-01T12:00:00.000000Z") == 1714564800.0
    assert parse_creation_time("2024-05-01T14:00:00+02:00") == 1714564800.0
    assert parse_creation_time("yesterday") is None and parse_creation_time(None) is None


def test_default_options_and_redaction():
    assert default_options("rtsp://cam/1") == {"rtsp_transport": "udp"}
    assert default_options("udp://127.0.0.1:1234")["overrun_nonfatal"] == "1"
    assert default_options("http://h/live.m3u8") == {}
    assert _redact("rtsp://admin:secret@10.0.0.2/s1") == "rtsp://admin:***@10.0.0.2/s1"
    assert _redact("rtsp://10.0.0.2/s1") == "rtsp://10.0.0.2/s1"
    s = StreamSource("gate", "rtsp://admin:secret@127.0.0.1:1/x")
    assert "secret" not in s.status()["url"]
