"""Small helpers shared by the GridWorld examples and benchmarks: the env, tuned PPO settings, greedy scoring.

Imported as ``from gridworld_common import ...`` by the scripts in examples/ (Python puts a script's own folder on
``sys.path``); benchmarks/ adds examples/ to ``sys.path`` first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np

import textenv  # noqa: F401  (registers GridWorld-v0)
from agents import PPOConfig
from textenv.gridworld import policy_return, value_iteration

OUTPUTS = Path(__file__).resolve().parent.parent / "outputs"
"""Where the examples write plots: outputs/ at the repository root (ignored by git), wherever they are run from."""

GRID_NUM_ENVS = 64
"""Cats stepped together by the native vector env for agents.PPO on the grid."""

GRID_PPO = PPOConfig(
    n_steps=16,  # 64 cats x 16 steps = 1024 transitions per update: many small, fresh batches
    learning_rate=3e-3,  # 12x CleanRL's: the grid is tiny and the batches are fresh
    gae_lambda=0.8,  # less variance than 0.95; the broom (-1) vs a detour is a small signal to find
    clip_vloss=False,  # returns are ~100: a value clipped to move 0.2 per update would take ages to get there
    progress_bar=False,
)
"""agents.PPO settings for GridWorld-v0 (the rest are CleanRL's defaults: 4 epochs x 4 minibatches, clip 0.2,
gamma 0.99, entropy 0.01, lr annealed). Chosen by sweeping seeds 0-9: all reach the optimal greedy return
(+100) by 30k steps."""


def make_grid_envs(num_envs: int = GRID_NUM_ENVS, **env_kwargs) -> gym.vector.VectorEnv:
    """GridWorld-v0's natively batched vector env (SAME_STEP autoreset, 100-step limit)."""
    return gym.make_vec("GridWorld-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", **env_kwargs)


def optimal_return(**grid_kwargs) -> float:
    """The undiscounted return of value iteration's optimal policy from the start (+100 on the default grid)."""
    return policy_return(value_iteration(**grid_kwargs).policy, layout=grid_kwargs.get("layout"),
                         rewards=grid_kwargs.get("rewards"))


def greedy_return(model, **grid_kwargs) -> float:
    """Undiscounted return of ``model``'s most likely action in every state (agents.PPO, REINFORCE or SB3).

    The grid (without slips) and the greedy policy are deterministic, so one episode is the exact value.
    """
    return policy_return(lambda obs: int(model.predict(obs, deterministic=True)[0]), **grid_kwargs)


@dataclass
class OptimumTracker:
    """Scores the greedy policy every ``eval_every`` env steps and records when it first hits ``optimum``.

    Wall-clock counts from ``start()`` and leaves out the time spent scoring, so two agents are timed on
    their training alone. Use ``tracker.agents_callback`` with agents.PPO / REINFORCE and
    ``tracker.sb3_callback()`` with stable-baselines3.
    """

    optimum: float
    eval_every: int = 1024
    """env steps between two scorings (scored at the first policy update past each multiple)"""
    stop_at_optimum: bool = False
    """end training as soon as the greedy return reaches the optimum"""
    hold: int = 1
    """count the optimum as reached once this many scorings in a row were optimal (1: the first hit)"""
    history: list[tuple[int, float, float]] = field(default_factory=list)
    """(env steps, training seconds, greedy return) at every scoring"""
    first_steps: int | None = None
    first_seconds: float | None = None

    def start(self) -> None:
        self._t0, self._eval_s, self._next = time.perf_counter(), 0.0, 0

    @property
    def seconds(self) -> float:
        """Training wall-clock so far (scoring excluded)."""
        return time.perf_counter() - self._t0 - self._eval_s

    @property
    def reached(self) -> bool:
        return self.first_steps is not None

    @property
    def held_from(self) -> tuple[int, float] | None:
        """(env steps, seconds) of the first scoring from which every later one was optimal; None if the last was not.

        A greedy policy can hit the optimum by chance early on and lose it again; this one stayed.
        """
        held = None
        for steps, seconds, score in reversed(self.history):
            if score < self.optimum - 1e-6:
                break
            held = (steps, seconds)
        return held

    def check(self, model, timesteps: int, force: bool = False) -> bool:
        """Score ``model`` if it is time; returns False when training should stop."""
        if timesteps < self._next and not force:
            return True
        if self.history and self.history[-1][0] == timesteps:  # this policy is already scored
            return not (self.stop_at_optimum and self.reached)
        seconds = self.seconds
        begin = time.perf_counter()
        score = greedy_return(model)
        self._eval_s += time.perf_counter() - begin
        self.history.append((int(timesteps), seconds, score))
        self._next = (timesteps // self.eval_every + 1) * self.eval_every
        streak = all(s >= self.optimum - 1e-6 for _, _, s in self.history[-self.hold:])
        if streak and len(self.history) >= self.hold and not self.reached:
            self.first_steps, self.first_seconds = int(timesteps), seconds
        return not (self.stop_at_optimum and self.reached)

    def agents_callback(self, agent, metrics: dict) -> bool:
        """The ``callback(agent, metrics)`` of agents.PPO.learn / REINFORCE.learn."""
        return self.check(agent, metrics["timesteps"])

    def sb3_callback(self):
        """A stable-baselines3 callback that scores the policy right after each update (at rollout start)."""
        from stable_baselines3.common.callbacks import BaseCallback

        tracker = self

        class _Tracker(BaseCallback):
            keep_going = True

            def _on_rollout_start(self) -> None:
                # SB3 calls this right after train(): the policy is fresh, num_timesteps the steps it has used.
                self.keep_going = tracker.check(self.model, self.num_timesteps)

            def _on_step(self) -> bool:
                return self.keep_going  # SB3 only stops from _on_step

        return _Tracker()


def median(values) -> float:
    """Median ignoring None (runs that never got there); NaN when all are None."""
    vals = [v for v in values if v is not None]
    return float(np.median(vals)) if vals else float("nan")
