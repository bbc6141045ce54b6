"""Shared helpers for the pipeline, CLI, daemon and crash tests (plus a check of the helpers).

- make_model_dir(): a tiny random-weight CLIP (12 layers, so TempMe's schedule applies) with a
  word-level tokenizer, saved as a Hugging Face directory; loads through the normal `model:` path.
- write_video(): real H.264 files (MP4 / MKV / MPEG-TS) made with PyAV.
- write_config(): a daemon YAML config for a folder of videos.
"""

from __future__ import annotations

import os
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


def make_model_dir(path) -> str:
    """Tiny CLIP (64 px, patch 8, width 64, 12 layers) + tokenizer, saved under `path`."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from pystream.model.configs import TEXT_TINY, TINY
    from pystream.model.tokenizer import build_tokenizer, save_tokenizer, text_config_ids

    path = Path(path)
    if (path / "config.json").exists():
        return str(path)
    tok = build_tokenizer(["red", "blue", "circle", "square", "moves", "left", "right", "a",
                           "the", "van", "white", "gate"])
    text = dict(TEXT_TINY, **text_config_ids(tok), vocab_size=max(64, len(tok)))
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=TINY, projection_dim=32)).eval()
    clip.save_pretrained(path)
    save_tokenizer(tok, path)
    return str(path)


def write_video(path, n_frames: int, fps: float = 4.0, size=(160, 120), seed: int = 0,
                codec: str | None = None) -> str:
    """n_frames of moving coloured blocks; the container follows the file extension."""
    import av

    w, h = size
    rng = np.random.default_rng(seed)
    codec = codec or ("libx264" if "libx264" in av.codecs_available else "mpeg4")
    base = rng.integers(0, 255, size=3)
    with av.open(os.fspath(path), "w") as c:
        s = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.thread_count = 1
        for i in range(n_frames):
            img = np.empty((h, w, 3), np.uint8)
            img[:] = (base + 7 * i) % 255
            x = (i * 9) % (w - 32)
            img[40:72, x:x + 32] = rng.integers(0, 255, size=3)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return os.fspath(path)


def expected_windows(n_samples: int, k: int = 4, window_chunks: int = 3, hop: int = 1,
                     coarse: int = 0) -> tuple[int, int]:
    """(level-0 rows, level-1 rows) the streaming encoder emits for a file of n_samples
    sampled frames (see StreamingEncoder.encode / finish)."""
    full, rest = divmod(n_samples, k)
    chunks = full + (1 if rest else 0)
    if chunks == 0:
        return 0, 0
    if chunks < window_chunks:
        windows = 1
    else:
        windows = 1 + (chunks - window_chunks) // hop
        if (chunks - window_chunks) % hop:
            windows += 1  # finish() closes the end with one more window
    coarse_rows = 0 if coarse <= 0 else -(-windows // coarse)
    return windows, coarse_rows


def write_config(path, *, archive, state_dir, model, folder=None, sources=None, **top) -> str:
    cfg = {
        "archive": os.fspath(archive), "state_dir": os.fspath(state_dir), "model": os.fspath(model),
        "sample_fps": 1.0, "coarse_windows": 0,
        "batching": {"max_batch_chunks": 8, "max_wait_s": 0.05},
        "writer": {"batch_rows": 16, "flush_interval_s": 0.2, "optimize_interval_s": 3600},
        "http": {"enabled": False},
        "log": {"level": "INFO", "format": "json"},
    }
    if folder is not None:
        sources = [{"type": "folder", "name": "cams", "path": os.fspath(folder),
                    "stable_s": 0.3, "scan_interval_s": 1.0}]
    cfg["sources"] = sources or []
    cfg.update(top)
    Path(path).write_text(yaml.safe_dump(cfg))
    return os.fspath(path)


def env_for_subprocess() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["HF_HUB_OFFLINE"] = "1"
    return env


def test_expected_windows_formula():
    assert expected_windows(12) == (1, 0)
    assert expected_windows(13) == (2, 0)  # 4 chunks, the last padded
    assert expected_windows(5) == (1, 0)  # shorter than a window
    assert expected_windows(40, coarse=3) == (8, 3)
