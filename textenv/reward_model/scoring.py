"""Scoring: how a reward model reads a (prompt, completion), and ``score_texts``, the one scoring function.

Training (``train_reward_model``, through its two halves ``reward_inputs`` and ``reward_logits``), evaluation
(``pairwise_accuracy``, ``evaluate_reward_model``), normalisation and the environment (``textenv.text.rewards.ModelReward``,
which TextGen-v0 pays its reward with) all call it, so a reward model is served exactly as it was trained:

- join: the text is ``prompt + completion``, verbatim (``reward_text``). The env's completion is the exact
  continuation of the prompt's text (decoded together with the prompt, then cut after it), so it carries its
  own leading space (" great."), or none where the policy continues a word the prompt cut ("CUR" + "IOUS");
  no space is guessed and no whitespace is changed (chat-formatted reward models read newlines). Preference
  data follow the same convention: completions keep their leading space (``textenv.preferences``).
- truncation: a text longer than the model's limit keeps its LAST tokens (the tokenizer's special tokens
  kept): the score is read at the last token, and the end is the completion being judged; the start of a
  long prompt matters least (the env cuts prompts from the left for the same reason). The limit
  (``max_reward_tokens``) is the smallest of the model's positions, the tokenizer's ``model_max_length`` and
  ``config.reward_max_length`` (written by ``train_reward_model`` when it trained on shorter texts than that).
- padding: on the right, with ``config.pad_token_id`` (set to the tokenizer's pad token, else its EOS, when
  the config has none), whatever the tokenizer's own ``padding_side``: GPT-2 and Llama take position ids
  0..T-1 whatever the mask, so right padding gives every real token its true position, and the rightmost
  non-pad token is the last real one. With pad = EOS that holds as long as a text does not end in EOS (texts
  are decoded without special tokens); a tokenizer with neither is scored one text at a time.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

MAX_SANE_TOKENIZER_LENGTH = 10**6
"""A tokenizer ``model_max_length`` above this is transformers' "no limit" sentinel (about 1e30), not a limit."""


def reward_text(prompt: str, completion: str) -> str:
    """The text a reward model reads: ``prompt + completion``, verbatim (see the module docstring)."""
    return prompt + completion


def _positions(model) -> int | None:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def max_reward_tokens(model, tokenizer=None, max_length: int | None = None) -> int | None:
    """The longest token sequence the reward model reads (None: no limit known): the smallest of ``max_length``,
    ``config.reward_max_length``, the model's positions and the tokenizer's ``model_max_length``."""
    limits = [max_length, getattr(model.config, "reward_max_length", None), _positions(model)]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and tok_max < MAX_SANE_TOKENIZER_LENGTH:
        limits.append(tok_max)
    limits = [int(x) for x in limits if x is not None]
    return min(limits) if limits else None


def reward_pad_id(model, tokenizer) -> int | None:
    """The id batches are padded with: ``config.pad_token_id``, else the tokenizer's pad, else its EOS (written
    into ``config.pad_token_id``, through which sequence classifiers find each row's last real token)."""
    config = model.config
    pad = getattr(config, "pad_token_id", None)
    if pad is None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if isinstance(pad, (list, tuple)):
            pad = pad[0] if pad else None
        if pad is not None:
            config.pad_token_id = int(pad)
    return None if pad is None else int(pad)


def encode(tokenizer, prompts: Sequence[str], completions: Sequence[str], max_length: int | None = None,
           pad_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask`` (B, T) of ``reward_text(prompt, completion)``, each
    text cut to its last ``max_length`` tokens (None: not cut). ``pad_id``: the tokenizer's pad, else its EOS."""
    if len(prompts) != len(completions):
        raise ValueError(f"need one completion per prompt, got {len(prompts)} prompts and "
                         f"{len(completions)} completions")
    texts = [reward_text(p, c) for p, c in zip(prompts, completions)]
    if pad_id is None:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sides = tokenizer.truncation_side, tokenizer.padding_side
    # Keep the end: the score is read at the last token. (Set here: the call ignores these as arguments.) The
    # tokenizer pads too when it can, on the right, so its saved state is what it always was; the ids at the
    # padding are then written with pad_id below, the id the classifier looks for.
    tokenizer.truncation_side, tokenizer.padding_side = "left", "right"
    try:
        enc = tokenizer(texts, padding=tokenizer.pad_token_id is not None, truncation=max_length is not None,
                        max_length=max_length)
    finally:
        tokenizer.truncation_side, tokenizer.padding_side = sides
    rows = [r[:sum(m)] for r, m in zip(enc["input_ids"], enc["attention_mask"])]
    width = max((len(r) for r in rows), default=0)
    if pad_id is None and len(set(map(len, rows))) > 1:
        raise ValueError("the reward model's tokenizer has neither a pad nor an eos token: score texts of different "
                         "lengths one at a time, or set tokenizer.pad_token")
    ids = torch.full((len(rows), width), 0 if pad_id is None else int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask


def _device(model) -> torch.device:
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def reward_inputs(model, tokenizer, prompts: Sequence[str], completions: Sequence[str],
                  max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``encode`` with the model's limit (``max_reward_tokens``) and pad id (``reward_pad_id``), on its device."""
    ids, mask = encode(tokenizer, prompts, completions, max_reward_tokens(model, tokenizer, max_length),
                       reward_pad_id(model, tokenizer))
    device = _device(model)
    return ids.to(device), mask.to(device)


def reward_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, label: int = 0) -> torch.Tensor:
    """The score of each row: logit ``label`` at its last real token (a classifier's own pooling), (B,)."""
    return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, label]


def score_texts(model, tokenizer, prompts: Sequence[str], completions: Sequence[str],
                batch_size: int = 256, max_length: int | None = None, label: int = 0) -> np.ndarray:
    """Raw reward of each (prompt, completion), float64 (B,). See ``normalize_scores`` for the scale.

    The one scoring function (module docstring): ``prompt + completion`` verbatim, cut to its last
    ``max_reward_tokens`` tokens, right-padded with ``config.pad_token_id``, logit ``label``.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"need one completion per prompt, got {len(prompts)} prompts and "
                         f"{len(completions)} completions")
    prompts, completions = list(prompts), list(completions)
    if reward_pad_id(model, tokenizer) is None:
        batch_size = 1  # nothing to pad with: one text at a time (the classifier then reads the last position)
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            ids, mask = reward_inputs(model, tokenizer, prompts[i: i + batch_size], completions[i: i + batch_size],
                                      max_length)
            out.append(reward_logits(model, ids, mask, label).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)
