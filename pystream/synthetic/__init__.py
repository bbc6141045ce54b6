"""Tooling for the shipped model and the benchmarks, not the indexing library.

    videos      the deterministic synthetic text-video benchmark (render, encode, splits)
    vocabulary  the words of its captions (the shipped tokenizer's vocabulary comes from them)
    metrics     text-to-video retrieval metrics (R@k, median rank, chance)
    train       trains the shipped tiny CLIP: python -m pystream.synthetic.train --help
"""
