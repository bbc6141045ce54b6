"""Token and multiply-add accounting against values computed by hand."""

import pytest

from pystream.model.schedule import DEFAULT, FAST, OFF, schedule_from_config, token_macs


def b32(schedule):
    return token_macs(num_layers=12, width=768, intermediate=3072, patches=49, patch_dim=3072,
                      proj_dim=512, frames=12, schedule=schedule)


def test_default_b32_tokens_600_to_97():
    acc = b32(DEFAULT)
    # Per layer, per sequence: ImgMe 50 -> 34 (r=2 x 8); ClipMe 2x34=68 -30% -> 48 -10% -> 44;
    # 2x44=88 -> 62 -> 56; 3x56=168 -> 118 -> 107; final 107 -> 97.
    assert [l.tokens_out for l in acc.layers] == [48, 46, 44, 42, 40, 38, 36, 34, 44, 56, 107, 97]
    assert [l.sequences for l in acc.layers] == [12] * 8 + [6, 3, 1, 1]
    assert acc.output_tokens == 97
    assert b32(OFF).output_tokens == 600


def test_default_b32_macs_about_35_percent_lower():
    # Per-frame CLIP, by hand: per layer 4*50*768^2 + 2*50^2*768 + 2*50*768*3072 multiply-adds,
    # x 12 layers x 12 frames, plus the patch embedding and the projection.
    layer = 4 * 50 * 768**2 + 2 * 50**2 * 768 + 2 * 50 * 768 * 3072
    per_frame = 12 * 12 * layer + 12 * 49 * 3072 * 768 + 12 * 768 * 512
    assert b32(OFF).total_macs == per_frame
    saving = 1 - b32(DEFAULT).total_macs / per_frame
    assert 0.33 < saving < 0.36


def test_fast_preset_b32_tokens_600_to_24():
    acc = b32(FAST)
    # Per sequence: ImgMe r=4 x 8: 50 -> 18. ClipMe 2x18=36, cross 50% = 18 capped at
    # (36-2)//2 = 17 -> 19, intra 15% = 2 -> 17; 2x17=34, cross capped at (34-4)//2 = 15 -> 19
    # -> 17; 3x17=51, cross capped at (51-12)//2 = 19 -> 32, intra 4 -> 28; final 15% = 4 -> 24.
    assert [l.tokens_out for l in acc.layers] == [46, 42, 38, 34, 30, 26, 22, 18, 17, 17, 28, 24]
    assert [l.sequences for l in acc.layers] == [12] * 8 + [6, 3, 1, 1]
    assert acc.output_tokens == 24  # the README's "600 -> 24 (fast)"
    assert b32(FAST).total_macs < b32(DEFAULT).total_macs


def test_config_overrides_and_errors():
    s = schedule_from_config({"preset": "default", "cross_pct": 40, "clip_groups": [2, 2, 3]})
    assert s.cross_pct == 40 and s.clip_groups == (2, 2, 3)
    with pytest.raises(ValueError, match="unknown merge preset"):
        schedule_from_config("fastest")
    with pytest.raises(ValueError, match="unknown merge setting"):
        schedule_from_config({"crosspct": 3})
    with pytest.raises(ValueError, match="cross_pct"):
        schedule_from_config({"cross_pct": 120})
    with pytest.raises(ValueError, match="ClipMe"):
        DEFAULT.clipme_start(3)
