"""Live recording (pystream/sources/recorder.py): every packet the reader receives, remuxed into
rolling segments without re-encoding; retention by age and size; the reader hook."""

from __future__ import annotations

import threading

import av
import numpy as np
import pytest

from pystream.config import ConfigError, parse_config
from pystream.sources.recorder import (Recorder, enforce_retention, list_segments,
                                       parse_segment_name, segment_name)
from pystream.sources.stream import StreamSource


def _clip(path, seconds=6, fps=8, gop=8):
    """H.264 with a keyframe every `gop` frames (and B-frames)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps, options={"g": str(gop), "keyint_min": str(gop),
                                                       "sc_threshold": "0", "preset": "veryfast"})
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        for i in range(seconds * fps):
            img = np.zeros((64, 96, 3), np.uint8)
            img[:, (i * 3) % 80:(i * 3) % 80 + 16] = (255, 0, 0)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _packets(path):
    with av.open(str(path)) as c:
        return [(p.pts, p.is_keyframe, bytes(p)) for p in c.demux(c.streams.video[0]) if p.size]


def test_segment_names_round_trip():
    t = 1796198887.711
    name = segment_name(t, "ts")
    assert name == "20261202T080807.711Z.ts"
    assert parse_segment_name(name) == pytest.approx(t, abs=1e-3)
    assert parse_segment_name("notes.txt") is None


def test_recorder_rolls_segments_on_keyframes(tmp_path):
    clip = _clip(tmp_path / "in.mp4")
    clock = iter(np.arange(1e9, 1e9 + 100, 0.01))
    with av.open(str(clip)) as c:
        s = c.streams.video[0]
        rec = Recorder("cam", {"dir": str(tmp_path / "rec"), "segment_s": 2, "max_age_h": None},
                       s, clock=lambda: float(next(clock)))
        originals = []
        for p in c.demux(s):
            before = (p.pts, p.dts, p.stream.index)
            rec.write(p)
            assert (p.pts, p.dts, p.stream.index) == before  # the reader's packet is untouched
            if p.size:
                originals.append(bytes(p))
        rec.close()
    segs = list_segments(tmp_path / "rec", "cam")
    assert len(segs) == 3 and rec.errors == 0 and rec.stats()["packets"] == len(originals)
    got = []
    for seg in segs:
        pk = _packets(seg.path)
        assert pk[0][1], "every segment starts with a keyframe"
        got += [b for _, _, b in pk]
    assert len(got) == len(originals)  # every packet, none twice
    # Segment names follow the stream's clock: 2 s apart (pts), from the first packet's time.
    assert [round(b.start - segs[0].start, 2) for b in segs] == [0.0, 2.0, 4.0]


def test_retention_by_age_and_size(tmp_path):
    d = tmp_path / "rec" / "cam"
    d.mkdir(parents=True)
    now = 2e9
    for i in range(6):  # one segment a minute, 1 kB each, the newest being written
        (d / segment_name(now - 360 + 60 * i, "ts")).write_bytes(b"x" * 1000)
    (d / "keep-me.txt").write_text("not a segment")
    newest = str(d / segment_name(now - 60, "ts"))
    # Ended more than 3 minutes ago (a segment ends where the next begins): the first two.
    assert enforce_retention(tmp_path / "rec", "cam", 3 / 60, None, keep=newest, now=now) == 2
    assert len(list_segments(tmp_path / "rec", "cam")) == 4
    assert enforce_retention(tmp_path / "rec", "cam", None, 0.0015, keep=newest, now=now) == 3
    left = list_segments(tmp_path / "rec", "cam")
    assert [s.path for s in left] == [newest]  # never the one being written
    assert (d / "keep-me.txt").exists()


def test_stream_source_records_every_packet_in_keyframes_mode(tmp_path):
    """The reader's hook sees the non-key packets that keyframes mode does not decode."""
    clip = _clip(tmp_path / "cam.mp4", seconds=6)
    rec_dir = tmp_path / "rec"

    def run(record):
        src = StreamSource("cam", str(clip), fps=1.0, size=32, decode="keyframes",
                           realtime=False, record=record)
        frames = []
        for item in src.segments(threading.Event()):
            if hasattr(item, "frames"):
                frames += [f.pts_s for f in item.frames]
        return frames

    with_rec = run({"dir": str(rec_dir), "segment_s": 3, "max_age_h": 1})
    without = run(None)
    assert with_rec == without  # recording changes nothing for indexing
    segs = list_segments(rec_dir, "cam")
    assert len(segs) == 2
    recorded = sum(len(_packets(s.path)) for s in segs)
    assert recorded == len(_packets(clip)) == 48


def test_record_config_is_validated(tmp_path):
    cfg = parse_config({"sources": [{"type": "stream", "name": "gate", "url": "udp://x:1",
                                     "record": {"dir": str(tmp_path / "r"), "segment_s": 30,
                                                "max_size_mb": 500}}]})
    rec = cfg.sources[0].record
    assert rec.dir == str((tmp_path / "r").resolve()) and rec.max_age_h == 24.0
    with pytest.raises(ConfigError, match="unknown key 'keep'"):
        parse_config({"sources": [{"type": "stream", "name": "g", "url": "udp://x:1",
                                   "record": {"dir": "r", "keep": 3}}]})
    with pytest.raises(ConfigError, match="segment_s"):
        parse_config({"sources": [{"type": "stream", "name": "g", "url": "udp://x:1",
                                   "record": {"dir": "r", "segment_s": 0}}]})
