"""Text-to-video retrieval metrics (query i matches video i): ranks with ties counted against
the query, R@1/5/10, median rank, and the chance level of a random ranking."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["chance_r_at_k", "retrieval_metrics", "retrieval_ranks"]


def retrieval_ranks(sim: torch.Tensor) -> torch.Tensor:
    """1-based rank of the matching item (the diagonal) for each query row of ``sim``.

    Ties count against the query: rank = 1 + number of other items scoring >= the match,
    so a model that scores everything equal gets the worst rank, never a lucky one."""
    sim = sim.double()
    pos = sim.diagonal()[:, None]
    ge = (sim >= pos).sum(dim=1) - 1  # the match itself is always >= itself
    return ge + 1


def retrieval_metrics(text_emb: torch.Tensor, video_emb: torch.Tensor) -> dict:
    """Text-to-video R@1/5/10 (percent) and median rank; query i matches video i."""
    ranks = retrieval_ranks(text_emb.float() @ video_emb.float().T).float()
    n = len(ranks)
    return {
        "r1": 100.0 * float((ranks <= 1).float().mean()),
        "r5": 100.0 * float((ranks <= 5).float().mean()),
        "r10": 100.0 * float((ranks <= 10).float().mean()),
        "medr": float(np.median(ranks.numpy())),
        "n": n,
    }


def chance_r_at_k(n: int, k: int) -> float:
    """Expected R@k (percent) of a random ranking of n videos."""
    return 100.0 * min(k, n) / n
