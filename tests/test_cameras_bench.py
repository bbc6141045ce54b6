"""The figures benchmarks/cameras.py computes (not its timings): fidelity and stage mapping."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import cameras  # noqa: E402


def _unit(v):
    return v / np.linalg.norm(v)


def test_fidelity_identical_is_perfect_and_perturbation_is_measured():
    rng = np.random.default_rng(0)
    ref = {("cam", i): _unit(rng.normal(size=16)) for i in range(30)}
    q = np.stack([_unit(rng.normal(size=16)) for _ in range(8)])
    assert cameras.fidelity(ref, dict(ref), q) == pytest.approx((1.0, 1.0, 1.0))
    # One window replaced by its negation: min cosine -1, mean drops by 2/30.
    got = dict(ref)
    got[("cam", 3)] = -ref[("cam", 3)]
    mean, mn, agree = cameras.fidelity(ref, got, q)
    assert mn == pytest.approx(-1.0)
    assert mean == pytest.approx(1 - 2 / 30)
    assert agree < 1.0  # the negated window left (or entered) some top-10
    # Shuffled vectors: agreement near chance (10 of 30), not 1.
    keys = list(ref)
    perm = rng.permutation(len(keys))
    shuffled = {k: ref[keys[j]] for k, j in zip(keys, perm)}
    assert cameras.fidelity(ref, shuffled, q)[2] < 0.7
    with pytest.raises(ValueError, match="windows differ"):
        cameras.fidelity(ref, {k: v for k, v in list(ref.items())[:-1]}, q)


def test_thread_stages():
    assert cameras._stage_of("pystream-src-cam1") == "decode"
    assert cameras._stage_of(None, "av:h264:df0") == "decode"
    assert cameras._stage_of(None, "python") == "encode"
    assert cameras._stage_of("pystream-encoder") == "encode"
    assert cameras._stage_of("pystream-clip-writer") == "store"
    assert cameras._stage_of("pystream-source-cam1") == "chunking"
