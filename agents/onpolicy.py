"""What the on-policy agents (``agents.PPO``, ``agents.REINFORCE``) share, as plain functions rather than a
base class: the pieces an agent builds from the user's env and policy, acting for ``predict``, and the
episode metrics of a rollout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch

from agents import distributed as D
from agents.policies import ActorCritic, MLPActorCritic
from agents.rollout import Rollout, as_vector_env
from agents.utils import add_batch_dim, is_single_obs, seed_everything, to_tensor
from rlcore.device import resolve_device

Callback = Callable[[Any, dict], "bool | None"]
"""Called after every iteration with the agent and that iteration's metrics; returning False stops learn()."""


@dataclass
class AgentParts:
    """What an agent holds: its device, vector env (None: a loaded agent that only predicts), spaces,
    policy on the device, and an Adam optimizer over the policy's parameters."""

    device: torch.device
    env: gym.vector.VectorEnv | None
    observation_space: gym.Space | None
    action_space: gym.Space | None
    policy: ActorCritic
    optimizer: torch.optim.Optimizer


def build_agent(env, policy: ActorCritic | None, seed: int | None, device, learning_rate: float) -> AgentParts:
    """Seed everything, wrap a single env as a vector env of one, and build the default ``MLPActorCritic``
    for the env's spaces when no policy is given.

    Raises:
        ValueError: neither an env nor a policy (nothing to build the policy for).
    """
    device = resolve_device(device)
    seed_everything(seed)
    venv = None if env is None else as_vector_env(env)
    obs_space = act_space = None
    if venv is not None:
        obs_space, act_space = venv.single_observation_space, venv.single_action_space
        if seed is not None:
            venv.action_space.seed(seed)
    elif policy is None:
        raise ValueError("an agent needs an env, or a policy when it is built without one")
    policy = (policy or MLPActorCritic(obs_space, act_space)).to(device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=learning_rate, eps=1e-5)
    return AgentParts(device, venv, obs_space, act_space, policy, optimizer)


def predict(policy: ActorCritic, obs, observation_space: gym.Space, device: torch.device,
            deterministic: bool = False) -> tuple[np.ndarray | int, None]:
    """Action(s) for one observation or a batch, as stable-baselines3's ``predict`` returns them:
    (an int for one observation, an array for a batch; None for the recurrent state SB3 would give)."""
    single = is_single_obs(obs, observation_space)
    batch = add_batch_dim(obs) if single else obs
    policy.eval()
    actions, _, _ = policy.act(to_tensor(batch, device), deterministic=deterministic)
    actions = actions.cpu().numpy()
    return (int(actions[0]) if single else actions), None


def episode_metrics(rollout: Rollout, all_ranks: bool = False) -> dict[str, float]:
    """Mean return and length of the episodes that finished during the rollout (NaN when none did); with
    ``all_ranks``, of the episodes every rank finished (under torchrun)."""
    returns, lengths = rollout.finished_returns, rollout.finished_lengths
    if all_ranks:
        total_return, total_length, n = D.all_sum_numbers([sum(returns), sum(lengths), len(returns)])
    else:
        total_return, total_length, n = float(np.sum(returns)), float(np.sum(lengths)), len(returns)
    if not n:
        return {"episode_return": float("nan"), "episode_length": float("nan"), "episodes": 0}
    return {"episode_return": total_return / n, "episode_length": total_length / n, "episodes": int(n)}
