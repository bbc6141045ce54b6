"""Models: CLIP loading (a Hugging Face id, a local directory or "shipped"), the TempMe video
forward, the streaming encoder and the merge schedules.

    from pystream.model import ClipVideoModel

    model = ClipVideoModel.from_pretrained("shipped")   # or "openai/clip-vit-base-patch32"
    text = model.encode_text(["a red circle moves to the left"])   # [1, dim], L2-normalised
    print(model.model_id, model.dim, model.image_size, tuple(text.shape))

Importing this package is light; torch loads with the first name that needs it.
"""

from __future__ import annotations

from .loader import DEFAULT_MODEL, ModelLoadError, resolve_model, shipped_model_dir

_LAZY = {
    "ClipVideoModel": ("tempme", "ClipVideoModel"),
    "StreamingEncoder": ("streaming", "StreamingEncoder"),
    "TempMeSchedule": ("schedule", "TempMeSchedule"),
}

__all__ = ["ClipVideoModel", "StreamingEncoder", "TempMeSchedule", "ModelLoadError",
           "DEFAULT_MODEL", "resolve_model", "shipped_model_dir"]


from .._lazy import lazy_attributes  # noqa: E402

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
