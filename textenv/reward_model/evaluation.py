"""Evaluating a reward model: held-out pairwise accuracy, and agreement with a gold judge on fresh samples."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from textenv.reward_model.scoring import score_texts


def pairwise_accuracy(model, tokenizer, pairs, max_length: int | None = None) -> float:
    """Fraction of pairs where the chosen completion out-scores the rejected one (a tie counts half)."""
    r_chosen = score_texts(model, tokenizer, pairs["prompt"], pairs["chosen"], max_length=max_length)
    r_rejected = score_texts(model, tokenizer, pairs["prompt"], pairs["rejected"], max_length=max_length)
    return float(np.mean((r_chosen > r_rejected) + 0.5 * (r_chosen == r_rejected)))


def gold_agreement(scores: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """How well ``scores`` order samples like the ``gold`` judge, both (B,).

    - spearman: rank correlation (ties get average ranks).
    - sign_agreement: over all pairs of samples whose gold scores differ, the fraction the scores order
      the same way (a score tie counts half): the pairwise accuracy on fresh samples.
    """
    import pandas as pd

    scores, gold = np.asarray(scores, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    if scores.shape != gold.shape or scores.ndim != 1:
        raise ValueError(f"scores and gold must be 1-D of the same length, got {scores.shape} and {gold.shape}")
    ranks_s, ranks_g = pd.Series(scores).rank().to_numpy(), pd.Series(gold).rank().to_numpy()
    spearman = float(np.corrcoef(ranks_s, ranks_g)[0, 1]) if np.std(ranks_s) * np.std(ranks_g) > 0 else 0.0
    d_gold = np.sign(gold[:, None] - gold[None, :])  # (B, B)
    d_score = np.sign(scores[:, None] - scores[None, :])  # (B, B)
    decided = np.triu(d_gold != 0, k=1)
    agree = (d_gold == d_score) + 0.5 * (d_score == 0)
    sign = float(agree[decided].mean()) if decided.any() else float("nan")
    return {"spearman": spearman, "sign_agreement": sign}


def evaluate_reward_model(model, tokenizer, pairs=None, prompts: Sequence[str] | None = None,
             completions: Sequence[str] | None = None, gold: np.ndarray | None = None) -> dict[str, float]:
    """Held-out pairwise accuracy on ``pairs`` and/or agreement with ``gold`` on fresh samples."""
    out: dict[str, float] = {}
    if pairs is not None:
        out["pairwise_accuracy"] = pairwise_accuracy(model, tokenizer, pairs)
    if prompts is not None:
        if completions is None or gold is None:
            raise ValueError("agreement with the gold judge needs prompts, completions and gold together")
        out.update(gold_agreement(score_texts(model, tokenizer, prompts, completions), np.asarray(gold)))
    return out
