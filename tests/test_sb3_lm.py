"""agents.sb3_lm: Stable-Baselines3's PPO drives TextGen-v0 with the LM policy (mode b, ent_coef = beta)."""

import math

import pytest
import torch
from stable_baselines3 import PPO as SB3PPO
from text_fixtures import *  # noqa: F401,F403
from text_fixtures import PROMPTS, length_reward

from textenv.text.wrappers import RecordResponseStatistics
from agents.sb3_lm import SB3LMPolicy, SB3RLHFCallback
from textenv.sb3 import SB3VecEnvAdapter
from textenv.text.vector import TextGenVectorEnv


@pytest.fixture
def venv(lm_dir):
    env = TextGenVectorEnv(num_envs=4, model=str(lm_dir), reward=length_reward, prompts=list(PROMPTS),
                           max_new_tokens=5, max_prompt_tokens=6, top_k=20, kl_coef=0.05, device="cpu")
    return SB3VecEnvAdapter(RecordResponseStatistics(env))


def test_sb3_ppo_runs_updates_with_the_lm_policy(lm_dir, venv):
    sampling = venv.get_attr("sampling")[0]
    model = SB3PPO(SB3LMPolicy, venv, n_steps=5, batch_size=10, n_epochs=2, gamma=1.0, ent_coef=0.05,
                   learning_rate=1e-3, seed=0, device="cpu",
                   policy_kwargs=dict(lm=str(lm_dir), sampling=sampling))
    assert torch.count_nonzero(model.policy.value_net.weight) == 0
    before = {k: v.clone() for k, v in model.policy.lm.state_dict().items()}
    callback = SB3RLHFCallback()
    model.learn(2 * 5 * 4, callback=callback)  # two rollouts, two updates
    assert model.num_timesteps == 40
    assert any(not torch.equal(before[k], v) for k, v in model.policy.lm.state_dict().items())  # the LM trained
    assert len(callback.history) == 2
    assert all(math.isfinite(h["rm_score"]) and math.isfinite(h["kl"]) for h in callback.history)

    obs = venv.reset()
    actions, _ = model.predict(obs)
    assert actions.shape == (4,) and actions.dtype.kind == "i"
    assert ((0 <= actions) & (actions < venv.action_space.n)).all()
    # top-k: every action is one of the 20 most likely tokens of the policy
    with torch.no_grad():
        dist = model.policy.get_distribution({k: torch.as_tensor(v) for k, v in obs.items()})
    assert torch.isfinite(dist.log_prob(torch.as_tensor(actions))).all()  # no action outside the top-k


def test_sb3_policy_scores_like_agents_lm(lm_dir):
    """The SB3 policy's full-window forward gives the same log-probs as agents.lm's KV-cached acting."""
    from agents.lm import LMActorCritic
    from textenv.text.sampling import SamplingConfig

    sampling = SamplingConfig(temperature=0.7)
    env = TextGenVectorEnv(num_envs=3, model=str(lm_dir), reward=length_reward, prompts=list(PROMPTS),
                           max_new_tokens=4, max_prompt_tokens=6, device="cpu")
    space = env.single_observation_space
    sb3 = SB3LMPolicy(space, env.single_action_space, lambda _: 1e-4, lm=str(lm_dir), sampling=sampling)
    ours = LMActorCritic(str(lm_dir), sampling=sampling, device="cpu")
    obs, _ = env.reset(seed=1)
    for _ in range(3):
        t = {k: torch.as_tensor(v) for k, v in obs.items()}
        actions, logp, _ = ours.act(t)
        with torch.no_grad():
            _, sb3_logp, _ = sb3.evaluate_actions(t, actions)
        torch.testing.assert_close(sb3_logp, logp, atol=1e-5, rtol=0)
        obs, *_ = env.step(actions.numpy())
