"""PtsSampler: the one sampling grid of decode_frames (files) and StreamSource (live)."""

from fractions import Fraction
from typing import NamedTuple, Optional

import pytest

from pystream.decode import PtsSampler


class F(NamedTuple):  # the two fields of av.VideoFrame the sampler reads
    pts: Optional[int]
    time_base: Fraction = Fraction(1, 1000)


def _sampled(sampler, pts_ms):
    out = []
    for p in pts_ms:
        t = sampler.sample(F(p))
        if t is not None:
            out.append(round(t, 6))
    return out


def test_first_frame_at_or_after_each_grid_point():
    # 25 fps decoded (40 ms), sampled at 2 fps: frames at 0, 0.52 (first >= 0.5), 1.0, 1.52 ...
    s = PtsSampler(2.0)
    assert _sampled(s, range(0, 2001, 40)) == [0.0, 0.52, 1.0, 1.52, 2.0]


def test_origin_defaults_to_the_first_frame_or_is_given():
    assert _sampled(PtsSampler(1.0), [1400, 1900, 2400, 2900]) == [0.0, 1.0]
    # origin = the stream's start_time (MPEG-TS starts at 1.4 s); frames before it are skipped
    assert _sampled(PtsSampler(1.0, origin=1.4), [1000, 1400, 2400]) == [0.0, 1.0]


def test_a_gap_skips_ahead_instead_of_bursting():
    s = PtsSampler(1.0)
    # 4 fps, then nothing from 1.0 s to 5.1 s: one sample at 5.1, the next at >= 6
    got = _sampled(s, [0, 250, 500, 750, 1000, 5100, 5350, 5600, 5850, 6100])
    assert got == [0.0, 1.0, 5.1, 6.1]


def test_grid_tolerates_float_rounding():
    # 3 fps over exact 1/30 s pts: k/3 computed in floating point must not drop a sample
    s = PtsSampler(3.0)
    got = [s.sample(F(i, Fraction(1, 30))) for i in range(31)]
    assert [i for i, t in enumerate(got) if t is not None] == [0, 10, 20, 30]


def test_missing_pts_counts_one_period_after_the_previous_frame():
    s = PtsSampler(1.0)
    assert [s.sample(F(None)) for _ in range(3)] == [0.0, 1.0, 2.0]


def test_backwards_jump_continues_the_grid_only_when_asked():
    pts = [0, 1000, 2000, 3000, 100, 1100, 2100]  # the encoder restarted at 3 s
    assert _sampled(PtsSampler(1.0, rewind_s=1.0), pts) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    # files: pts never go back that far; without rewind_s the grid waits for pts to catch up
    assert _sampled(PtsSampler(1.0), pts) == [0.0, 1.0, 2.0, 3.0]
    # a small reordering (under rewind_s) is not a restart
    assert _sampled(PtsSampler(1.0, rewind_s=1.0), [0, 1000, 600, 2000]) == [0.0, 1.0, 2.0]


def test_fps_must_be_positive():
    with pytest.raises(ValueError):
        PtsSampler(0)
