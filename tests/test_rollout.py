"""RolloutCollector: the autoreset step is never trained on, truncation bootstraps, termination does not."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from agents.policies import ActorCritic
from agents.rollout import RolloutCollector


class Counter(gym.Env):
    """obs = steps taken; reward 1 per step; terminates after `length` steps (or is truncated by TimeLimit)."""

    observation_space = gym.spaces.Box(0, 100, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length=3):
        self.length = length

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.n = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.n += 1
        return np.array([self.n], np.float32), 1.0, self.n >= self.length, False, {}


class ObsValue(ActorCritic):
    """Uniform policy whose value is 10 * obs, so bootstrap values are recognisable."""

    def forward(self, obs):
        return torch.zeros(obs.shape[0], 2), 10.0 * obs[:, 0]


def collect(mode, make, T):
    envs = SyncVectorEnv([make], autoreset_mode=mode)
    return RolloutCollector(envs, ObsValue(), T, torch.device("cpu"), seed=0).collect()


def test_next_step_autoreset_step_is_masked():
    r = collect(AutoresetMode.NEXT_STEP, lambda: Counter(3), 8)
    # steps 0-2 episode, step 3 the ignored reset step, steps 4-6 episode, step 7 reset
    assert r.mask[:, 0].tolist() == [1, 1, 1, 0, 1, 1, 1, 0]
    assert r.ends[:, 0].tolist() == [0, 0, 1, 0, 0, 0, 1, 0]
    assert r.rewards[:, 0].tolist() == [1, 1, 1, 0, 1, 1, 1, 0]
    assert r.finished_returns == [3.0, 3.0] and r.finished_lengths == [3, 3]


def test_same_step_has_no_wasted_step():
    r = collect(AutoresetMode.SAME_STEP, lambda: Counter(3), 6)
    assert r.mask[:, 0].tolist() == [1] * 6
    assert r.ends[:, 0].tolist() == [0, 0, 1, 0, 0, 1]
    assert r.obs[:, 0, 0].tolist() == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_truncation_bootstraps_from_the_last_observation(mode):
    # Counter(100) truncated by TimeLimit after 2 steps: the last observation is [2], V = 20.
    r = collect(mode, lambda: gym.wrappers.TimeLimit(Counter(100), 2), 4)
    t = 1  # the truncating step
    assert r.ends[t, 0] == 1 and r.terminated[t, 0] == 0
    assert r.next_values[t, 0].item() == pytest.approx(20.0)


def test_termination_flag_and_rollout_end_bootstrap():
    r = collect(AutoresetMode.SAME_STEP, lambda: Counter(3), 4)
    assert r.terminated[:, 0].tolist() == [0, 0, 1, 0]
    # after the last step the env is at obs [1] of its second episode: V = 10
    assert r.next_values[-1, 0].item() == pytest.approx(10.0)
    assert r.next_values[0, 0].item() == pytest.approx(10.0) and r.next_values[1, 0].item() == pytest.approx(20.0)


def test_entropy_form_reward_subtracts_beta_logprob():
    envs = SyncVectorEnv([lambda: Counter(3)], autoreset_mode=AutoresetMode.SAME_STEP)
    r = RolloutCollector(envs, ObsValue(), 3, torch.device("cpu"), seed=0, logprob_reward_coef=0.5).collect()
    # uniform over 2 actions: log pi = -log 2, so r = 1 + .5 log 2
    assert torch.allclose(r.rewards, torch.full_like(r.rewards, 1 + 0.5 * np.log(2)))
