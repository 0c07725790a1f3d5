"""Reward specs -> ``RewardFn``: ``(prompts: list[str], completions: list[str]) -> np.ndarray (B,)`` of finite floats.

A spec is one of:

- a Python callable ``(prompts, completions) -> scores`` (list, array or tensor of B numbers);
- a sequence-classification model (``AutoModelForSequenceClassification``, any architecture) with one label:
  the score is ``logits[:, 0]`` of ``prompt + completion`` (lecture slides, "Reward model architecture": a
  linear layer with one output on the hidden state of the last token);
- a classifier with several labels and ``label=k`` (an index or a name from ``config.label2id``; the env's
  ``reward_label``): the chosen class logit is the reward (e.g. the "positive" logit of a sentiment
  classifier, label 1 of ``lvwerra/distilbert-imdb``). Without ``label``, ``config.reward_label`` when the
  model was normalised for one logit;
- a str or Path: a name or directory loaded with ``AutoModelForSequenceClassification.from_pretrained``
  and ``AutoTokenizer.from_pretrained`` from the same place.

A model is read by ``textenv.reward_model.score_texts``, the function it is trained and evaluated with (one
join rule: ``prompt + completion`` verbatim; one truncation rule: a text too long for the model keeps its
last tokens; right padding with ``config.pad_token_id``), so the env serves a reward model exactly as it
was trained. When the model's config carries ``reward_mean`` and ``reward_std`` (written when the reward
model was trained, or by ``python -m textenv.reward_model normalize``) and ``normalize=True``, scores are
``(raw - reward_mean) / reward_std``.

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

from rlcore.checks import is_int, short

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

    Args:
        spec: callable, sequence-classification ``nn.Module``, or a name/path of one.
        tokenizer: the reward model's tokenizer (models only). Loaded from the spec's path when omitted.
        device: where a reward model runs (a model passed as a module stays where it is).
        label: which output logit is the score for a classifier with several labels.
        normalize: apply ``config.reward_mean`` / ``config.reward_std`` when present.
        batch_size: texts per reward-model forward.
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


def resolve_label(config, label: int | str | None) -> int:
    """The index of the logit that is the score: ``label`` (an index, or a name from ``config.label2id``), else
    ``config.reward_label`` (written when the model was normalised for one logit), else 0 for a one-label model."""
    num_labels = int(getattr(config, "num_labels", 1))
    if label is not None and not isinstance(label, str) and not is_int(label):
        raise TypeError(f"reward_label must be None, a label index (int) or a label name (str), got {short(label)}")
    if isinstance(label, str):
        label2id = getattr(config, "label2id", None) or {}
        if label not in label2id:
            raise ValueError(f"label {label!r} is not one of the reward model's labels {sorted(label2id)}")
        label = int(label2id[label])
    if label is None:
        label = getattr(config, "reward_label", None)
    if label is None:
        if num_labels != 1:
            raise ValueError(
                f"the reward model has {num_labels} labels; pass label= (an index or one of "
                f"{sorted((getattr(config, 'label2id', None) or {}))}) to choose which logit is the reward"
            )
        label = 0
    if not 0 <= label < num_labels:
        raise ValueError(f"label={label} is out of range for a reward model with {num_labels} labels")
    return int(label)


class ModelReward:
    """Scores ``(prompt, completion)`` with a sequence-classification model: ``textenv.reward_model.score_texts``,
    the function the reward model was trained and evaluated with (``prompt + completion`` verbatim, cut to its
    last tokens when too long, right-padded with ``config.pad_token_id``), then normalised."""

    def __init__(self, model: torch.nn.Module, tokenizer, label: int | str | None = None, normalize: bool = True,
                 batch_size: int = 64) -> None:
        from textenv.reward_model import reward_pad_id

        config = model.config
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.label = resolve_label(config, label)
        source = getattr(model, "name_or_path", "") or getattr(config, "_name_or_path", "")
        self.name = f"ModelReward({source or type(model).__name__})"  # how errors name this reward
        reward_pad_id(model, tokenizer)  # sets config.pad_token_id when unset: classifiers find the last token by it

        mean, std = getattr(config, "reward_mean", None), getattr(config, "reward_std", None)
        if normalize and mean is not None and std is not None:
            if not (np.isfinite(std) and std > 0):
                raise ValueError(f"the reward model's config has reward_std={std}; it must be a finite number > 0")
            normalized_label = getattr(config, "reward_label", None)
            if normalized_label is not None and int(normalized_label) != self.label:
                raise ValueError(
                    f"the reward model's reward_mean / reward_std describe label {normalized_label}, not label "
                    f"{self.label}; pass normalize_reward=False, or normalise it for that label "
                    f"(python -m textenv.reward_model normalize --label {self.label} ...)"
                )
            self.shift, self.scale = float(mean), float(std)
        else:
            self.shift, self.scale = 0.0, 1.0

    def __call__(self, prompts: list[str], completions: list[str]) -> np.ndarray:
        from textenv.reward_model import score_texts

        raw = score_texts(self.model, self.tokenizer, prompts, completions, batch_size=self.batch_size, label=self.label)
        return (raw - self.shift) / self.scale
