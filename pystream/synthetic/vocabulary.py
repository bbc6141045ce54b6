"""The words of the synthetic benchmark's captions: nouns per shape, size and direction words,
and caption templates per event (colour names are the keys of videos.COLOURS). The shipped
model's tokenizer vocabulary is built from these tables (pystream.model.tokenizer's
``caption_vocabulary``), not from sampled captions, so it does not depend on a seed.
"""

from __future__ import annotations

import re

__all__ = ["NOUNS", "SIZE_WORDS", "DIR_WORDS", "TEMPLATES", "POSITION_WORDS",
           "POSITION_TEMPLATES", "OPPOSITE", "opposite_direction"]

NOUNS = {
    "circle": ["circle", "ball", "disc"],
    "square": ["square", "box", "block"],
    "triangle": ["triangle", "triangular shape"],
    "star": ["star", "star shape"],
    "cross": ["cross", "plus sign", "plus shape"],
}
SIZE_WORDS = {"small": ["small", "little", "tiny"], "large": ["large", "big"]}
DIR_WORDS = {
    "left": ["to the left", "left", "leftward", "towards the left side"],
    "right": ["to the right", "right", "rightward", "towards the right side"],
    "up": ["up", "upward", "towards the top"],
    "down": ["down", "downward", "towards the bottom"],
}
TEMPLATES = {
    "move": ["{np} moves {dir}", "{np} slides {dir}", "{np} travels {dir}",
             "{np} is moving {dir}", "{np} drifts {dir}"],
    "appear": ["{np} appears", "{np} shows up", "{np} pops into view",
               "{np} comes into view", "suddenly {np} appears"],
    "disappear": ["{np} disappears", "{np} vanishes", "{np} goes out of view",
                  "{np} disappears from the scene"],
    "stop": ["{np} stops moving", "{np} moves {dir} and then stops",
             "{np} slides {dir} and comes to a halt", "{np} comes to a stop",
             "{np} moves and then stands still"],
    "cross": ["{np} and {np2} cross each other", "{np} and {np2} pass each other",
              "{np} crosses paths with {np2}", "{np} and {np2} swap sides",
              "{np} passes {np2}"],
    "change_colour": ["the {noun} turns from {colour} to {colour_to}",
                      "{np} changes colour to {colour_to}", "{np} turns {colour_to}",
                      "{np} becomes {colour_to}",
                      "the {size} {noun} changes from {colour} to {colour_to}"],
}

# Where an object is in one frame, on a 3 x 3 grid of (horizontal, vertical) thirds: the
# captions of single frames in the base model's image-text phase (pystream.synthetic.train),
# so that its image embedding knows where things are; a direction is a change of position.
POSITION_WORDS = {
    ("left", "top"): ["in the top left", "in the top left corner"],
    ("centre", "top"): ["at the top", "near the top"],
    ("right", "top"): ["in the top right", "in the top right corner"],
    ("left", "middle"): ["on the left", "at the left side"],
    ("centre", "middle"): ["in the centre", "in the middle"],
    ("right", "middle"): ["on the right", "at the right side"],
    ("left", "bottom"): ["in the bottom left", "in the bottom left corner"],
    ("centre", "bottom"): ["at the bottom", "near the bottom"],
    ("right", "bottom"): ["in the bottom right", "in the bottom right corner"],
}
POSITION_TEMPLATES = ["{np} {pos}", "{np} is {pos}", "{pos} there is {np}"]


OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
# A direction phrase right after the verb that precedes {dir} in TEMPLATES ("moves", "slides",
# ...): only there, since "up" is also part of "shows up". Longest phrases first ("to the
# left" before "left").
_MOTION_VERBS = sorted({m.group(1) for ts in TEMPLATES.values() for t in ts
                        for m in [re.search(r"\{np\} (.+?) \{dir\}", t)] if m})
_DIRECTION = re.compile(r"\b(%s) (%s)\b" % (
    "|".join(map(re.escape, _MOTION_VERBS)),
    "|".join(re.escape(w) for w in sorted({w for ws in DIR_WORDS.values() for w in ws},
                                          key=len, reverse=True))))


def opposite_direction(caption: str) -> str | None:
    """``caption`` with its direction turned around, in the same words ("moves to the left" ->
    "moves to the right", "slides upward" -> "slides downward"), or None when it names no
    direction: the demo's and the tests' question "does the model know which way?"."""
    m = _DIRECTION.search(caption)
    if m is None:
        return None
    word = m.group(2)
    direction = next(d for d, ws in DIR_WORDS.items() if word in ws)
    flipped = DIR_WORDS[OPPOSITE[direction]][DIR_WORDS[direction].index(word)]
    return caption[:m.start(2)] + flipped + caption[m.end(2):]
