"""Score normalisation: ``reward_mean`` / ``reward_std`` over the SFT model's own samples.

The raw score has an arbitrary offset and scale (the pairwise loss sees only differences), so we store the
mean and standard deviation of the raw score over the SFT model's own samples in the model config as
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
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from textenv.reward_model.scoring import score_texts


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
    from textenv.text.loading import load_causal_lm, load_tokenizer
    from textenv.text.prompts import load_prompts
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

    Args:
        reward: the reward model's directory or Hub name (or a module, with ``reward_tokenizer``).
        model: the SFT causal LM (name, path or module) whose samples define "reward 0, spread 1".
        prompts: the training prompts (anything ``textenv.text.prompts.load_prompts`` reads).
        label: the classifier logit that is the reward (an index or a name in ``config.label2id``); saved as
            ``reward_label``, which the env then uses by default.
        out: where to write; None: the reward model's own directory (only its config.json changes). A Hub
            name needs ``out`` (the model and tokenizer are saved there with the new config).

    Returns:
        ``{"reward_mean", "reward_std"(, "reward_label")}``, as written.

    Raises:
        ValueError: when ``out`` is None and ``reward`` is a module or not a local directory (nowhere to write).
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
