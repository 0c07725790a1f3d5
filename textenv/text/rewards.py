"""Reward specs -> ``RewardFn``: ``(prompts: list[str], completions: list[str]) -> np.ndarray (B,)`` of finite floats.

A spec is one of:

- a Python callable ``(prompts, completions) -> scores`` (list, array or tensor of B numbers);
- a sequence-classification model (``AutoModelForSequenceClassification``) with one label: the score is
  ``logits[:, 0]`` of ``prompt + completion`` (lecture slides, "Reward model architecture": a linear layer
  with one output on the hidden state of the last token);
- a classifier with several labels and ``label=k`` (an index or a name from ``config.label2id``): the
  chosen class logit is the reward (e.g. the "positive" logit of a sentiment classifier);
- a str or Path: a name or directory loaded with ``AutoModelForSequenceClassification.from_pretrained``
  and ``AutoTokenizer.from_pretrained`` from the same place.

When the model's config carries ``reward_mean`` and ``reward_std`` (written when the reward model was
trained) and ``normalize=True``, scores are ``(raw - reward_mean) / reward_std``.

Every RewardFn made here checks what it returns: one finite float per sample, or a ValueError that says
which sample (index and text) or which shape was wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

RewardFn = Callable[[list[str], list[str]], np.ndarray]


def make_reward_fn(
    spec,
    tokenizer=None,
    device: str | torch.device = "cpu",
    label: int | str | None = None,
    normalize: bool = True,
    batch_size: int = 64,
) -> RewardFn:
    """Build a checked ``RewardFn`` from a spec (see the module docstring).

    :param spec: callable, sequence-classification ``nn.Module``, or a name/path of one.
    :param tokenizer: the reward model's tokenizer (models only). Loaded from the spec's path when omitted.
    :param device: where a reward model runs (a model passed as a module stays where it is).
    :param label: which output logit is the score for a classifier with several labels.
    :param normalize: apply ``config.reward_mean`` / ``config.reward_std`` when present.
    :param batch_size: texts per reward-model forward.
    """
    if isinstance(spec, (str, Path)):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from textenv.text.loading import quiet_loading

        with quiet_loading():
            model = AutoModelForSequenceClassification.from_pretrained(str(spec)).to(device).eval()
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(str(spec))
        return CheckedReward(ModelReward(model, tokenizer, label=label, normalize=normalize, batch_size=batch_size))
    if isinstance(spec, torch.nn.Module):
        if tokenizer is None:
            name = getattr(spec, "name_or_path", "") or getattr(getattr(spec, "config", None), "_name_or_path", "")
            if not name:
                raise ValueError("a reward model passed as a module needs tokenizer= (its name_or_path is unknown)")
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(name)
        return CheckedReward(ModelReward(spec, tokenizer, label=label, normalize=normalize, batch_size=batch_size))
    if callable(spec):
        if isinstance(spec, CheckedReward):
            return spec
        return CheckedReward(spec)
    raise TypeError(
        f"reward spec must be a callable (prompts, completions) -> scores, a sequence-classification model, "
        f"or its name/path; got {type(spec).__name__}"
    )


class CheckedReward:
    """Wraps a RewardFn so its output is always a finite float64 array of shape (B,)."""

    def __init__(self, fn: RewardFn) -> None:
        self.fn = fn

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        prompts, completions = list(prompts), list(completions)
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        raw = self.fn(prompts, completions)
        if torch.is_tensor(raw):
            raw = raw.detach().float().cpu().numpy()
        scores = np.asarray(raw, dtype=np.float64)
        batch = len(completions)
        if scores.shape != (batch,):
            raise ValueError(
                f"reward function returned shape {scores.shape}; expected ({batch},): one score per (prompt, completion)"
            )
        bad = np.flatnonzero(~np.isfinite(scores))
        if len(bad):
            i = int(bad[0])
            raise ValueError(
                f"reward function returned {scores[i]} for sample {i} (prompt={prompts[i]!r}, completion={completions[i]!r}); "
                f"scores must be finite ({len(bad)} non-finite in this batch of {batch})"
            )
        return scores


class ModelReward:
    """Scores ``prompt + completion`` with a sequence-classification model, in batches."""

    def __init__(self, model: torch.nn.Module, tokenizer, label: int | str | None = None, normalize: bool = True,
                 batch_size: int = 64) -> None:
        config = model.config
        num_labels = int(getattr(config, "num_labels", 1))
        if isinstance(label, str):
            label2id = getattr(config, "label2id", None) or {}
            if label not in label2id:
                raise ValueError(f"label {label!r} is not one of the reward model's labels {sorted(label2id)}")
            label = int(label2id[label])
        if label is None:
            if num_labels != 1:
                raise ValueError(
                    f"the reward model has {num_labels} labels; pass label= (an index or one of "
                    f"{sorted((getattr(config, 'label2id', None) or {}))}) to choose which logit is the reward"
                )
            label = 0
        if not 0 <= label < num_labels:
            raise ValueError(f"label={label} is out of range for a reward model with {num_labels} labels")
        self.model, self.tokenizer, self.label, self.batch_size = model, tokenizer, label, batch_size
        params = list(model.parameters())
        self.device = params[0].device if params else torch.device("cpu")

        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise ValueError("the reward model's tokenizer has neither a pad nor an eos token to pad batches with")
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(config, "pad_token_id", None) is None:
            # Sequence classifiers find each row's last real token through config.pad_token_id.
            config.pad_token_id = tokenizer.pad_token_id

        mean, std = getattr(config, "reward_mean", None), getattr(config, "reward_std", None)
        if normalize and mean is not None and std is not None:
            if not (np.isfinite(std) and std > 0):
                raise ValueError(f"the reward model's config has reward_std={std}; it must be a finite number > 0")
            self.shift, self.scale = float(mean), float(std)
        else:
            self.shift, self.scale = 0.0, 1.0
        self.max_length = getattr(config, "max_position_embeddings", None)

    @torch.no_grad()
    def __call__(self, prompts: list[str], completions: list[str]) -> np.ndarray:
        texts = [p + c for p, c in zip(prompts, completions)]
        scores = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=self.max_length is not None,
                                 max_length=self.max_length, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            logits = self.model(**enc).logits  # (b, num_labels)
            scores.append(logits[:, self.label].float().cpu())
        raw = torch.cat(scores).numpy().astype(np.float64) if scores else np.zeros(0)
        return (raw - self.shift) / self.scale
