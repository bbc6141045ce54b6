"""Random-weight CLIP models of real shapes, built once per test session."""

from __future__ import annotations

import functools

import torch
from transformers import CLIPConfig, CLIPModel

from pystream.model.tempme import ClipVideoModel

# The real architectures' shapes (openai/clip-vit-base-patch32 and -patch16), random weights.
B32 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
           image_size=224, patch_size=32)
B16 = dict(B32, patch_size=16)
TEXT_B = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
              vocab_size=49408, max_position_embeddings=77)
# Small and fast, but the same 12-layer TempMe schedule applies.
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=12, num_attention_heads=2,
            image_size=64, patch_size=8)
TEXT_TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 vocab_size=1000, max_position_embeddings=32, bos_token_id=0, eos_token_id=2)


@functools.lru_cache(maxsize=None)
def clip_model(name: str) -> CLIPModel:
    vision, text, proj = {"b32": (B32, TEXT_B, 512), "b16": (B16, TEXT_B, 512),
                          "tiny": (TINY, TEXT_TINY, 32)}[name]
    if name != "tiny":
        text = dict(text, bos_token_id=49406, eos_token_id=49407)
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=proj)
    return CLIPModel(cfg).eval()


def video_model(name: str, schedule="default") -> ClipVideoModel:
    return ClipVideoModel(clip_model(name), schedule=schedule, model_id=f"random-{name}")
