"""The demo's which-way check (pystream/demo.py) with the default model: recordings of
synthetic events indexed as the demo indexes them, then each caption that names a direction
against the same words turned around, on the window that lies most inside its event."""

import pytest

import pystream
from pystream.demo import direction_check, make_recordings
from pystream.synthetic.vocabulary import opposite_direction

pytestmark = pytest.mark.slow


def test_opposite_direction_turns_only_directions():
    assert opposite_direction("the white cross is moving left") == "the white cross is moving right"
    assert opposite_direction("a green triangle slides towards the top") == \
        "a green triangle slides towards the bottom"
    assert opposite_direction("a tiny box moves to the right and then stops") == \
        "a tiny box moves to the left and then stops"
    assert opposite_direction("the plus shape shows up") is None  # "up", but not a direction
    assert opposite_direction("a red disc turns blue") is None


def test_default_model_tells_which_way_things_move(tmp_path, capsys):
    truth = make_recordings(tmp_path / "videos", n=4, seconds=45, seed=100)
    arc_path = tmp_path / "archive"
    config = pystream.Config.model_validate({"coarse_windows": 0, "merge": {"preset": "default"}})
    pystream.index(tmp_path / "videos", archive=arc_path, source="recordings", fps=1.0,
                   config=config)
    arc = pystream.open(arc_path)
    assert arc.recorded_model == "shipped-tempme"  # the default model
    events = [("recordings", name, s, e, c) for name, s, e, c in truth]
    told, n = direction_check(arc, events)
    out = capsys.readouterr().out
    assert f"direction told apart: {told} of {n} events" in out
    assert n >= 3, out  # enough moving events fill a window to say something
    assert told >= n - 1, out  # 4 of 4 here; 7 of 7 on 12 such recordings
