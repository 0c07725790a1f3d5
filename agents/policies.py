"""The actor-critic interface every agent here drives, and the default MLP.

A policy is an ``nn.Module`` with one required method::

    forward(obs) -> (logits (B, A), values (B,))

``obs`` is a batch of observations as tensors on the policy's device: a tensor for Box and Discrete
spaces (Discrete observations arrive as int64 indices of shape (B,)), a dict of tensors for Dict spaces.
Everything else (sampling, log-probabilities, entropy) is derived here, so plugging in a network means
writing ``forward``. A policy may override ``evaluate_actions`` when it can score a batch faster than
one ``forward`` per row; the language model does (one forward per sequence instead of per token).
See ``examples/custom_policy.py``.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Categorical


class ActorCritic(nn.Module):
    """Base class: implement ``forward(obs) -> (logits, values)``."""

    def forward(self, obs) -> tuple[Tensor, Tensor]:  # pragma: no cover - the interface
        raise NotImplementedError("an ActorCritic must implement forward(obs) -> (logits (B, A), values (B,))")

    def distribution(self, logits: Tensor) -> Categorical:
        return Categorical(logits=logits)

    @torch.no_grad()
    def act(self, obs, deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Sample (or take the most likely) actions: returns actions (B,), their log-probs (B,), values (B,)."""
        logits, values = self(obs)
        dist = self.distribution(logits)
        actions = logits.argmax(-1) if deterministic else dist.sample()
        return actions, dist.log_prob(actions), values

    def evaluate_actions(self, obs, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Re-score taken actions under the current parameters: log-probs (B,), entropy (B,), values (B,)."""
        logits, values = self(obs)
        dist = self.distribution(logits)
        return dist.log_prob(actions), dist.entropy(), values

    @torch.no_grad()
    def value(self, obs) -> Tensor:
        """V(s) for a batch of observations (B,)."""
        return self(obs)[1]


def layer_init(layer: nn.Linear, gain: float = math.sqrt(2), bias: float = 0.0) -> nn.Linear:
    """Orthogonal weights, constant bias: the PPO implementation detail of Engstrom et al. 2020 / Huang et al. 2022."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


def flat_obs_dim(space: gym.Space) -> int:
    """Input width of the MLP for ``space``: one-hot for Discrete, flattened for Box."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    raise TypeError(
        f"MLPActorCritic takes Discrete or Box observations, got {space}; "
        "for other spaces plug in your own ActorCritic (see agents.policies)"
    )


class MLPActorCritic(ActorCritic):
    """Separate actor and critic MLPs with tanh activations (the PPO paper's continuous-control network).

    Args:
        observation_space: Discrete (one-hot encoded) or Box (flattened).
        action_space: Discrete.
        hidden_sizes: widths of the hidden layers of each MLP.
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, hidden_sizes: tuple[int, ...] = (64, 64)):
        super().__init__()
        if not isinstance(action_space, gym.spaces.Discrete):
            raise TypeError(f"agents.PPO supports Discrete action spaces, got {action_space}")
        self.observation_space = observation_space
        self.in_dim = flat_obs_dim(observation_space)
        n_actions = int(action_space.n)
        self.actor = self._mlp(self.in_dim, hidden_sizes, n_actions, out_gain=0.01)
        self.critic = self._mlp(self.in_dim, hidden_sizes, 1, out_gain=1.0)

    @staticmethod
    def _mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, out_gain: float) -> nn.Sequential:
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [layer_init(nn.Linear(in_dim, width)), nn.Tanh()]
            in_dim = width
        # A small gain on the policy head starts with near-uniform action probabilities.
        layers.append(layer_init(nn.Linear(in_dim, out_dim), gain=out_gain))
        return nn.Sequential(*layers)

    def encode(self, obs: Tensor) -> Tensor:
        if isinstance(self.observation_space, gym.spaces.Discrete):
            return nn.functional.one_hot(obs.long().reshape(-1), self.in_dim).float()
        return obs.reshape(obs.shape[0], -1).float()

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        x = self.encode(obs)  # (B, in_dim)
        return self.actor(x), self.critic(x).squeeze(-1)
