"""A policy whose LM is the env's reference module: one forward per token serves both, the KL is 0, and the
env's outputs are those of a separate, identical reference."""

import copy

import numpy as np
import pytest
import torch
from text_fixtures import PROMPTS, length_reward, make_lm, make_tokenizer

from agents.lm import LMActorCritic
from textenv.text.sampling import SamplingConfig
from textenv.text.vector import TextGenVectorEnv
from textenv.text.wrappers import step_values


def run(policy, model, steps=6, **kw):
    env = TextGenVectorEnv(3, model=model, tokenizer=make_tokenizer(), reward=length_reward, prompts=list(PROMPTS),
                           policy=policy, max_new_tokens=4, max_prompt_tokens=6, device="cpu", **kw)
    obs, _ = env.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(steps):
        logits, _ = policy({k: torch.as_tensor(v) for k, v in obs.items()})
        action = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)[:, 0].numpy()
        obs, reward, term, trunc, info = env.step(action)
        done = term | trunc
        out.append((obs["input_ids"].copy(), reward.copy(), term.copy(), trunc.copy(),
                    step_values(info, done, "ref_logprob"), step_values(info, done, "kl")))
    return env, out


def test_policy_equal_to_reference_runs_one_forward_per_step():
    model = make_lm(0)
    shared = LMActorCritic(model, device="cpu")
    env, got = run(shared, model)
    assert env.core.ref_lm is shared.incremental  # one runner for both
    stats = shared.incremental.stats
    assert stats["forwards"] <= 6 and stats["memo_hits"] >= 2 * 6  # the env's two reads of each step are memo hits
    assert all(np.all(kl == 0.0) for *_, kl in got)

    separate = LMActorCritic(copy.deepcopy(model), device="cpu")  # same weights, another module: two runners
    env2, want = run(separate, model)
    assert env2.core.ref_lm is not separate.incremental
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_shared_reference_keeps_the_prompt_store():
    model = make_lm(0)
    shared = LMActorCritic(model, device="cpu")
    env, _ = run(shared, model, steps=2)
    assert env.core.ref_lm.prompt_cache_bytes > 0 and len(env.core.ref_lm.remembered_prompts) > 0


def test_top_k_policy_on_the_reference_module_still_measures_its_kl():
    model = make_lm(0)
    policy = LMActorCritic(model, sampling=SamplingConfig(top_k=5), device="cpu")
    _, got = run(policy, model, top_k=5)
    kls = np.concatenate([kl for *_, kl in got])
    assert np.all(np.isfinite(kls)) and np.all(kls >= -1e-6) and np.any(kls > 1e-3)  # log(1/mass of the top 5)


def test_a_reference_context_must_be_callable():
    from textenv.text.decoding import IncrementalLM

    with pytest.raises(TypeError, match="context must be a callable"):
        IncrementalLM(make_lm(0), context="disable_adapter")
