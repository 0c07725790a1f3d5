"""What one RLHF iteration reports: the responses' scores and KL, the budget spent, and the time split."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from agents import distributed as D
from agents.rlhf.responses import Responses


def response_metrics(batch: Responses, gold_fn: Callable | None, n_samples: int) -> dict:
    """Metrics of one rollout's responses.

    ``rm_score`` (mean reward-model score), ``gold_score`` (the task's judge on the same texts; NaN without
    one), ``kl`` (mean KL to the reference per response, nats), ``kl_per_token``, ``kl_coef`` (the beta the
    rollout was paid with), ``response_length``, ``gold_s`` (time spent judging) and ``samples``: the first
    ``n_samples`` (prompt, completion, rm_score).
    """
    start = time.perf_counter()
    gold = float("nan")
    if gold_fn is not None:
        gold = float(np.mean(gold_fn(batch.prompts, batch.texts)))
    kl = batch.kl_per_response()
    return {
        "rm_score": float(np.mean(batch.scores)),
        "gold_score": gold,
        "kl": float(kl.mean()),
        "kl_per_token": float(kl.sum() / batch.response_mask.sum().clamp(min=1)),
        "kl_coef": batch.kl_coef,
        "response_length": float(batch.lengths.float().mean()),
        "gold_s": time.perf_counter() - start,
        "samples": [{"prompt": p, "completion": c, "rm_score": float(s)}
                    for p, c, s in list(zip(batch.prompts, batch.texts, batch.scores))[:n_samples]],
    }


def all_ranks_metrics(stats: dict, batch: Responses) -> dict:
    """``response_metrics`` of each rank's responses combined into those of all ranks' (under torchrun):
    means over responses (every rank holds ``num_envs`` of them), the KL per token over all tokens, the
    slowest rank's judging time; the samples stay this rank's. With one process, ``stats`` unchanged."""
    if D.world().size == 1:
        return stats
    means = ["rm_score", "gold_score", "kl", "response_length"]
    kl = batch.kl_per_response()
    sums = D.all_sum_numbers([stats[k] for k in means] + [float(kl.sum()), float(batch.response_mask.sum())])
    size = D.world().size
    out = {**stats, **{k: v / size for k, v in zip(means, sums)}}
    out["kl_per_token"] = sums[-2] / max(sums[-1], 1.0)
    out["gold_s"] = D.all_max(stats["gold_s"])
    return out


def format_metrics(m: dict, total: int) -> str:
    """One console line per iteration."""
    gold = f"gold {m['gold_score']:+.3f}  " if m["gold_score"] == m["gold_score"] else ""  # NaN: no judge
    return (f"iter {m['iteration']:4d}/{total}  resp {m['responses']:6d}  rm {m['rm_score']:+.3f}  "
            f"{gold}kl {m['kl']:6.2f}  beta {m['kl_coef']:.4f}  "
            f"len {m['response_length']:4.1f}  "
            f"tok/s {m['tokens_per_s']:6.0f}  clip {m.get('clip_fraction', float('nan')):.2f}  "
            f"ev {m.get('explained_variance', float('nan')):+.2f}")
