"""CLIP architectures by shape, with random weights: how tests and benchmarks run real model
shapes on machines where no pretrained weights can be downloaded."""

from __future__ import annotations

import functools

# The shapes of openai/clip-vit-base-patch32 and -patch16.
B32 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
           image_size=224, patch_size=32)
B16 = dict(B32, patch_size=16)
TEXT_B = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
              vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407)
# Small and fast, but 12 layers so the same TempMe schedule applies.
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=12, num_attention_heads=2,
            image_size=64, patch_size=8)
TEXT_TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 vocab_size=1000, max_position_embeddings=32, bos_token_id=0, eos_token_id=2)
SHAPES = {"b32": (B32, TEXT_B, 512), "b16": (B16, TEXT_B, 512), "tiny": (TINY, TEXT_TINY, 32)}


@functools.lru_cache(maxsize=None)
def random_clip(name: str, seed: int = 0):
    """A CLIPModel of a named shape ('b32', 'b16', 'tiny') with seeded random weights."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    if name not in SHAPES:
        raise ValueError(f"unknown model shape {name!r}; choose one of {sorted(SHAPES)}")
    vision, text, proj = SHAPES[name]
    torch.manual_seed(seed)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=proj)).eval()
