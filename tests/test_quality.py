"""The shipped model (pystream/assets/tiny-clip): loads like a hub model, fits the size budget,
encodes video and text, and retrieves held-out synthetic videos far above chance. Also checks
the benchmark's streaming path against offline TempMe. CI never retrains: this only loads."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import CLIPModel

from pystream.model.loader import load_clip, shipped_model_dir
from pystream.model.tempme import ClipVideoModel
from pystream.synthetic.metrics import chance_r_at_k, retrieval_metrics
from pystream.synthetic.train import FRAMES, load_split, prepare_data

SHIPPED = shipped_model_dir()
MAX_BYTES = 20_000_000  # 20 MB
N_SMOKE = 24
SMOKE_SEED = 1  # not the training seed: fresh videos, and only held-out shape-event pairs


def _quality_module():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "quality.py"
    spec = importlib.util.spec_from_file_location("pystream_bench_quality", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(2)
    return ClipVideoModel.from_pretrained("shipped")


@pytest.fixture(scope="module")
def smoke_split(tmp_path_factory, model):
    d = tmp_path_factory.mktemp("quality")
    man = prepare_data(d, 0, 0, N_SMOKE, SMOKE_SEED, model.image_size, progress=False)
    return load_split(d, man, "test", model.image_size)


def test_shipped_files_and_size():
    files = {p.relative_to(SHIPPED).as_posix(): p.stat().st_size for p in SHIPPED.rglob("*")
             if p.is_file()}
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "preprocessor_config.json", "TRAINING.md",
                 # TempMe's trained parts (pystream/model/adapter.py), trained by pystream finetune
                 "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                 "adapter/temporal.safetensors", "adapter/pystream_adapter.json",
                 "adapter/TRAINING.md"):
        assert name in files, name
    assert not any(n.endswith(".pt") for n in files), files  # no resume state shipped
    assert sum(files.values()) <= MAX_BYTES, files
    md = (SHIPPED / "adapter" / "TRAINING.md").read_text()
    assert "pystream finetune" in md and "--seed 0" in md
    cfg = json.loads((SHIPPED / "config.json").read_text())
    assert cfg["model_type"] == "clip" and cfg["architectures"] == ["CLIPModel"]
    md = (SHIPPED / "TRAINING.md").read_text()
    assert "python -m pystream.synthetic.train" in md and "seed" in md


def test_shipped_tempme_is_the_checkpoint_plus_its_adapter():
    from pystream.model.loader import shipped_adapter_dir

    tuned = ClipVideoModel.from_pretrained("shipped-tempme")
    base = ClipVideoModel.from_pretrained("shipped")
    assert tuned.adapter_dir == str(shipped_adapter_dir()) and tuned.temporal is not None
    assert getattr(base, "adapter_dir", None) is None and base.temporal is None
    assert sum(p.numel() for p in tuned.parameters()) - sum(p.numel() for p in base.parameters()) \
        == sum(p.numel() for p in tuned.temporal.parameters())  # LoRA is merged: no new weights


def test_shipped_loads_through_the_hub_code_path():
    clip, tok, stats = load_clip("shipped")
    clip2, _, _ = load_clip(str(SHIPPED))  # a local directory, as a downloaded hub model
    assert type(clip) is CLIPModel and not clip.training
    sd, sd2 = clip.state_dict(), clip2.state_dict()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert tok is not None
    tc = clip.config.text_config
    assert (tc.eos_token_id, tc.bos_token_id, tc.pad_token_id) == \
        (tok.eos_token_id, tok.bos_token_id, tok.pad_token_id)
    assert tc.eos_token_id != 2  # 2 selects transformers' legacy argmax pooling
    pre = json.loads((SHIPPED / "preprocessor_config.json").read_text())
    assert tuple(stats["mean"]) == tuple(pre["image_mean"])
    assert pre["crop_size"]["height"] == clip.config.vision_config.image_size


def test_shipped_encodes_video_and_text(model):
    s = model.image_size
    frames = torch.randint(0, 256, (2, FRAMES, s, s, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        v = model.encode_video(frames)
        v_off = model.encode_video(frames, schedule="off")
        t = model.encode_text(["a red ball appears", "A big blue box moves to the left."])
    assert v.shape == v_off.shape == t.shape == (2, model.dim)
    for x in (v, v_off, t):
        assert torch.allclose(x.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert model.accounting("off").total_macs / model.accounting("default").total_macs >= 1.5


def test_shipped_retrieves_held_out_videos_far_above_chance(model, smoke_split):
    """TempMe text-to-video R@1 on 24 fresh test videos (shape-event pairs never trained on).

    Chance R@1 is 1/24 (4.2%). Requiring 8 of 24 top-1 hits (33%) makes the assertion fail for
    an untrained or broken model: a random ranking gets >= 8 hits with probability ~1e-5."""
    with torch.no_grad():
        t = model.encode_text(smoke_split.captions)
        v = model.encode_video(smoke_split.frames)
    m = retrieval_metrics(t, v)
    n = len(smoke_split.captions)
    chance = chance_r_at_k(n, 1)
    need = 8
    p = 1 / n
    p_tail = sum(math.comb(n, k) * p ** k * (1 - p) ** (n - k) for k in range(need, n + 1))
    assert p_tail < 1e-4  # the threshold really is far from chance
    hits = round(m["r1"] * n / 100)
    assert hits >= need, f"TempMe R@1 {m['r1']:.1f}% (chance {chance:.1f}%), metrics {m}"
    assert m["medr"] <= 3, m  # chance median rank is ~12.5


def test_benchmark_streaming_path_equals_offline(model, smoke_split):
    q = _quality_module()
    frames = smoke_split.frames[:6]
    for schedule in ("default", "fast"):
        off = q.offline_embeddings(model, frames, schedule, batch=4)
        st = q.stream_embeddings(model, frames, schedule, batch=4)  # 2 batches of streams
        assert (off - st).abs().max().item() < 1e-4, schedule


def _label(**kw):
    lab = {"event": "stop", "shape": "square", "colour": "red", "size": "small",
           "direction": "left", "colour_to": None, "shape2": None, "colour2": None,
           "size2": None, "distractor": None}
    lab.update(kw)
    return lab


def test_label_oracle_keys_only_on_what_the_caption_states():
    """Videos that differ only in what their captions do not say are tied for the oracle."""
    q = _quality_module()
    # "stops moving" names no direction: stop-left and stop-right both fit.
    labels = [_label(direction="left"), _label(direction="right")]
    assert q.oracle_r1(labels, ["a red square stops moving"] * 2) == 50.0
    # ... but "moves left and then stops" does.
    assert q.oracle_r1(labels, ["a red square moves left and then stops",
                                "a red square moves right and then stops"]) == 100.0
    # A crossing never states its axis, nor the second object's size unless a size word names it.
    cross = dict(event="cross", shape="triangle", shape2="circle", colour2="blue")
    labels = [_label(**cross, direction="horizontal", size2="small"),
              _label(**cross, direction="vertical", size2="large")]
    assert q.oracle_r1(labels, ["a red triangle and a blue circle cross each other"] * 2) == 50.0
    # A size word on the second object says nothing about the first object's size.
    labels = [_label(**cross, direction="horizontal", size2="large"),
              _label(**cross, direction="horizontal", size="large", size2="large")]
    assert q.oracle_r1(labels, ["a red triangle and a big blue circle pass each other"] * 2) == 50.0
    assert q.oracle_r1(labels, ["a tiny red triangle and a big blue circle pass each other",
                                "a big red triangle and a big blue circle pass each other"]) == 100.0


def test_label_oracle_every_caption_fits_its_own_video():
    from pystream import synth

    q = _quality_module()
    for split in ("test", "train"):
        exs = synth.make_split(split, 400, 5)
        caps = [p for e in exs for p in e.paraphrases]
        targets = [i for i, e in enumerate(exs) for _ in e.paraphrases]
        r = q.oracle_r1([e.label for e in exs], caps, targets=targets)  # raises if one does not
        assert 100.0 / len(exs) < r < 100.0


def test_shipped_adapter_breaks_time_reversal_symmetry(model, smoke_split):
    tuned = ClipVideoModel.from_pretrained("shipped-tempme")
    """Without temporal embeddings TempMe's 2-2-3 grouping maps onto itself under time reversal,
    so a video and its reverse embed almost identically; the shipped adapter's per-slot
    embeddings make the order visible (benchmarks/quality.py measures whether it is *right*:
    direction_acc)."""
    x = smoke_split.frames[:8]
    with torch.no_grad():
        cos = {name: (m.encode_video(x) * m.encode_video(x.flip(1))).sum(-1).mean().item()
               for name, m in (("base", model), ("tuned", tuned))}
    assert cos["base"] > 0.999
    assert cos["tuned"] < cos["base"] - 1e-3, cos


def test_direction_probe_tells_a_shared_direction_from_noise():
    """benchmarks/direction_probe.py's split-half probe: differences that share a direction
    score 100%, differences of random direction about 50%, never what it is not shown."""
    import sys

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "direction_probe.py"
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location("pystream_bench_direction", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(path.parent))
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(16, generator=g)
    d = shared + 0.5 * torch.randn(40, 16, generator=g)
    assert mod.split_half_probe(d) == 100.0
    noise = torch.randn(4000, 16, generator=g)
    assert 45 < mod.split_half_probe(noise) < 55
    assert math.isnan(mod.split_half_probe(d[:1]))
