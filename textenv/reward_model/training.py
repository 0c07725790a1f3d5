"""Training a reward model on preference pairs, and the recipe of the shipped one.

Run: ``python -m textenv.default.build`` trains the shipped one (``build_reward_model``, the recipe the
example's ``--train-reward-model`` runs too); ``train_reward_model`` trains any.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from textenv.reward_model.loss import pairwise_loss
from textenv.reward_model.model import init_reward_model
from textenv.reward_model.normalize import set_normalization
from textenv.reward_model.scoring import max_reward_tokens, reward_inputs, reward_logits, reward_text, score_texts


@dataclass
class RewardTrainConfig:
    """How ``train_reward_model`` trains on preference pairs."""

    epochs: int = 2
    """Passes over the pairs."""
    batch_size: int = 32
    """Pairs per step (the model sees 2 x batch_size sequences)."""
    lr: float = 1e-3
    """Peak AdamW learning rate (linear warm-up over 5% of the steps, then linear decay to 0)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    use_margin: bool = False
    """Subtract the pairs' ``margin`` column in the loss (Llama 2). Off: plain Bradley-Terry."""
    max_length: int | None = 64
    """Longest scored sequence in tokens (None: the model's own limit); longer ones keep their last tokens.
    When it is below the model's own limit it is saved as ``config.reward_max_length``, so the env scores
    with the length the model was trained on."""
    seed: int = 0
    """Seeds the pair order."""


def _check_seams(prompts: Sequence[str], completions: Sequence[str]) -> None:
    """Warn when most completions run into their prompt's last word ("was" + "great"): the data then lack the
    leading space the env's completions carry, and the model would learn "wasgreat"."""
    joined = [bool(p) and bool(c) and p[-1].isalnum() and c[0].isalnum() for p, c in zip(prompts, completions)]
    if joined and np.mean(joined) > 0.5:
        example = next(i for i, j in enumerate(joined) if j)
        warnings.warn(
            f"{int(np.sum(joined))} of {len(joined)} completions start with a letter right after their prompt's last "
            f"letter (e.g. {reward_text(prompts[example], completions[example])[-40:]!r}); the reward model reads "
            f"prompt + completion verbatim, as the env serves it: give completions their leading space (' great.')",
            stacklevel=3,
        )


def train_reward_model(model, tokenizer, pairs, config: RewardTrainConfig) -> dict[str, float]:
    """Train ``model`` in place on preference ``pairs`` (prompt, chosen, rejected[, margin]).

    Returns {"loss_first", "loss_last", "accuracy_last"} (means over the first / last 20 steps).
    """
    if len(pairs) == 0:
        raise ValueError("train_reward_model needs at least one preference pair, got an empty dataset")
    if config.use_margin and "margin" not in pairs.column_names:
        raise ValueError(f"use_margin=True needs a margin column, got columns {pairs.column_names}")
    prompts, chosen, rejected = pairs["prompt"], pairs["chosen"], pairs["rejected"]
    _check_seams(prompts, chosen)
    own_limit = max_reward_tokens(model, tokenizer)
    if config.max_length is not None and (own_limit is None or config.max_length < own_limit):
        model.config.reward_max_length = int(config.max_length)  # served with the length it was trained on
    margins = torch.tensor(pairs["margin"], dtype=torch.float32) if config.use_margin else None
    n = len(prompts)
    steps = config.epochs * ((n + config.batch_size - 1) // config.batch_size)
    warmup = max(1, steps // 20)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    gen = torch.Generator().manual_seed(config.seed)
    losses, accs = [], []
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=gen).tolist()
        for start in range(0, n, config.batch_size):
            mb = order[start: start + config.batch_size]
            mb_prompts = [prompts[i] for i in mb] * 2
            mb_completions = [chosen[i] for i in mb] + [rejected[i] for i in mb]
            ids, mask = reward_inputs(model, tokenizer, mb_prompts, mb_completions, config.max_length)  # (2B, T)
            r_chosen, r_rejected = reward_logits(model, ids, mask).split(len(mb))  # one forward: (B,), (B,)
            loss = pairwise_loss(r_chosen, r_rejected, None if margins is None else margins[mb].to(ids.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            accs.append((r_chosen > r_rejected).float().mean().item())
    model.eval()
    w = min(20, len(losses))
    return {"loss_first": float(np.mean(losses[:w])), "loss_last": float(np.mean(losses[-w:])),
            "accuracy_last": float(np.mean(accs[-w:]))}


def build_reward_model(sft, tokenizer, train_pairs, norm_prompts: Sequence[str],
                       config: RewardTrainConfig | None = None, seed: int = 0, norm_seed: int = 0,
                       max_new_tokens: int = 48, temperature: float = 1.0,
                       evaluate_fn: Callable | None = None):
    """The recipe: a reward model started from the SFT trunk, trained on the pairs, normalised over SFT samples.

    ``torch.manual_seed(seed)``, ``init_reward_model(sft)``, ``train_reward_model``; then
    ``evaluate_fn(rm) -> dict`` when given (its figures join the stats); then ``reward_mean`` / ``reward_std``
    over one sampled SFT completion (``max_new_tokens``, ``temperature``, seeded with ``norm_seed``) of each of
    ``norm_prompts``. ``python -m textenv.default.build`` and ``examples/rlhf_ppo.py --train-reward-model`` both
    run this. Returns ``(reward_model, stats)``: the training losses, ``parameters``, the evaluation, the
    normalisation.
    """
    from textenv.default.sft import generate_completions

    torch.manual_seed(seed)
    rm = init_reward_model(sft, tokenizer)
    stats = train_reward_model(rm, tokenizer, train_pairs, config if config is not None else RewardTrainConfig())
    stats["parameters"] = sum(p.numel() for p in rm.parameters())
    if evaluate_fn is not None:
        stats.update(evaluate_fn(rm))
    completions = [g[0] for g in generate_completions(sft, tokenizer, list(norm_prompts), 1,
                                                      max_new_tokens=max_new_tokens, temperature=temperature,
                                                      seed=norm_seed)]
    stats.update(set_normalization(rm, score_texts(rm, tokenizer, list(norm_prompts), completions)))
    return rm, stats
