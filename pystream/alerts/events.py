"""What counts as one event, and a trigger's embedding: pure functions shared by the live
evaluator (engine.py) and `pystream triggers test` (calibrate.py), so both fire on the same rows.

An event is a run of matching windows of one (trigger, source, uri): a matching window that
starts no later than `cooldown_s` after the end of the event's last matching window (and does
not end before the event began) continues it; overlapping windows of one sighting are one event,
and so is a subject that stays in view. Times are the rows' own (video) times, not the wall
clock, so replaying rows after a crash groups them the same way. The alert fires on the event's
first matching window; its idempotency key is a hash of (trigger, source, that window's row id).
"""

from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np

from .store import EventState


def alert_key(trigger: str, source: str, row_id: str) -> str:
    """The idempotency key of the alert of the event that starts at row `row_id`."""
    return hashlib.sha256(f"{trigger}\n{source}\n{row_id}".encode()).hexdigest()[:32]


def continues(state: Optional[EventState], start: float, end: float, cooldown_s: float) -> bool:
    """Does a matching window [start, end] belong to the event `state`?"""
    if state is None:
        return False
    return start <= state.last_end + cooldown_s and end >= state.first_start - cooldown_s


# ----------------------------------------------------------------------------- embeddings

_CACHE: dict = {}  # (model id, kind, fingerprint) -> unit vector; kept across SIGHUP reloads


def _unit(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().float().numpy()
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0:
        raise ValueError("the trigger's embedding is zero or not finite")
    return v / n


def text_embedding(model, text: str) -> np.ndarray:
    import torch

    with torch.no_grad():
        return _unit(model.encode_text([text])[0])


def image_embedding(model, path: str) -> np.ndarray:
    """An example picture, squashed to the model's square input as video frames are."""
    import torch
    from PIL import Image

    size = int(model.image_size)
    with Image.open(path) as im:
        rgb = np.array(im.convert("RGB").resize((size, size), Image.BICUBIC))
    with torch.no_grad():
        return _unit(model.encode_images(model.preprocess(rgb[None]))[0])


def trigger_embedding(model, model_id: str, trigger) -> np.ndarray:
    """The trigger's unit query vector: its text, its image, or the mean of both (each unit
    length first). Computed once per (model, trigger text / image bytes)."""
    key = (str(model_id), id(model), trigger.query_fingerprint())
    if key not in _CACHE:
        parts = []
        if trigger.text is not None:
            parts.append(text_embedding(model, trigger.text))
        if trigger.image is not None:
            parts.append(image_embedding(model, trigger.image))
        _CACHE[key] = _unit(np.mean(parts, axis=0))
    return _CACHE[key]
