"""pystream.synthetic.train (and .metrics): retrieval metrics (ties count against), data preparation, gradients through
TempMe's merges, and a tiny end-to-end training run that writes a loadable model directory."""

import json

import numpy as np
import pytest
import torch

from pystream.synthetic import videos as synth
from pystream.model.loader import load_clip
from pystream.model.tempme import ClipVideoModel
from pystream.model.tokenizer import build_tokenizer
from pystream.synthetic.metrics import chance_r_at_k, retrieval_metrics, retrieval_ranks
from pystream.synthetic.train import (FRAMES, build_clip, decode_video, load_split, parse_args,
                                      prepare_data, train)


# ----------------------------------------------------------------------------- metrics


def test_ranks_perfect_and_reversed():
    assert retrieval_ranks(torch.eye(4)).tolist() == [1, 1, 1, 1]
    sim = torch.tensor([[0.0, 1.0, 2.0], [2.0, 0.0, 1.0], [1.0, 2.0, 0.0]])
    assert retrieval_ranks(sim).tolist() == [3, 3, 3]


def test_ties_count_against_the_query():
    n = 7
    assert retrieval_ranks(torch.zeros(n, n)).tolist() == [n] * n
    m = retrieval_metrics(torch.ones(n, 3), torch.ones(n, 3))  # every score equal
    assert m["r1"] == 0.0 and m["r5"] == 0.0 and m["medr"] == n
    sim = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert retrieval_ranks(sim).tolist() == [2, 1, 1]


def test_metrics_values_and_chance():
    torch.manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(20, 8), dim=-1)
    m = retrieval_metrics(v, v)
    assert m == {"r1": 100.0, "r5": 100.0, "r10": 100.0, "medr": 1.0, "n": 20}
    assert chance_r_at_k(20, 1) == 5.0 and chance_r_at_k(4, 10) == 100.0


# ----------------------------------------------------------------------------- data


def test_decode_video_pads_short_files(tmp_path):
    ex = synth.make_split("train", 1, seed=0)[0]
    frames = synth.render_example(ex, 48, 5)
    synth.write_video(frames, tmp_path / "short.mp4", fps=1.0)
    out = decode_video(tmp_path / "short.mp4", 48)
    assert out.shape == (FRAMES, 48, 48, 3) and out.dtype == np.uint8
    assert np.array_equal(out[4], out[11])  # the last decoded frame repeats


def test_parallel_generation_gives_the_same_dataset(tmp_path):
    """Same manifest and decodable files as synth.generate_dataset (libx264 itself is not
    byte-deterministic here, so files are compared by manifest, not bytes)."""
    a = prepare_data(tmp_path / "a", 2, 1, 2, seed=4, size=48, progress=False, workers=1)
    b = prepare_data(tmp_path / "b", 2, 1, 2, seed=4, size=48, progress=False, workers=2)
    assert a == b
    sa, sb = (load_split(tmp_path / d, m, "train", 48) for d, m in (("a", a), ("b", b)))
    assert sa.frames.shape == sb.frames.shape == (2, FRAMES, 48, 48, 3)
    assert (sa.frames.float() - sb.frames.float()).abs().mean() < 2.0


def test_prepare_data_reuses_a_matching_dataset(tmp_path):
    m1 = prepare_data(tmp_path, 3, 2, 2, seed=5, size=48, progress=False)
    stamp = (tmp_path / "manifest.json").stat().st_mtime_ns
    m2 = prepare_data(tmp_path, 3, 2, 2, seed=5, size=48, progress=False)
    assert m1 == m2 and (tmp_path / "manifest.json").stat().st_mtime_ns == stamp
    split = load_split(tmp_path, m2, "test", 48)
    assert split.frames.shape == (2, FRAMES, 48, 48, 3)
    held = {tuple(p) for p in synth.HELD_OUT}
    assert all((lab["shape"], lab["event"]) in held for lab in split.labels)
    assert split.captions == [p[0] for p in split.paraphrases]


# ----------------------------------------------------------------------------- model


def _tiny_video_model(schedule="default"):
    tok = build_tokenizer()
    torch.manual_seed(0)
    clip = build_clip(tok, size=48, width=64, layers=6, heads=1, text_width=32, text_layers=1,
                      proj=16)
    return ClipVideoModel(clip, tok, schedule=schedule)


def test_gradients_flow_through_merging_and_match_the_no_grad_forward():
    m = _tiny_video_model()
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (2, FRAMES, 48, 48, 3), dtype=torch.uint8, generator=g)
    acc = m.accounting("default")
    assert acc.output_tokens < acc.layers[0].sequences * acc.layers[0].tokens_in  # it merges
    v = m.encode_video(frames)
    with torch.no_grad():
        ref = m.encode_video(frames)
    assert torch.allclose(v, ref, atol=1e-5)  # differentiable merge == the core's merge
    (v[0] @ torch.arange(16.0)).backward()
    for i, layer in enumerate(m.layers):
        gq = layer.self_attn.q_proj.weight.grad
        assert gq is not None and gq.abs().sum() > 0, f"no gradient reaches layer {i}"
    assert m.clip.vision_model.embeddings.patch_embedding.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- end to end


def test_tiny_training_run_writes_a_loadable_model(tmp_path):
    out = tmp_path / "model"
    argv = ["--out", str(out), "--data", str(tmp_path / "data"), "--seed", "3",
            "--n-train", "8", "--n-val", "4", "--n-test", "4", "--size", "48", "--width", "64",
            "--heads", "1", "--text-width", "32", "--text-layers", "1", "--proj", "16",
            "--frame-steps", "2", "--frame-batch", "6", "--steps", "2", "--batch", "4",
            "--warmup", "1", "--log-every", "1", "--eval-every", "2", "--threads", "1",
            "--amp", "fp32"]
    info = train(parse_args(argv))
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "preprocessor_config.json", "TRAINING.md"} <= names
    assert info["history"] and info["history"][0]["step"] == 2
    assert set(info["final"]) == {f"{s}/{m}" for s in ("val", "test") for m in ("off", "default", "fast")}
    md = (out / "TRAINING.md").read_text()
    assert "--seed 3" in md and "--steps 2" in md and "MB on disk" in md

    clip, tok, stats = load_clip(out)  # the same path a hub model takes
    assert tok is not None and clip.config.text_config.eos_token_id == tok.eos_token_id
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert list(stats["mean"]) == pre["image_mean"] and pre["crop_size"]["height"] == 48
    m = ClipVideoModel.from_pretrained(out)
    frames = torch.randint(0, 256, (1, FRAMES, 48, 48, 3), dtype=torch.uint8)
    with torch.no_grad():
        v = m.encode_video(frames)
        t = m.encode_text(["a red ball appears"])
    assert v.shape == t.shape == (1, 16)
    assert torch.allclose(v.norm(dim=-1), torch.ones(1)) and torch.allclose(t.norm(dim=-1), torch.ones(1))


def test_training_is_deterministic(tmp_path):
    common = ["--data", str(tmp_path / "data"), "--n-train", "6", "--n-val", "2", "--n-test", "2",
              "--size", "48", "--width", "64", "--heads", "1", "--text-width", "32",
              "--text-layers", "1", "--proj", "16", "--frame-steps", "1", "--frame-batch", "4",
              "--steps", "2", "--batch", "3",
              "--warmup", "1", "--eval-every", "0", "--log-every", "10", "--threads", "1",
              "--amp", "fp32"]
    a = train(parse_args(["--out", str(tmp_path / "a")] + common))
    b = train(parse_args(["--out", str(tmp_path / "b")] + common))
    assert a["final"] == b["final"]
    from safetensors.torch import load_file

    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("bad", [["--amp", "fp16"], ["--steps"]])
def test_bad_arguments_are_rejected(bad):
    with pytest.raises(SystemExit):
        parse_args(["--out", "x"] + bad)
