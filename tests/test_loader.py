"""Loading CLIP models: local directories, the hub offline, and clear errors."""

import time

import pytest
import torch

from pystream.model.loader import ModelLoadError, load_clip
from pystream.model.tempme import ClipVideoModel
from model_fixtures import clip_model


def test_hub_id_offline_fails_fast_and_says_how_to_use_a_local_directory(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    t0 = time.time()
    with pytest.raises(ModelLoadError, match="local-dir") as e:
        load_clip("openai/clip-vit-base-patch32")
    assert time.time() - t0 < 15
    assert "openai/clip-vit-base-patch32" in str(e.value)


def test_local_directory_loads_the_same_weights(tmp_path):
    clip = clip_model("tiny")
    clip.save_pretrained(tmp_path / "m")
    model = ClipVideoModel.from_pretrained(tmp_path / "m")
    px = torch.randn(1, 12, 3, 64, 64)
    with torch.no_grad():
        a = model.encode_video(px)
        b = ClipVideoModel(clip).encode_video(px)
    assert torch.allclose(a, b, atol=1e-6)
    assert model.tokenizer is None  # no tokenizer files saved: text search says so
    with pytest.raises(RuntimeError, match="tokenizer"):
        model.encode_text(["a red circle"])


def test_missing_and_incomplete_directories(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_clip(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_clip(tmp_path / "empty")
    clip_model("tiny").config.save_pretrained(tmp_path / "noweights")
    with pytest.raises(ModelLoadError, match="no weights"):
        load_clip(tmp_path / "noweights")


def test_other_architectures_are_refused_clearly(tmp_path):
    from transformers import SiglipConfig

    SiglipConfig().save_pretrained(tmp_path / "siglip")
    (tmp_path / "siglip" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="siglip"):
        load_clip(tmp_path / "siglip")
