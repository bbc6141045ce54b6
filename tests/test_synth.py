"""pystream.synthetic.videos: determinism, split rule, decodable videos, and that the events are really
in the pixels (measured with colour masks on the raw rendered frames)."""

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pystream.synthetic import videos as synth
from pystream.decode import decode_frames, probe
from pystream.synthetic.videos import (COLOURS, EVENTS, HELD_OUT, SHAPES, Example,
                                       generate_dataset, make_split, render_example,
                                       render_stream_frames, write_video)

SIZE = 64  # small frames keep the suite fast; geometry scales with size


def _mask(frames, colour, tol=35):
    """(T, H, W) bool: pixels within ``tol`` of the named colour in every channel."""
    ref = np.array(COLOURS[colour], np.int16)
    return (np.abs(frames.astype(np.int16) - ref) <= tol).all(-1)


def _centroids(frames, colour):
    m = _mask(frames, colour)
    ys, xs = np.mgrid[0:m.shape[1], 0:m.shape[2]]
    area = m.sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (m * xs).sum((1, 2)) / area, (m * ys).sum((1, 2)) / area, area


def _find(n, pred, split="train", seed=0):
    exs = [e for e in make_split(split, n, seed) if pred(e.label)]
    assert exs, "no matching example"
    return exs


def _clean(label):
    """The main colour marks only the main object (no same-coloured second object)."""
    others = [label["colour2"], (label["distractor"] or {}).get("colour"), label["colour_to"]]
    return label["colour"] not in others


# ---------------------------------------------------------------- determinism and splits


def test_same_seed_same_captions_and_frames():
    a, b = make_split("train", 20, seed=7), make_split("train", 20, seed=7)
    assert a == b
    for ea, eb in zip(a[:5], b[:5]):
        assert np.array_equal(render_example(ea, SIZE, 12), render_example(eb, SIZE, 12))


def test_different_seed_or_split_differs():
    a = make_split("train", 20, seed=1)
    assert [e.caption for e in a] != [e.caption for e in make_split("train", 20, seed=2)]
    assert [e.caption for e in a] != [e.caption for e in make_split("val", 20, seed=1)]
    assert not np.array_equal(render_example(a[0], SIZE, 4), render_example(a[1], SIZE, 4))


def test_prefix_stable():
    assert make_split("val", 5, 3) == make_split("val", 30, 3)[:5]


def test_held_out_pairs_never_in_train_or_val():
    held = set(HELD_OUT)
    for split in ("train", "val"):
        for e in make_split(split, 1500, seed=0):
            lab = e.label
            assert (lab["shape"], lab["event"]) not in held
            if lab["event"] == "cross":
                assert (lab["shape2"], "cross") not in held


def test_test_split_is_only_held_out_pairs_and_covers_them():
    pairs = {(e.label["shape"], e.label["event"]) for e in make_split("test", 300, seed=0)}
    assert pairs == set(HELD_OUT)


def test_train_covers_every_shape_and_event():
    labels = [e.label for e in make_split("train", 600, seed=0)]
    assert {lab["event"] for lab in labels} == set(EVENTS)
    assert {lab["shape"] for lab in labels} == set(SHAPES)
    for ev in EVENTS:  # each event is seen with every shape except its held-out one
        seen = {lab["shape"] for lab in labels if lab["event"] == ev}
        assert seen == {s for s in SHAPES if (s, ev) not in set(HELD_OUT)}


def test_bad_split_name():
    with pytest.raises(ValueError):
        make_split("training", 1, 0)


# ---------------------------------------------------------------- captions


def test_captions_vary_across_paraphrases():
    exs = make_split("train", 100, seed=0)
    for e in exs:
        assert e.caption == e.paraphrases[0]
        assert len(set(e.paraphrases)) == len(e.paraphrases)
        assert all(isinstance(p, str) and p == p.strip() for p in e.paraphrases)
    assert np.mean([len(e.paraphrases) >= 3 for e in exs]) > 0.9
    assert len({e.caption for e in exs}) > 80  # captions are diverse across examples


def test_captions_name_the_label():
    for e in make_split("train", 200, seed=0):
        lab = e.label
        for p in e.paraphrases:
            assert lab["colour"] in p
            if lab["event"] == "change_colour":
                assert lab["colour_to"] in p
            if lab["event"] == "cross":
                assert lab["colour2"] in p


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), split=st.sampled_from(["train", "val", "test"]))
def test_labels_are_valid(seed, split):
    for e in make_split(split, 5, seed):
        lab = e.label
        assert lab["shape"] in SHAPES and lab["colour"] in COLOURS and lab["event"] in EVENTS
        if lab["event"] in ("move", "stop"):
            assert lab["direction"] in synth.DIRECTIONS
        if lab["event"] == "change_colour":
            assert lab["colour_to"] in COLOURS and lab["colour_to"] != lab["colour"]
        if lab["event"] == "cross":
            assert (lab["shape2"], lab["colour2"]) != (lab["shape"], lab["colour"])
        d = lab["distractor"]
        if d:
            assert (d["shape"], d["colour"]) not in {(lab["shape"], lab["colour"]),
                                                      (lab["shape"], lab["colour_to"])}


# ---------------------------------------------------------------- rendering


def test_render_shape_and_dtype():
    e = make_split("train", 1, 0)[0]
    v = render_example(e, 96, 7)
    assert v.shape == (7, 96, 96, 3) and v.dtype == np.uint8


def test_higher_frame_rate_render_contains_the_same_instants():
    for e in make_split("train", 10, 4):
        lo = render_example(e, SIZE, 12).astype(int)
        hi = render_example(e, SIZE, 48)[::4].astype(int)
        assert np.abs(lo - hi).max() <= 10  # only the fresh sensor noise differs


@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
def test_move_is_really_in_the_pixels(direction):
    exs = _find(300, lambda lab: lab["event"] == "move" and lab["direction"] == direction
                and _clean(lab))
    for e in exs[:4]:
        x, y, area = _centroids(render_example(e, SIZE, 12), e.label["colour"])
        assert (area > 0).all()
        pos = x if direction in ("left", "right") else y
        sign = 1 if direction in ("right", "down") else -1
        assert sign * (pos[-1] - pos[0]) > 0.2 * SIZE
        # Monotone up to camera jitter (a few px).
        assert (sign * np.diff(pos) > -0.1 * SIZE).all()


def test_stop_moves_then_stands_still():
    for e in _find(300, lambda lab: lab["event"] == "stop" and _clean(lab))[:4]:
        x, y, _ = _centroids(render_example(e, SIZE, 12), e.label["colour"])
        pos = x if e.label["direction"] in ("left", "right") else y
        assert abs(pos[5] - pos[0]) > 0.12 * SIZE  # stops at u <= 0.6: moving in frames 0-5
        assert np.ptp(pos[8:]) < 0.1 * SIZE  # still (only jitter) in the last frames


def test_appear_and_disappear():
    for ev in ("appear", "disappear"):
        for e in _find(300, lambda lab: lab["event"] == ev and _clean(lab))[:4]:
            area = _centroids(render_example(e, SIZE, 12), e.label["colour"])[2]
            present = area > 3
            expect_first, expect_last = (False, True) if ev == "appear" else (True, False)
            assert present[0] == expect_first and present[-1] == expect_last
            assert np.sum(np.diff(present.astype(int)) != 0) == 1  # exactly one switch


def test_change_colour():
    for e in _find(300, lambda lab: lab["event"] == "change_colour" and not lab["distractor"])[:4]:
        v = render_example(e, SIZE, 12)
        a, b = _mask(v, e.label["colour"]).sum((1, 2)), _mask(v, e.label["colour_to"]).sum((1, 2))
        assert a[0] > 3 and b[0] == 0 and a[-1] == 0 and b[-1] > 3


def test_cross_objects_swap_sides():
    exs = _find(300, lambda lab: lab["event"] == "cross" and lab["colour"] != lab["colour2"])
    for e in exs[:4]:
        v = render_example(e, SIZE, 12)
        axis = 0 if e.label["direction"] == "horizontal" else 1
        p1 = _centroids(v, e.label["colour"])[axis]
        p2 = _centroids(v, e.label["colour2"])[axis]
        assert np.sign(p1[0] - p2[0]) == -np.sign(p1[-1] - p2[-1]) != 0


def test_background_is_textured_and_jitters():
    e = make_split("train", 1, 0)[0]
    v = render_example(e, SIZE, 12).astype(float)
    assert v[0].std() > 4  # not a flat colour
    # Camera jitter: consecutive frames are shifted copies, not identical.
    assert np.abs(np.diff(v, axis=0)).mean() > 3


# ---------------------------------------------------------------- files


def test_write_video_rejects_odd_size(tmp_path):
    with pytest.raises(ValueError):
        write_video(np.zeros((2, 15, 16, 3), np.uint8), tmp_path / "x.mp4")


def test_generate_dataset_decodes_with_right_frame_count(tmp_path):
    m = generate_dataset(tmp_path, 3, 1, 2, seed=5, size=SIZE, frames=12, progress=False)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == m
    assert [e["split"] for e in m["examples"]] == ["train"] * 3 + ["val"] + ["test"] * 2
    for rec in m["examples"]:
        path = tmp_path / rec["path"]
        info = probe(path)
        assert info["duration_s"] == pytest.approx(12.0, abs=0.3)
        assert (info["width"], info["height"]) == (SIZE, SIZE)
        frames = np.stack([f.rgb for f in decode_frames(path, fps=1.0, size=None)])
        assert frames.shape == (12, SIZE, SIZE, 3)
        ex = Example(**{k: rec[k] for k in ("caption", "paraphrases", "label", "seed", "split")})
        ref = render_example(ex, SIZE, 12).astype(float)
        assert np.abs(frames.astype(float) - ref).mean() < 12  # lossy codec, same picture
        assert set(rec) >= {"path", "caption", "paraphrases", "label", "split"}
    held = {tuple(p) for p in m["held_out"]}
    assert all((e["label"]["shape"], e["label"]["event"]) in held
               for e in m["examples"] if e["split"] == "test")


# ---------------------------------------------------------------- live stream


def test_stream_frames_and_ground_truth():
    frames, segs = render_stream_frames(seed=3, seconds=90, size=SIZE, fps=1.0)
    assert frames.shape == (90, SIZE, SIZE, 3) and frames.dtype == np.uint8
    assert len(segs) >= 5
    prev_end = 0.0
    for start, end, caption in segs:
        assert prev_end <= start < end <= 90 and end - start >= 4 and caption
        prev_end = end
    again = render_stream_frames(seed=3, seconds=90, size=SIZE, fps=1.0)
    assert np.array_equal(frames, again[0]) and segs == again[1]


def test_stream_fps_scales_frame_count():
    frames, segs = render_stream_frames(seed=1, seconds=30, size=SIZE, fps=2.0)
    assert len(frames) == 60 and segs[-1][1] <= 30


def test_frame_positions_follow_the_pixels():
    """frame_positions (layout only, no pixels) puts the captioned object where render_example
    draws it, says None where it is hidden and names the colour it has at that instant."""
    for ev in ("move", "appear", "change_colour"):
        # No second object: a distractor may have the colour the main object turns to.
        for e in _find(300, lambda lab: lab["event"] == ev and not lab["distractor"])[:3]:
            where = synth.frame_positions(e.label, e.seed, 12)
            frames = render_example(e, SIZE, 12)
            for t, w in enumerate(where):
                if w is None:
                    assert ev == "appear" and _mask(frames[t:t + 1], e.label["colour"]).sum() <= 3
                    continue
                x, y, area = _centroids(frames[t:t + 1], w["colour"])
                assert area[0] > 3
                assert abs(x[0] / SIZE - w["x"]) < 0.05 and abs(y[0] / SIZE - w["y"]) < 0.05
            if ev == "change_colour":
                assert where[0]["colour"] == e.label["colour"]
                assert where[-1]["colour"] == e.label["colour_to"]


def test_position_caption_names_the_grid_cell():
    rng = np.random.default_rng(0)
    label = {"shape": "circle", "size": "small", "colour": "red"}
    for (x, y), words in (((0.1, 0.1), ("top", "left")), ((0.9, 0.5), ("right",)),
                          ((0.5, 0.9), ("bottom",)), ((0.5, 0.5), ())):
        for _ in range(10):
            c, neg = synth.position_caption(rng, label, {"x": x, "y": y, "colour": "red"})
            assert "red" in c and all(w in c.split() for w in words), c
            if not words:
                assert "centre" in c or "middle" in c, c
            # The negative: the same object in another cell.
            cell = synth.grid_cell(x, y)
            assert neg != c and "red" in neg
            assert not any(neg.endswith(p) or f" {p} " in f" {neg} "
                           for p in synth.POSITION_WORDS[cell]), (c, neg)
