"""Random-weight CLIP models of real shapes (see pystream.model.configs), built once."""

from pystream.model.configs import random_clip as clip_model
from pystream.model.tempme import ClipVideoModel


def video_model(name: str, schedule="default") -> ClipVideoModel:
    return ClipVideoModel(clip_model(name), schedule=schedule, model_id=f"random-{name}")
