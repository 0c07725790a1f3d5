"""Held-out evaluation: one sampled response per prompt, scored by the reward model, the gold judge and the KL."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from agents.rlhf.responses import collect_responses
from textenv.text.config import TextGenConfig
from textenv.text.decoding import IncrementalLM


@torch.no_grad()
def evaluate_policy(policy, env_config: TextGenConfig | None, prompts: list[str], gold_fn: Callable | None = None,
                    seed: int = 0) -> dict:
    """Sample one completion per prompt and score it: RM score, gold score, KL to the reference per response.

    Runs its own TextGen vector env in mode (a) on ``env_config`` (the training run's task, ``RLHFConfig.env``;
    None: the registered default) with ``prompts`` as its prompts, so the KL is the env's own per-token estimate
    summed over the response. Sampling uses a private generator
    seeded with ``seed``: evaluating never moves the training run's random state.

    Args:
        policy: an ``LMActorCritic``, anything with ``next_token_logits``, or a causal LM module.
        prompts: prompts the training env never drew: a test split, or ones held out of your prompts with
            ``textenv.text.prompts.split_prompts`` (what ``examples/rlhf_ppo.py`` does without --eval-prompts-file).
        gold_fn: the gold judge ``(prompts, completions) -> scores``, or None.
    Returns:
        dict of lists / arrays: prompt, completion, rm_score, gold_score (NaN without a judge: report it as
        missing, as the example's table does), kl, tokens.
    """
    from textenv.text.vector import TextGenVectorEnv

    runner = policy if hasattr(policy, "next_token_logits") else IncrementalLM(policy)
    env = TextGenVectorEnv(len(prompts), env_config, policy=runner, prompts=list(prompts), prompt_column=None,
                           prompt_split=None)
    beta = 0.0  # evaluation reports the KL itself: the reward's beta does not matter
    try:
        module = isinstance(policy, torch.nn.Module)
        device = next(policy.parameters()).device if module else torch.device(runner.device)
        generator = torch.Generator(device).manual_seed(seed)
        batch = collect_responses(env, runner, beta, seed, generator, device, prompts=prompts)
    finally:
        env.close()
    gold = np.asarray(gold_fn(batch.prompts, batch.texts), dtype=float) if gold_fn else np.full(len(prompts), np.nan)
    return {"prompt": batch.prompts, "completion": batch.texts, "rm_score": batch.scores, "gold_score": gold,
            "kl": batch.kl_per_response().cpu().numpy(), "tokens": batch.lengths.cpu().numpy()}
