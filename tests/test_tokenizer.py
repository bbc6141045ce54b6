"""The shipped model's word-level tokenizer: vocabulary, round trip, special ids, and that
padding (with its attention mask) does not change CLIP text features."""

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from pystream.synthetic import videos as synth
from pystream.model.loader import shipped_model_dir
from pystream.model.tempme import text_features
from pystream.model.tokenizer import (BOS, EOS, PAD, UNK, build_tokenizer, caption_vocabulary,
                                      save_tokenizer, split_words, text_config_ids)

SHIPPED = shipped_model_dir()


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _captions(n=150):
    out = []
    for split in ("train", "val", "test"):
        for e in synth.make_split(split, n, seed=3):
            out += e.paraphrases
    return out


def test_special_ids_and_config_ids(tok):
    assert [tok.convert_tokens_to_ids(t) for t in (PAD, UNK, BOS, EOS)] == [0, 1, 2, 3]
    ids = text_config_ids(tok)
    assert ids == {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}
    # 2 would switch transformers' CLIP to its legacy "pool at the highest id" rule.
    assert ids["eos_token_id"] != 2


def test_every_synth_caption_is_in_vocabulary(tok):
    for c in _captions():
        ids = tok(c)["input_ids"]
        assert tok.unk_token_id not in ids, c
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert len(ids) <= tok.model_max_length


def test_round_trip_lowercase_and_punctuation(tok):
    for c in _captions(40):
        ids = tok(c)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == " ".join(split_words(c))
    ids = tok("A RED Ball, moves left!")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == [BOS, "a", "red", "ball", ",", "moves", "left", "!", EOS]
    assert tok("a red zebra")["input_ids"][3] == tok.unk_token_id  # unknown word -> [UNK]


def test_truncation_keeps_eos(tok):
    ids = tok(" ".join(["red"] * 100), truncation=True)["input_ids"]
    assert len(ids) == tok.model_max_length and ids[-1] == tok.eos_token_id


def test_saved_tokenizer_loads_with_autotokenizer(tok, tmp_path):
    save_tokenizer(tok, tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"  # readable by transformers 4.x too
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for c in _captions(20) + ["Unknown words, and PUNCTUATION!"]:
        assert loaded(c)["input_ids"] == tok(c)["input_ids"]
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id) == (0, 2, 3)


def test_shipped_tokenizer_matches_the_code(tok):
    shipped = AutoTokenizer.from_pretrained(SHIPPED)
    assert shipped.get_vocab() == tok.get_vocab()
    cfg = json.loads((SHIPPED / "config.json").read_text())["text_config"]
    assert cfg["vocab_size"] == len(tok)
    for k, v in text_config_ids(tok).items():
        assert cfg[k] == v, k


def test_vocabulary_is_deterministic_and_sorted():
    v = caption_vocabulary()
    assert v == sorted(set(v)) == caption_vocabulary()
    assert {"red", "circle", "appears", "left", "crosses"} <= set(v)


def _random_clip(tok):
    from pystream.synthetic.train import build_clip

    torch.manual_seed(0)
    return build_clip(tok, size=32, width=64, layers=6, heads=1, text_width=32, text_layers=2,
                      proj=16).eval()


@pytest.mark.parametrize("which", ["random", "shipped"])
def test_padding_does_not_change_text_features(tok, which):
    if which == "random":
        clip = _random_clip(tok)
    else:
        from pystream.model.loader import load_clip

        clip, tok, _ = load_clip("shipped")
    texts = ["a red ball", "the small white plus sign and a large blue box pass each other",
             "circle", "a green star moves to the left and then stops"]
    with torch.no_grad():
        alone = torch.cat([text_features(clip, **{k: v for k, v in tok(t, return_tensors="pt").items()
                                                  if k in ("input_ids", "attention_mask")})
                           for t in texts])
        enc = tok(texts, padding=True, return_tensors="pt")
        assert (enc["attention_mask"] == 0).any()  # there really is padding
        batch = text_features(clip, enc["input_ids"], enc["attention_mask"])
        # Pools at EOS, not at the last position or the highest id.
        no_mask = text_features(clip, enc["input_ids"])
    assert torch.allclose(alone, batch, atol=1e-5)
    assert torch.allclose(alone, no_mask, atol=1e-5)  # causal: padding after EOS is never seen
    # Sanity: the texts really get different features (the comparison above is not vacuous).
    sims = F.normalize(alone, dim=-1) @ F.normalize(alone, dim=-1).T
    assert sims[~torch.eye(len(texts), dtype=torch.bool)].max() < 0.999
