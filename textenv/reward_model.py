"""Reward model: a transformer trunk and a one-output linear head, trained on preference pairs.

The model is any ``AutoModelForSequenceClassification`` (GPT-2, Llama, Qwen, ... ``init_reward_model`` starts
one from a causal LM's trunk) with ``num_labels=1``: the trunk's hidden state at the last non-padding token
goes through ``Linear(hidden, 1)`` (the lecture's "reward model architecture" slide). transformers finds that
token as the rightmost one that is not ``config.pad_token_id``, so that id must be set.

How a (prompt, completion) is read: ``score_texts`` is the one scoring function. Training
(``train_reward_model``, through its two halves ``reward_inputs`` and ``reward_logits``), evaluation
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

Loss (lecture slides, "Reward model loss"; InstructGPT; Llama 2 adds the margin):

    loss = mean( -log sigmoid( r(x, y_chosen) - r(x, y_rejected) - margin ) )

Normalisation: the raw score has an arbitrary offset and scale (the loss sees only differences), so we store
the mean and standard deviation of the raw score over the SFT model's own samples in the model config as
``reward_mean`` and ``reward_std`` (plain config attributes, saved by ``save_pretrained``). Scorers apply
``(raw - reward_mean) / reward_std`` when these attributes exist (``normalize_scores``;
``textenv.text.rewards`` does the same), so the SFT policy starts at reward ~0 with unit spread. For a
reward model of your own (any sequence classifier, e.g. a sentiment model's "positive" logit)::

    python -m textenv.reward_model normalize --reward path/to/rm --model path/to/sft --prompts prompts.jsonl
    python -m textenv.reward_model normalize --reward lvwerra/distilbert-imdb --label 1 --model gpt2 \\
        --prompts stanfordnlp/imdb:train --out my-rm

or ``normalize_reward_model(...)`` from Python: it samples the SFT model's completions with TextGen-v0 itself
(the prompts cut as the env cuts them, the env's sampling and decoding), scores them with ``score_texts``,
and writes ``reward_mean`` / ``reward_std`` (and ``reward_label`` for a classifier) into the model's config.json.

Run: ``python -m textenv.default.build`` trains the shipped one (``build_reward_model``, the recipe the
example's ``--train-reward-model`` runs too); ``train_reward_model`` trains any.
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

MAX_SANE_TOKENIZER_LENGTH = 10**6
"""A tokenizer ``model_max_length`` above this is transformers' "no limit" sentinel (about 1e30), not a limit."""


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
    max_length: int | None = 64
    """Longest scored sequence in tokens (None: the model's own limit); longer ones keep their last tokens.
    When it is below the model's own limit it is saved as ``config.reward_max_length``, so the env scores
    with the length the model was trained on."""
    seed: int = 0
    """Seeds the pair order."""


# ---- reading a (prompt, completion): the one scoring function ------------------------------------------


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


# ---- the model -----------------------------------------------------------------------------------------


def init_reward_model(lm, tokenizer=None):
    """An ``AutoModelForSequenceClassification`` (one output) whose trunk is a copy of ``lm``'s.

    Any architecture transformers has a sequence-classification class for (GPT-2, Llama, Qwen, Mistral, ...):
    the config is the LM's own, with ``num_labels=1`` and ``pad_token_id`` set; the head gets the class's own
    initialisation, the trunk (``base_model``) the LM's weights.

    :param lm: a causal LM module or a name/directory holding one (the SFT model).
    :param tokenizer: its tokenizer: ``config.pad_token_id`` becomes its pad token, else its EOS (batches are
        padded on the right, so the last real token is found either way; see the module docstring).
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if isinstance(lm, (str, Path)):
        lm = AutoModelForCausalLM.from_pretrained(str(lm))
    config = lm.config.__class__.from_dict(lm.config.to_dict())
    config.num_labels = 1
    pad = None
    if tokenizer is not None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        pad = getattr(config, "pad_token_id", None)
        if pad is None:
            pad = getattr(config, "eos_token_id", None)
    if isinstance(pad, (list, tuple)):
        pad = pad[0] if pad else None
    config.pad_token_id = None if pad is None else int(pad)
    model = AutoModelForSequenceClassification.from_config(config)  # the head gets the class's own init
    model.base_model.load_state_dict(lm.base_model.state_dict())
    return model


# ---- normalisation ---------------------------------------------------------------------------------------


def normalize_scores(raw: np.ndarray, config) -> np.ndarray:
    """``(raw - reward_mean) / reward_std`` when ``config`` has both attributes, else ``raw``."""
    mean, std = getattr(config, "reward_mean", None), getattr(config, "reward_std", None)
    if mean is None or std is None:
        return raw
    return (raw - mean) / std


def set_normalization(model, raw_scores: np.ndarray, label: int | None = None) -> dict[str, float]:
    """Store the mean and std of ``raw_scores`` (the SFT model's samples) as ``reward_mean`` / ``reward_std``
    (and ``reward_label``, the logit they describe, when ``label`` is given)."""
    if len(raw_scores) < 2:
        raise ValueError(f"normalisation needs at least 2 scores, got {len(raw_scores)}")
    model.config.reward_mean = float(np.mean(raw_scores))
    model.config.reward_std = float(max(np.std(raw_scores), 1e-6))  # a constant scorer must not divide by 0
    out = {"reward_mean": model.config.reward_mean, "reward_std": model.config.reward_std}
    if label is not None:
        model.config.reward_label = out["reward_label"] = int(label)
    return out


def sample_completions(model, prompts: Sequence[str], n: int, *, tokenizer=None, max_new_tokens: int = 24,
                       max_prompt_tokens: int = 12, temperature: float = 1.0, stop_at_eos: bool = True,
                       seed: int = 0, device: str | torch.device = "auto",
                       batch_size: int = 64) -> tuple[list[str], list[str]]:
    """``n`` (prompt, completion) pairs sampled from ``model`` by TextGen-v0 itself: the prompts (cycled through a
    seeded shuffle of ``prompts``) cut as the env cuts them, its sampling distribution and its decoding, so the
    texts are the ones the env's reward will read when PPO starts from ``model``."""
    from textenv.text.decoding import IncrementalLM
    from rlcore.device import resolve_device
    from textenv.text.loading import load_causal_lm, load_prompts, load_tokenizer
    from textenv.text.vector import TextGenVectorEnv

    prompts = load_prompts(prompts)
    dev = resolve_device(device, model if isinstance(model, torch.nn.Module) else None)
    tokenizer = load_tokenizer(tokenizer, model)
    lm = load_causal_lm(model, dev)
    runner = IncrementalLM(lm)
    rng = np.random.default_rng(seed)
    order: list[str] = []
    while len(order) < n:
        order += [prompts[i] for i in rng.permutation(len(prompts))]
    order = order[:n]
    generator = torch.Generator(runner.device).manual_seed(seed)
    out_prompts, out_completions = [], []
    for start in range(0, n, batch_size):
        chunk = order[start: start + batch_size]
        env = TextGenVectorEnv(num_envs=len(chunk), model=lm, tokenizer=tokenizer, prompts=prompts, policy=runner,
                               reward=lambda p, c: np.zeros(len(c)), max_new_tokens=max_new_tokens,
                               max_prompt_tokens=max_prompt_tokens, temperature=temperature, stop_at_eos=stop_at_eos,
                               kl_coef=0.0, device=dev, prompt_cache_mb=0.0)
        try:
            obs, _ = env.reset(seed=seed + start, options={"prompts": chunk})
            done = np.zeros(len(chunk), dtype=bool)
            texts, used = [""] * len(chunk), [""] * len(chunk)
            while not done.all():
                ids = torch.as_tensor(obs["input_ids"], device=runner.device)
                mask = torch.as_tensor(obs["attention_mask"], device=runner.device)
                probs = torch.softmax(env.sampling.sampling_logits(runner.next_token_logits(ids, mask)).float(), -1)
                actions = torch.multinomial(probs, 1, generator=generator)[:, 0].cpu().numpy()
                obs, _, terminated, truncated, info = env.step(actions)
                for i in np.flatnonzero((terminated | truncated) & ~done):
                    texts[i], used[i] = info["final_info"]["completion"][i], info["final_info"]["prompt"][i]
                done |= terminated | truncated
        finally:
            env.close()
        out_prompts += used
        out_completions += texts
    return out_prompts, out_completions


def normalize_reward_model(reward, model, prompts, *, label: int | str | None = None, n_samples: int = 1000,
                           max_new_tokens: int = 24, max_prompt_tokens: int = 12, temperature: float = 1.0,
                           seed: int = 0, device: str = "auto", out: str | Path | None = None,
                           tokenizer=None, reward_tokenizer=None) -> dict[str, float]:
    """Compute and save the normalisation of any reward model over ``model``'s (the SFT policy's) own samples.

    :param reward: the reward model's directory or Hub name (or a module, with ``reward_tokenizer``).
    :param model: the SFT causal LM (name, path or module) whose samples define "reward 0, spread 1".
    :param prompts: the training prompts (anything ``textenv.text.loading.load_prompts`` reads).
    :param label: the classifier logit that is the reward (an index or a name in ``config.label2id``); saved as
        ``reward_label``, which the env then uses by default.
    :param out: where to write; None: the reward model's own directory (only its config.json changes). A Hub
        name needs ``out`` (the model and tokenizer are saved there with the new config).
    :returns: ``{"reward_mean", "reward_std"(, "reward_label")}``, as written.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from rlcore.device import resolve_device
    from textenv.text.loading import quiet_loading
    from textenv.text.rewards import resolve_label

    dev = resolve_device(device)
    if isinstance(reward, torch.nn.Module):
        rm, rm_tok = reward, reward_tokenizer
        if out is None:
            raise ValueError("a reward model passed as a module needs out= (a directory to save it to)")
    else:
        with quiet_loading():
            rm = AutoModelForSequenceClassification.from_pretrained(str(reward)).to(dev).eval()
        rm_tok = reward_tokenizer if reward_tokenizer is not None else AutoTokenizer.from_pretrained(str(reward))
    index = resolve_label(rm.config, label)
    p, c = sample_completions(model, prompts, n_samples, tokenizer=tokenizer, max_new_tokens=max_new_tokens,
                              max_prompt_tokens=max_prompt_tokens, temperature=temperature, seed=seed, device=dev)
    stats = set_normalization(rm, score_texts(rm, rm_tok, p, c, label=index),
                              label=index if rm.config.num_labels > 1 or label is not None else None)
    local = not isinstance(reward, torch.nn.Module) and Path(str(reward)).is_dir()
    if out is None and not local:
        raise ValueError(f"{reward!r} is not a local directory: pass out= (a directory to save the normalised "
                         f"reward model to)")
    if out is None or (local and Path(out).resolve() == Path(str(reward)).resolve()):
        config = AutoConfig.from_pretrained(str(reward))
        for key, value in stats.items():
            setattr(config, key, value)
        config.save_pretrained(str(reward))  # only config.json: the weights stay as they are
    else:
        rm.save_pretrained(str(out))
        rm_tok.save_pretrained(str(out))
    return stats


# ---- training ------------------------------------------------------------------------------------------


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


# ---- evaluation ----------------------------------------------------------------------------------------


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


# ---- saving --------------------------------------------------------------------------------------------


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


# ---- command line --------------------------------------------------------------------------------------


def _label_arg(text: str | None) -> int | str | None:
    return None if text is None else int(text) if text.lstrip("-").isdigit() else text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m textenv.reward_model",
                                     description="Reward-model tools (see the textenv.reward_model docstring).")
    sub = parser.add_subparsers(dest="command", required=True)
    n = sub.add_parser("normalize", help="compute and save reward_mean / reward_std over the SFT model's samples")
    n.add_argument("--reward", required=True, help="the reward model's directory or Hub name")
    n.add_argument("--model", required=True, help="the SFT causal LM (directory or Hub name) PPO starts from")
    n.add_argument("--prompts", required=True,
                   help="training prompts: a .txt/.json/.jsonl/.csv/.parquet file, a save_to_disk folder or a Hub "
                        "dataset NAME[:SPLIT]")
    n.add_argument("--prompt-column", default=None, help="the prompts' column (default: prompt, query or text)")
    n.add_argument("--prompt-split", default=None, help="the split of a Hub dataset or a saved DatasetDict")
    n.add_argument("--label", default=None, help="the classifier logit that is the reward: an index or a label name")
    n.add_argument("--samples", type=int, default=1000, help="SFT completions to score")
    n.add_argument("--max-new-tokens", type=int, default=24, help="the env's response length limit")
    n.add_argument("--max-prompt-tokens", type=int, default=12,
                   help="the env's prompt budget: longer prompts keep their last tokens, as in the env")
    n.add_argument("--temperature", type=float, default=1.0)
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--device", default="auto")
    n.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (0: torch's default); 1 is fastest for small models on a busy CPU")
    n.add_argument("--out", default=None, help="where to write (default: the reward model's directory, config.json only)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from textenv.text.loading import load_prompts

    prompts = load_prompts(args.prompts, column=args.prompt_column, split=args.prompt_split)
    stats = normalize_reward_model(args.reward, args.model, prompts, label=_label_arg(args.label),
                                   n_samples=args.samples, max_new_tokens=args.max_new_tokens,
                                   max_prompt_tokens=args.max_prompt_tokens, temperature=args.temperature,
                                   seed=args.seed, device=args.device, out=args.out)
    where = args.out or args.reward
    print(f"reward_mean {stats['reward_mean']:.6g}, reward_std {stats['reward_std']:.6g}"
          + (f" (label {stats['reward_label']})" if "reward_label" in stats else "")
          + f" over {args.samples} samples of {args.model}; written to {where}/config.json")


if __name__ == "__main__":
    main()
