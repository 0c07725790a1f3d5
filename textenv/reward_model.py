"""Reward model: a transformer trunk and a one-output linear head, trained on preference pairs.

The model is transformers' ``GPT2ForSequenceClassification`` with ``num_labels=1``: the trunk's hidden
state at the last non-padding token goes through ``Linear(n_embd, 1)`` (the lecture's "reward model
architecture" slide). transformers finds that token as the rightmost one that is not ``pad_token_id``,
so ``config.pad_token_id`` must be set, and the pad token must differ from eos. GPT-2 does not derive
position ids from the attention mask, so score with RIGHT padding (the tokenizer saved beside a reward
model pads on the right), or pass ``position_ids = attention_mask.cumsum(-1) - 1`` yourself.

Loss (lecture slides, "Reward model loss"; InstructGPT; Llama 2 adds the margin):

    loss = mean( -log sigmoid( r(x, y_chosen) - r(x, y_rejected) - margin ) )

Normalisation: the raw score has an arbitrary offset and scale (the loss sees only differences), so after
training we store the mean and standard deviation of the raw score over the SFT model's own samples in
the model config as ``reward_mean`` and ``reward_std`` (plain config attributes, saved by
``save_pretrained``). Scorers apply ``(raw - reward_mean) / reward_std`` when these attributes exist
(``normalize_scores``; ``textenv.text.rewards`` does the same), so the SFT policy starts at reward ~0 with
unit spread.

Run: ``python -m textenv.default.build`` trains the shipped one; ``train_reward_model`` trains any.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from textenv.preferences import join_text


def pairwise_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                  margin: torch.Tensor | float | None = None) -> torch.Tensor:
    """Mean of ``-logsigmoid(chosen - rejected - margin)`` over the batch (shapes (B,)); a scalar.

    Small when the chosen completion out-scores the rejected one by more than ``margin``, large when
    the order is wrong. ``logsigmoid`` rather than ``log(sigmoid(.))`` keeps it finite for big gaps.
    """
    if chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(f"chosen and rejected rewards must have the same shape, got "
                         f"{tuple(chosen_rewards.shape)} and {tuple(rejected_rewards.shape)}")
    diff = chosen_rewards - rejected_rewards
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()


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
    max_length: int = 64
    """Longest scored sequence in tokens; longer ones keep their last ``max_length`` tokens."""
    seed: int = 0
    """Seeds the pair order."""


def init_reward_model(lm, tokenizer):
    """A ``GPT2ForSequenceClassification`` (one output) whose trunk is a copy of ``lm``'s.

    :param lm: a ``GPT2LMHeadModel`` or a directory holding one (the SFT model).
    :param tokenizer: its tokenizer; its pad token becomes ``config.pad_token_id``.
    """
    from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

    if isinstance(lm, (str, Path)):
        lm = GPT2LMHeadModel.from_pretrained(lm)
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise ValueError(f"the reward model reads the last non-pad token, so it needs a pad token distinct "
                         f"from eos; got pad_token_id={tokenizer.pad_token_id}, eos={tokenizer.eos_token_id}")
    config = lm.config.__class__.from_dict(lm.config.to_dict())
    config.num_labels = 1
    config.pad_token_id = tokenizer.pad_token_id
    model = GPT2ForSequenceClassification(config)  # the score head gets GPT-2's N(0, 0.02) init
    model.transformer.load_state_dict(lm.transformer.state_dict())
    return model


def encode(tokenizer, prompts: Sequence[str], completions: Sequence[str], max_length: int = 64):
    """Right-padded ``input_ids`` and ``attention_mask`` (B, T) of ``join_text(prompt, completion)``."""
    texts = [join_text(p, c) for p, c in zip(prompts, completions)]
    sides = tokenizer.padding_side, tokenizer.truncation_side
    # Right padding: GPT-2 takes position ids 0..T-1 whatever the mask. Left truncation: the reward is
    # read at the last token, so that one must survive. (Set here: the call ignores these as arguments.)
    tokenizer.padding_side, tokenizer.truncation_side = "right", "left"
    try:
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = sides
    return enc["input_ids"], enc["attention_mask"]


def _rewards(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0]  # (B,)


def score_texts(model, tokenizer, prompts: Sequence[str], completions: Sequence[str],
                batch_size: int = 256, max_length: int = 64) -> np.ndarray:
    """Raw reward of each (prompt, completion), float64 (B,). See ``normalize_scores`` for the scale."""
    if len(prompts) != len(completions):
        raise ValueError(f"need one completion per prompt, got {len(prompts)} prompts and "
                         f"{len(completions)} completions")
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            ids, mask = encode(tokenizer, prompts[i: i + batch_size], completions[i: i + batch_size],
                               max_length)
            out.append(_rewards(model, ids, mask).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def normalize_scores(raw: np.ndarray, config) -> np.ndarray:
    """``(raw - reward_mean) / reward_std`` when ``config`` has both attributes, else ``raw``."""
    mean, std = getattr(config, "reward_mean", None), getattr(config, "reward_std", None)
    if mean is None or std is None:
        return raw
    return (raw - mean) / std


def set_normalization(model, raw_scores: np.ndarray) -> dict[str, float]:
    """Store the mean and std of ``raw_scores`` (the SFT model's samples) as ``reward_mean`` / ``reward_std``."""
    if len(raw_scores) < 2:
        raise ValueError(f"normalisation needs at least 2 scores, got {len(raw_scores)}")
    model.config.reward_mean = float(np.mean(raw_scores))
    model.config.reward_std = float(max(np.std(raw_scores), 1e-6))  # a constant scorer must not divide by 0
    return {"reward_mean": model.config.reward_mean, "reward_std": model.config.reward_std}


def train_reward_model(model, tokenizer, pairs, config: RewardTrainConfig) -> dict[str, float]:
    """Train ``model`` in place on preference ``pairs`` (prompt, chosen, rejected[, margin]).

    Returns {"loss_first", "loss_last", "accuracy_last"} (means over the first / last 20 steps).
    """
    if len(pairs) == 0:
        raise ValueError("train_reward_model needs at least one preference pair, got an empty dataset")
    if config.use_margin and "margin" not in pairs.column_names:
        raise ValueError(f"use_margin=True needs a margin column, got columns {pairs.column_names}")
    prompts, chosen, rejected = pairs["prompt"], pairs["chosen"], pairs["rejected"]
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
            ids, mask = encode(tokenizer, mb_prompts, mb_completions, config.max_length)  # (2B, T)
            r_chosen, r_rejected = _rewards(model, ids, mask).split(len(mb))  # one forward: (B,), (B,)
            loss = pairwise_loss(r_chosen, r_rejected, None if margins is None else margins[mb])
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


def pairwise_accuracy(model, tokenizer, pairs, max_length: int = 64) -> float:
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


def evaluate(model, tokenizer, pairs=None, prompts: Sequence[str] | None = None,
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


def save_reward_model(model, tokenizer, path: str | Path) -> Path:
    """``save_pretrained`` the model (safetensors) and the tokenizer beside it, set to pad on the right."""
    path = Path(path)
    model.save_pretrained(path)
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"  # what the sequence-classification head's position ids expect
    try:
        tokenizer.save_pretrained(path)
    finally:
        tokenizer.padding_side = side
    return path


def load_reward_model(path: str | Path):
    """(model, tokenizer) from a directory written by ``save_reward_model``; the model in eval mode."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(path)
    return model.eval(), AutoTokenizer.from_pretrained(path)
