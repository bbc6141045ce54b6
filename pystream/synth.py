"""Compatibility alias of :mod:`pystream.synthetic.videos` (and its vocabulary), kept because
pystream.model.tokenizer reads the caption words through ``from pystream import synth``; new code
imports pystream.synthetic.videos / pystream.synthetic.vocabulary."""

from .synthetic.videos import *  # noqa: F401,F403
from .synthetic.videos import __all__  # noqa: F401
from .synthetic.vocabulary import (DIR_WORDS, NOUNS, POSITION_TEMPLATES,  # noqa: F401
                                   POSITION_WORDS, SIZE_WORDS, TEMPLATES)
