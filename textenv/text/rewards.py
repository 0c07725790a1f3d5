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

Every RewardFn made here checks what it returns: one finite real number per sample, or an error that
names the reward function and says which sample (index and text), shape or type was wrong. An exception
the function raises itself becomes a RuntimeError that names the function (the original is its cause).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from textenv.checks import is_int, short

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
    """Wraps a RewardFn so its output is always a finite float64 array of shape (B,).

    Anything else is an error that names the reward function and what it returned; an exception the
    function raises itself comes out as a RuntimeError that names it (the original is its ``__cause__``).
    """

    def __init__(self, fn: RewardFn) -> None:
        self.fn = fn
        self.name = getattr(fn, "name", None) or getattr(fn, "__qualname__", None) or type(fn).__qualname__

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        prompts, completions = list(prompts), list(completions)
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        try:
            raw = self.fn(prompts, completions)
        except Exception as e:  # the user's code: say whose error it is
            raise RuntimeError(f"the reward function {self.name} raised {type(e).__name__}: {e}") from e
        scores = self._as_scores(raw, len(completions))
        bad = np.flatnonzero(~np.isfinite(scores))
        if len(bad):
            i = int(bad[0])
            raise ValueError(
                f"the reward function {self.name} returned {scores[i]} for sample {i} (prompt={prompts[i]!r}, "
                f"completion={completions[i]!r}); scores must be finite ({len(bad)} non-finite in this batch of {len(scores)})"
            )
        return scores

    def _as_scores(self, raw, batch: int) -> np.ndarray:
        """``raw`` -> float64 ``(batch,)``, refusing what is not real numbers (strings, None, complex, bool)."""
        expected = f"expected {batch} real numbers (int or float), one per (prompt, completion)"
        if torch.is_tensor(raw):
            if raw.is_complex() or raw.dtype == torch.bool:
                raise TypeError(f"the reward function {self.name} returned a {raw.dtype} tensor; {expected}")
            raw = raw.detach().float().cpu().numpy()
        try:
            kinds = np.asarray(raw)
        except (TypeError, ValueError) as e:  # ragged lists
            raise ValueError(f"the reward function {self.name} returned {short(raw)}, not an array ({e}); {expected}") from None
        if kinds.dtype == object:
            bad = [f"holding {type(x).__name__} {short(x)}" for x in kinds.ravel()
                   if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real)]
        else:
            bad = [] if kinds.dtype.kind in "iuf" else [f"of dtype {kinds.dtype}"]
        if bad:
            raise TypeError(f"the reward function {self.name} returned {short(raw)} ({bad[0]}); {expected}")
        scores = np.asarray(raw, dtype=np.float64)
        if scores.shape != (batch,):
            raise ValueError(
                f"the reward function {self.name} returned shape {scores.shape}; expected ({batch},): "
                f"one score per (prompt, completion)"
            )
        return scores


class ModelReward:
    """Scores ``prompt + completion`` with a sequence-classification model, in batches."""

    def __init__(self, model: torch.nn.Module, tokenizer, label: int | str | None = None, normalize: bool = True,
                 batch_size: int = 64) -> None:
        config = model.config
        num_labels = int(getattr(config, "num_labels", 1))
        if label is not None and not isinstance(label, str) and not is_int(label):
            raise TypeError(f"reward_label must be None, a label index (int) or a label name (str), got {short(label)}")
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
        self.model, self.tokenizer, self.label, self.batch_size = model, tokenizer, int(label), batch_size
        source = getattr(model, "name_or_path", "") or getattr(config, "_name_or_path", "")
        self.name = f"ModelReward({source or type(model).__name__})"  # how errors name this reward
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
