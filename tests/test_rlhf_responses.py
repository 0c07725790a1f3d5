"""The RLHF rollout of whole responses, their scoring in the update, and train_rlhf end to end on tiny models."""

import math

import numpy as np
import pytest
import torch
from text_fixtures import *  # noqa: F401,F403
from text_fixtures import PROMPTS, length_reward, make_tokenizer
from test_rlhf import BagOfTokensPolicy

from agents.lm import LMActorCritic
from agents.rlhf import KLConfig, RLHFConfig, collect_responses, rlhf_ppo_config, train_rlhf
from agents.rlhf.responses import score_by_steps
from textenv.text.config import TextGenConfig
from textenv.text.sampling import SamplingConfig
from textenv.text.vector import TextGenVectorEnv

SAMPLING = SamplingConfig(temperature=0.9, top_k=20)
EOS_BONUS = 9.0


def make_env(lm_dir, policy, n=6, reward=length_reward, **kw):
    return TextGenVectorEnv(num_envs=n, model=str(lm_dir), reward=reward, prompts=list(PROMPTS), max_new_tokens=6,
                            max_prompt_tokens=6, temperature=0.9, top_k=20, device="cpu", policy=policy, **kw)


def favour_eos(policy: LMActorCritic) -> LMActorCritic:
    """The tiny random LM rarely says EOS: favour it, so that responses end at different lengths."""
    eos_bonus = torch.zeros(policy.model.config.vocab_size)
    eos_bonus[1] = EOS_BONUS
    policy.model.lm_head.register_forward_hook(lambda module, args, out: out + eos_bonus)
    return policy


def rollout(lm_dir, n=6, seed=0, beta=0.1, **kw):
    policy = LMActorCritic(str(lm_dir), sampling=SAMPLING, device="cpu")
    with torch.no_grad():  # a value head that says something, so the values can be compared
        policy.value_head.weight.normal_(0, 0.3)
    favour_eos(policy)
    env = make_env(lm_dir, policy, n=n, **kw)
    batch = collect_responses(env, policy, beta, seed, torch.Generator().manual_seed(seed), torch.device("cpu"))
    return policy, env, batch


# ---------------------------------------------------------------------------------------------- the rollout
def test_each_row_is_one_whole_response_from_its_prompt(lm_dir):
    _, env, batch = rollout(lm_dir, n=8)
    tok = make_tokenizer()
    assert batch.response_mask.shape == (8, 6)
    lengths = batch.lengths
    assert lengths.min() >= 1 and lengths.max() <= 6
    assert (lengths < 6).any(), "EOS ends some responses early (stop_at_eos is on by default)"
    for i in range(8):
        n = int(lengths[i])
        assert (batch.response_mask[i, :n] == 1).all() and (batch.response_mask[i, n:] == 0).all()  # a prefix
        assert batch.prompts[i] in PROMPTS
        tokens = batch.actions[i, :n].tolist()
        assert batch.texts[i].strip() == tok.decode([t for t in tokens if t != env.eos_token_id]).strip()
    # the reward: -beta * KL_t on every token and the score (word count) on the last one only
    last = torch.nn.functional.one_hot(lengths - 1, 6).float()
    expected = -0.1 * batch.kl * batch.response_mask + last * torch.as_tensor(batch.scores, dtype=torch.float32)[:, None]
    torch.testing.assert_close(batch.rewards, expected, atol=1e-5, rtol=0)
    assert batch.scores.tolist() == [float(len(t.split())) for t in batch.texts]
    # the rollout ran until the longest response ended; the early-finished rows' partial next responses are dropped
    assert batch.generated_tokens == 8 * int(lengths.max()) >= batch.tokens == int(lengths.sum())


def test_the_controllers_beta_reaches_the_env_through_reset(lm_dir):
    _, env, batch = rollout(lm_dir, beta=0.37)
    assert env.kl_coef == 0.37 and batch.kl_coef == 0.37


def test_a_bad_kl_coef_reset_option_is_refused_and_changes_nothing(lm_dir):
    env = make_env(lm_dir, None)
    obs, _ = env.reset(seed=0, options={"kl_coef": 0.2})
    for bad, err in ((-1.0, ValueError), (float("nan"), ValueError), ("0.1", TypeError)):
        with pytest.raises(err, match=r"options\['kl_coef'\]"):
            env.reset(seed=1, options={"kl_coef": bad})
        assert env.kl_coef == 0.2
        np.testing.assert_array_equal(env.core.observe()["input_ids"], obs["input_ids"])  # no row was reset


# ---------------------------------------------------------------------------------------------- the update's scoring
def test_one_forward_per_response_reproduces_the_rollout(lm_dir):
    policy, _, batch = rollout(lm_dir, n=8)
    logprob, entropy, values = policy.score_responses(batch.ids, batch.mask, batch.prompt_cols)
    m = batch.response_mask > 0
    torch.testing.assert_close(logprob[m], batch.logprobs[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(values[m], batch.values[m], atol=1e-5, rtol=0)
    assert torch.isfinite(entropy[m]).all() and (entropy[m] > 0).all()


def test_per_step_scoring_of_a_policy_without_a_sequence_forward_agrees(lm_dir):
    policy, _, batch = rollout(lm_dir, n=5)
    m = batch.response_mask > 0
    by_steps = score_by_steps(policy, batch.ids, batch.mask, batch.prompt_cols, batch.actions, batch.obs_width)
    whole = policy.score_responses(batch.ids, batch.mask, batch.prompt_cols)
    for a, b in zip(by_steps, whole):
        torch.testing.assert_close(a[m], b[m], atol=1e-5, rtol=0)


def tiny(lm_dir, **kw) -> RLHFConfig:
    env_kw = dict(model=str(lm_dir), reward=length_reward, prompts=list(PROMPTS), max_new_tokens=5,
                  max_prompt_tokens=6, kl_coef=0.1, device="cpu")
    env_kw.update(kw.pop("env", {}))
    defaults = dict(env=TextGenConfig(**env_kw), num_envs=kw.pop("num_envs", 4), kl=KLConfig(target=1.0, horizon=20.0),
                    ppo=rlhf_ppo_config(n_minibatches=2, n_epochs=2, learning_rate=1e-3), responses=4,
                    device="cpu", seed=3)
    return RLHFConfig(**{**defaults, **kw})


@pytest.mark.parametrize("user_policy", [False, True], ids=["lm-one-forward", "own-policy-per-step"])
def test_the_first_minibatch_of_the_first_epoch_has_ratio_one(lm_dir, monkeypatch, user_policy):
    import agents.functional as F

    calls, original = [], F.policy_loss

    def recording(logprob, old_logprob, advantages, clip_coef, mask):
        calls.append((logprob.detach().clone(), old_logprob.clone(), mask.clone()))
        return original(logprob, old_logprob, advantages, clip_coef, mask)

    monkeypatch.setattr(F, "policy_loss", recording)
    train_rlhf(tiny(lm_dir, policy=BagOfTokensPolicy(64) if user_policy else None))
    logprob, old, mask = calls[0]
    m = mask > 0
    assert (logprob[m] - old[m]).exp().sub(1).abs().max() < 1e-5  # the ratio, at every token of the minibatch
    assert len(calls) == 4  # 2 epochs x 2 minibatches
    assert any((lp - o)[mk > 0].abs().max() > 1e-4 for lp, o, mk in calls[1:])  # and the update moved the policy


def test_unused_ppo_settings_are_refused_with_the_reason(lm_dir):
    for field, value, why in (("n_steps", 5, "one whole response per row"), ("minibatch_by", "env", "whole responses"),
                              ("logprob_reward_coef", 0.1, "beta has one owner")):
        with pytest.raises(ValueError, match=rf"ppo.{field}=.* does not apply to train_rlhf: .*{why}"):
            train_rlhf(tiny(lm_dir, ppo=rlhf_ppo_config(**{field: value})))
    with pytest.raises(ValueError, match="responses must be"):
        train_rlhf(tiny(lm_dir, responses=0))


# ---------------------------------------------------------------------------------------------- end to end
def test_train_rlhf_learns_to_say_the_rewarded_token(lm_dir):
    """A reward that pays for one word: after a few iterations the policy says it far more often."""
    word = "great"
    pays_for_word = lambda prompts, completions: [float(c.split().count(word)) for c in completions]  # noqa: E731
    cfg = tiny(lm_dir, env={"reward": pays_for_word, "max_new_tokens": 4, "temperature": 2.0, "kl_coef": 0.01},
               num_envs=16, kl=KLConfig(target=None), responses=16 * 12,
               ppo=rlhf_ppo_config(n_minibatches=2, n_epochs=4, learning_rate=3e-3))
    h = train_rlhf(cfg).history
    first, last = np.mean([x["rm_score"] for x in h[:2]]), np.mean([x["rm_score"] for x in h[-2:]])
    assert all(math.isfinite(x["policy_loss"]) for x in h)
    assert last > first + 1.0, (first, last)  # more than one more rewarded word per 4-token response


def test_responses_run_the_full_length_when_eos_does_not_end_them(lm_dir):
    def lengths(stop_at_eos):
        policy = favour_eos(LMActorCritic(str(lm_dir), device="cpu"))
        cfg = tiny(lm_dir, env={"stop_at_eos": stop_at_eos}, num_envs=8, responses=8, policy=policy)
        return train_rlhf(cfg).history[0]
    assert lengths(True)["response_length"] < 5  # EOS ends some responses early
    fixed = lengths(False)
    assert fixed["response_length"] == 5 and fixed["generated_tokens"] == 8 * 5
