"""agents: one PPO core for every Gymnasium env here, the REINFORCE ladder on the same pieces, and policies.

- ``agents.PPO`` / ``agents.PPOConfig``: actor-critic PPO (agents.ppo).
- ``agents.ActorCritic``: the interface a custom policy implements; ``agents.MLPActorCritic`` the default.
- ``agents.functional``: returns, rewards-to-go, GAE and the losses as pure functions.
"""

from agents.policies import ActorCritic, MLPActorCritic
from agents.ppo import PPO, PPOConfig

__all__ = ["PPO", "PPOConfig", "ActorCritic", "MLPActorCritic"]
