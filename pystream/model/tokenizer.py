"""A small word-level tokenizer for the shipped model (pystream/assets/tiny-clip).

The shipped CLIP is trained on pystream.synth captions only, so its vocabulary is the words of
those captions (read from synth's templates and word lists, not from sampled captions, so it
does not depend on a seed) plus the special tokens. Text is NFKC-normalised and lowercased,
split on whitespace and punctuation (``\\w+|[^\\w\\s]+``); unknown words map to ``[UNK]``.

It is saved as a plain ``transformers.PreTrainedTokenizerFast`` (``tokenizer.json`` +
``tokenizer_config.json``), so ``AutoTokenizer.from_pretrained(model_dir)`` loads it exactly as
it loads a hub model's tokenizer.

CLIP's text tower pools at the first ``eos_token_id`` in the sequence (transformers' legacy
rule, used only when ``eos_token_id == 2``, pools at the *highest* id instead). So the ids are

    [PAD] = 0, [UNK] = 1, [BOS] = 2, [EOS] = 3, words = 4 ...

and :func:`text_config_ids` gives the matching ``pad/bos/eos_token_id`` for the CLIPTextConfig.
The text tower is causal and pools at EOS, so right padding after EOS cannot change features.
"""

from __future__ import annotations

import os
import re
from typing import Iterable, List, Optional

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIALS = (PAD, UNK, BOS, EOS)
MAX_LENGTH = 32  # tokens, BOS and EOS included (the longest synth caption is about 16)

_WORD = re.compile(r"\w+|[^\w\s]+")
_FIELD = re.compile(r"\{[^}]*\}")


def split_words(text: str) -> List[str]:
    """The pre-tokenisation the tokenizer applies (lowercase, punctuation split), in Python."""
    import unicodedata

    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def caption_vocabulary(extra: Iterable[str] = ()) -> List[str]:
    """Sorted words of every caption pystream.synth can produce (+ ``extra`` words)."""
    from pystream import synth

    texts: List[str] = ["a", "the", ".", ",", "!", "?"]  # punctuation a query may carry
    texts += list(synth.COLOURS)
    for table in (synth.NOUNS, synth.SIZE_WORDS, synth.DIR_WORDS, synth.POSITION_WORDS):
        for words in table.values():
            texts += list(words)
    for templates in (*synth.TEMPLATES.values(), synth.POSITION_TEMPLATES):
        texts += [_FIELD.sub(" ", t) for t in templates]
    texts += list(extra)
    words = set()
    for t in texts:
        words.update(split_words(t))
    return sorted(words - set(w.lower() for w in SPECIALS))


def build_tokenizer(words: Optional[Iterable[str]] = None, max_length: int = MAX_LENGTH):
    """A ``PreTrainedTokenizerFast`` over ``words`` (default: :func:`caption_vocabulary`)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = caption_vocabulary() if words is None else sorted(set(words) - set(SPECIALS))
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # \w+|[^\w\s]+, as split_words
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} $B {EOS}",
        special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        model_max_length=max_length, padding_side="right", truncation_side="right",
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=False,
    )


def text_config_ids(tokenizer) -> dict:
    """``pad/bos/eos_token_id`` for a CLIPTextConfig that matches ``tokenizer``."""
    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id)
    if ids["eos_token_id"] == 2:  # transformers would pool at the highest id instead
        raise ValueError("eos_token_id 2 selects CLIP's legacy argmax pooling; use another id")
    return ids


def save_tokenizer(tokenizer, model_dir: str | os.PathLike) -> None:
    """Writes the tokenizer files next to the model's config.json.

    ``tokenizer_class`` is written as ``PreTrainedTokenizerFast`` (transformers 5 writes its
    new ``TokenizersBackend`` name, which transformers 4.x cannot resolve; 5.x reads both)."""
    import json

    model_dir = os.fspath(model_dir)
    tokenizer.save_pretrained(model_dir)
    path = os.path.join(model_dir, "tokenizer_config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg.pop("backend", None)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
