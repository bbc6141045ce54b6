"""TempMe's trained parts (pystream/model/adapter.py): zero-initialised they are the
training-free forward exactly; an adapter saved by fine-tuning loads back (LoRA merged into the
weights, temporal embeddings attached) to the same embeddings; config validation of model:."""

import json

import pytest
import torch

from pystream.config import Config
from pystream.model.adapter import (AdapterError, add_temporal, model_ref_string, save_adapter,
                                    slot_counts)
from pystream.model.tempme import ClipVideoModel

peft = pytest.importorskip("peft")


def _frames(seed, n=2, size=112):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 12, size, size, 3), dtype=torch.uint8, generator=g)


TEXTS = ["a red circle moves to the left", "the big blue box disappears"]


def test_slot_layout():
    assert slot_counts((2, 2, 3)) == [4, 2, 3]
    assert slot_counts((3,)) == [3]


@pytest.mark.parametrize("schedule", ["default", "fast"])
def test_zero_initialised_parts_are_the_training_free_forward_exactly(schedule):
    from pystream.finetune import build_trainable

    base = ClipVideoModel.from_pretrained("shipped-base", schedule=schedule)
    x = _frames(0)
    with torch.no_grad():
        v0, t0 = base.encode_video(x), base.encode_text(TEXTS)
        off0 = base.encode_video(x, schedule="off")
    model, _ = build_trainable("shipped-base", rank=8, alpha=16, schedule=schedule)
    model.eval()
    assert model.temporal is not None
    with torch.no_grad():
        assert torch.equal(model.encode_video(x), v0)
        assert torch.equal(model.encode_text(TEXTS), t0)
        assert torch.equal(model.encode_video(x, schedule="off"), off0)


def _perturbed(schedule="default", targets=None):
    from pystream.finetune import build_trainable

    model, cfg = build_trainable("shipped-base", rank=4, alpha=8, schedule=schedule,
                                 targets=targets)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval(), cfg


def test_adapter_round_trip(tmp_path):
    model, cfg = _perturbed()
    x = _frames(1)
    base = ClipVideoModel.from_pretrained("shipped-base")
    with torch.no_grad():
        v, t = model.encode_video(x), model.encode_text(TEXTS)
        assert (v - base.encode_video(x)).abs().max() > 1e-3  # the parts do something
    out = save_adapter(model, tmp_path / "ad", "shipped-base", cfg)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["adapter_config.json", "adapter_model.safetensors",
                     "pystream_adapter.json", "temporal.safetensors"]
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] \
        == "shipped-base"
    for ref in (str(out), {"base": "shipped-base", "adapter": str(out)},
                Config.model_validate({"model": {"base": "shipped", "adapter": str(out)}}).model):
        loaded = ClipVideoModel.from_pretrained(ref)
        assert "lora_" not in " ".join(n for n, _ in loaded.named_parameters())  # merged
        with torch.no_grad():
            assert torch.allclose(loaded.encode_video(x), v, atol=2e-5)
            assert torch.allclose(loaded.encode_text(TEXTS), t, atol=2e-5)
    # The LoRA files are PEFT's own format: peft loads them onto the base CLIPModel.
    from pystream.model.loader import load_clip
    from pystream.model.tempme import text_features

    clip, tok, _ = load_clip("shipped-base")
    pm = peft.PeftModel.from_pretrained(clip, str(out)).eval()
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        pt = torch.nn.functional.normalize(
            text_features(pm.base_model.model, enc["input_ids"], enc["attention_mask"]), dim=-1)
    assert torch.allclose(pt, t, atol=2e-5)


def test_adapter_round_trip_with_mlp_targets(tmp_path):
    model, cfg = _perturbed(targets=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"])
    x = _frames(3, n=1)
    out = save_adapter(model, tmp_path / "ad", "shipped-base", cfg)
    assert oct((out / "adapter_model.safetensors").stat().st_mode & 0o044) == oct(0o044)
    loaded = ClipVideoModel.from_pretrained(str(out))
    with torch.no_grad():
        assert torch.allclose(loaded.encode_video(x), model.encode_video(x), atol=2e-5)
        assert torch.allclose(loaded.encode_text(TEXTS), model.encode_text(TEXTS), atol=2e-5)


def test_temporal_embeddings_only_model_round_trip(tmp_path):
    m = ClipVideoModel.from_pretrained("shipped-base")
    add_temporal(m)
    with torch.no_grad():
        m.temporal.embeddings[2].fill_(0.3)
    out = save_adapter(m, tmp_path / "t", "shipped-base", None)
    x = _frames(2, n=1)
    with torch.no_grad():
        assert torch.allclose(ClipVideoModel.from_pretrained(str(out)).encode_video(x),
                              m.encode_video(x), atol=1e-6)


def test_model_config_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        Config.model_validate({"model": {"base": "shipped-base", "adapter": str(tmp_path / "no")}})
    with pytest.raises(ValueError, match="not a pystream adapter"):
        Config.model_validate({"model": {"base": "shipped-base", "adapter": str(tmp_path)}})
    with pytest.raises(ValueError, match="unknown key"):
        Config.model_validate({"model": {"base": "x", "adaptor": "y"}})
    with pytest.raises(ValueError, match="needs 'base'"):
        Config.model_validate({"model": {"adapter": str(tmp_path)}})
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(AdapterError, match="did not write"):
        model_ref_string(str(tmp_path))
    assert Config.model_validate({"model": "shipped"}).model == "shipped"


def test_schedule_with_other_clip_groups_is_refused():
    m = ClipVideoModel.from_pretrained("shipped-base")
    add_temporal(m)
    with pytest.raises(ValueError, match="trained for clip_groups"):
        m.encode_video(torch.randint(0, 256, (1, 8, 112, 112, 3), dtype=torch.uint8),
                       schedule={"clip_groups": [2, 4]})
