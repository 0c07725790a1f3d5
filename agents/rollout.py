"""Collect (T, N) rollouts from any Gymnasium vector env, in either autoreset mode.

Gymnasium 1.x vector envs reset finished sub-envs themselves, in one of two ways:

- NEXT_STEP (the default of SyncVectorEnv): the step that ends an episode returns its last observation;
  the *next* call to ``step`` ignores the action, resets, and returns reward 0. That step is no
  transition of the MDP, so it gets ``mask = 0`` and is never trained on.
- SAME_STEP (our native envs): the ending step already returns the next episode's first observation,
  and the last observation of the finished one arrives in ``info["final_obs"]``.

Either way a truncated episode is bootstrapped from the value of its real last observation, and a
terminated one is not (Pardo et al. 2018, "Time Limits in Reinforcement Learning").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import Tensor

from agents.policies import ActorCritic
from agents.utils import stack_obs, to_tensor


@dataclass
class Rollout:
    """One batch of experience, time-major: every tensor is (T, N) (observations (T, N, ...))."""

    obs: Tensor | dict[str, Tensor]
    actions: Tensor
    logprobs: Tensor
    values: Tensor
    rewards: Tensor
    terminated: Tensor
    ends: Tensor
    next_values: Tensor
    mask: Tensor
    finished_returns: list[float] = field(default_factory=list)
    """the undiscounted return of each episode that ended during the rollout (functional.episode_returns is
    another thing: a per-step tensor of R(tau))"""
    finished_lengths: list[int] = field(default_factory=list)
    """the length of each of those episodes"""
    episode_infos: list[tuple[dict, np.ndarray]] = field(default_factory=list)
    """For each step where episodes ended: (the info of the ended episodes, the boolean row mask)."""


def as_vector_env(env: gym.Env | gym.vector.VectorEnv) -> gym.vector.VectorEnv:
    """Vector envs pass through; a single env becomes a vector env of one."""
    if isinstance(env, gym.vector.VectorEnv):
        return env
    if isinstance(env, gym.Env):
        return gym.vector.SyncVectorEnv([lambda: env])
    raise TypeError(f"expected a gymnasium.Env or gymnasium.vector.VectorEnv, got {type(env).__name__}")


def autoreset_mode(envs: gym.vector.VectorEnv) -> AutoresetMode:
    mode = envs.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
        raise ValueError(f"vector envs with autoreset mode {mode} are not supported; use NEXT_STEP or SAME_STEP")
    return mode


class RolloutCollector:
    """Steps a vector env with a policy and keeps the env's state between rollouts.

    Args:
        envs: a Gymnasium vector env with a Discrete action space per sub-env.
        policy: the ActorCritic that acts.
        n_steps: steps per sub-env in each rollout (T).
        device: where observations go for the policy.
        seed: seeds the first ``reset``.
        logprob_reward_coef: beta in r_t - beta * log pi(a_t|s_t), the entropy form of the KL penalty
            (TextGen-v0 without a policy puts +beta * log pi_ref(a_t|s_t) in its reward; this is the rest).
    """

    def __init__(
        self,
        envs: gym.vector.VectorEnv,
        policy: ActorCritic,
        n_steps: int,
        device: torch.device,
        seed: int | None = None,
        logprob_reward_coef: float = 0.0,
    ):
        self.envs, self.policy, self.n_steps, self.device = envs, policy, n_steps, device
        self.logprob_reward_coef = logprob_reward_coef
        self.mode = autoreset_mode(envs)
        self.num_envs = envs.num_envs
        self.obs, _ = envs.reset(seed=seed)
        self.resetting = np.zeros(self.num_envs, dtype=bool)  # NEXT_STEP: the coming step is a reset
        self.ep_return = np.zeros(self.num_envs)
        self.ep_length = np.zeros(self.num_envs, dtype=np.int64)

    def collect(self) -> Rollout:
        T, N, dev = self.n_steps, self.num_envs, self.device
        obs_buf = None
        actions, logprobs, values, rewards, terminated, ends, mask = (
            torch.zeros((T, N), device=dev, dtype=torch.long if i == 0 else torch.float32) for i in range(7)
        )
        truncated_final: list[tuple[int, np.ndarray, object]] = []  # (t, rows, their last observations)
        episodes: dict[str, list] = {"returns": [], "lengths": [], "infos": []}
        for t in range(T):
            obs_t = to_tensor(self.obs, dev)
            if obs_buf is None:
                obs_buf = _empty_like_batch(obs_t, T)
            _assign(obs_buf, t, obs_t)
            action, logprob, value = self.policy.act(obs_t)
            self.obs, reward, term, trunc, info = self.envs.step(action.cpu().numpy())
            valid = ~self.resetting
            ended = (term | trunc) & valid
            reward = np.asarray(reward, dtype=np.float64)
            actions[t], logprobs[t], values[t] = action, logprob, value
            shaped = torch.as_tensor(reward, dtype=torch.float32, device=dev)
            if self.logprob_reward_coef:
                shaped = shaped - self.logprob_reward_coef * logprob
            rewards[t] = shaped * torch.as_tensor(valid, device=dev)
            terminated[t] = torch.as_tensor(term & valid, device=dev)
            ends[t] = torch.as_tensor(ended, device=dev)
            mask[t] = torch.as_tensor(valid, device=dev)
            self._track_episodes(reward, valid, ended, episodes)
            if ended.any():
                episodes["infos"].append(self._ended_info(info, ended))
            if self.mode == AutoresetMode.SAME_STEP:
                rows = np.flatnonzero(trunc & ~term & valid)
                if rows.size:
                    truncated_final.append((t, rows, stack_obs([info["final_obs"][i] for i in rows])))
            else:
                self.resetting = ended

        last_value = self.policy.value(to_tensor(self.obs, dev))
        next_values = torch.cat([values[1:], last_value[None]], dim=0)
        # SAME_STEP: values[t + 1] belongs to the next episode; a truncated step needs its own last state.
        for t, rows, final_obs in truncated_final:
            next_values[t, torch.as_tensor(rows, device=dev)] = self.policy.value(to_tensor(final_obs, dev))
        return Rollout(
            obs_buf, actions, logprobs, values, rewards, terminated, ends, next_values, mask,
            episodes["returns"], episodes["lengths"], episodes["infos"],
        )

    def _track_episodes(self, reward: np.ndarray, valid: np.ndarray, ended: np.ndarray, episodes: dict) -> None:
        self.ep_return += np.where(valid, reward, 0.0)
        self.ep_length += valid
        if ended.any():
            episodes["returns"].extend(self.ep_return[ended].tolist())
            episodes["lengths"].extend(self.ep_length[ended].tolist())
            self.ep_return[ended] = 0.0
            self.ep_length[ended] = 0

    def _ended_info(self, info: dict, ended: np.ndarray) -> tuple[dict, np.ndarray]:
        if self.mode == AutoresetMode.SAME_STEP and "final_info" in info:
            return info["final_info"], ended
        return info, ended


def _empty_like_batch(obs_t, T: int):
    if isinstance(obs_t, dict):
        return {k: _empty_like_batch(v, T) for k, v in obs_t.items()}
    return torch.zeros((T, *obs_t.shape), dtype=obs_t.dtype, device=obs_t.device)


def _assign(buf, t: int, obs_t) -> None:
    if isinstance(buf, dict):
        for k in buf:
            buf[k][t] = obs_t[k]
    else:
        buf[t] = obs_t


