"""GridWorldVectorEnv: N cats stepped together with numpy, the natively batched twin of GridWorldEnv."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from textenv.gridworld import dynamics
from textenv.gridworld.dynamics import Rewards
from textenv.gridworld.layout import Layout, as_layout
from textenv.gridworld.render import RENDER_MODES, check_render_mode, render_frame


class GridWorldVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` copies of :class:`~textenv.gridworld.env.GridWorldEnv` in numpy arrays.

    Behaves exactly like ``SyncVectorEnv`` over ``gym.make("GridWorld-v0")`` copies in
    ``AutoresetMode.SAME_STEP`` with the same seeds and actions, slips included: ``reset(seed=s)``
    seeds copy ``i`` as a single env's ``reset(seed=s + i)``, and ``step`` returns the next episode's
    first observation for copies that ended, with the last one in ``info["final_obs"]`` (an object
    array, ``None`` where nothing ended; mask ``info["_final_obs"]``) and its (empty) info dict in
    ``info["final_info"]`` (mask ``info["_final_info"]``). Steps where nothing ended return ``{}``.

    Args:
        num_envs: number of copies N.
        render_mode: ``None``, ``"ansi"`` or ``"rgb_array"``; ``render()`` returns a tuple with one
            frame per copy, as ``SyncVectorEnv`` does.
        layout, slip_prob, rewards, cell_px: as for ``GridWorldEnv``, shared by all copies.
        max_episode_steps: truncate each copy after this many steps (``None``: never).
            ``gym.make_vec`` passes the registered 100.
    """

    metadata = {
        "render_modes": list(RENDER_MODES),
        "render_fps": 4,
        "autoreset_mode": AutoresetMode.SAME_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        render_mode: str | None = None,
        layout: Layout | str | Sequence[str] | None = None,
        slip_prob: float = 0.0,
        rewards: Rewards | dict | None = None,
        cell_px: int = 32,
        max_episode_steps: int | None = None,
    ):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}.")
        if max_episode_steps is not None and (
            not isinstance(max_episode_steps, (int, np.integer)) or max_episode_steps < 1
        ):
            raise ValueError(f"max_episode_steps must be a positive integer or None, got {max_episode_steps!r}.")
        self.num_envs = int(num_envs)
        self.render_mode = check_render_mode(render_mode)
        self.layout = as_layout(layout)
        self.rewards = dynamics.as_rewards(rewards)
        self.slip_prob = dynamics.check_slip_prob(slip_prob)
        self.cell_px = cell_px
        self.max_episode_steps = max_episode_steps
        self._tables = dynamics.build_tables(self.layout, self.rewards)
        self._threshold = dynamics.slip_threshold(self.slip_prob)

        self.single_observation_space = spaces.Discrete(self.layout.n_states)
        self.single_action_space = spaces.Discrete(dynamics.N_ACTIONS)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        n = self.num_envs
        self._states: np.ndarray | None = None  # (N,) int64, None until the first reset
        self._elapsed = np.zeros(n, dtype=np.int64)  # steps in the current episode, for truncation
        self._keys: np.ndarray | None = None  # (N,) uint64 slip-stream keys
        self._counters = np.zeros(n, dtype=np.uint64)  # (N,) slip-stream positions

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        seeds = self._per_copy_seeds(seed)
        super().reset(seed=seed if isinstance(seed, (int, np.integer)) else None)
        if self._keys is None:
            self._keys = self.np_random.integers(2**64, size=self.num_envs, dtype=np.uint64)
        for i, s in enumerate(seeds):
            if s is not None:
                # Same key and counter as a single env's reset(seed=s): the streams then agree.
                self._keys[i] = dynamics.key_from_seed(s)[0]
                self._counters[i] = 0
        self._states = np.full(self.num_envs, self.layout.start_state, dtype=np.int64)
        self._elapsed[:] = 0
        return self._states.copy(), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        if self._states is None:
            raise RuntimeError("step() was called before reset(); call envs.reset() first.")
        actions = self._check_actions(actions)
        states, rewards, terminated = dynamics.step(
            self._tables, self._states, actions, self._threshold, self._keys, self._counters
        )
        self._counters += np.uint64(1)
        self._elapsed += 1
        if self.max_episode_steps is None:
            truncated = np.zeros(self.num_envs, dtype=bool)
        else:
            # Like TimeLimit: truncated at the limit even if the same step also terminates.
            truncated = self._elapsed >= self.max_episode_steps
        ended = terminated | truncated
        info: dict[str, Any] = {}
        if ended.any():
            # SAME_STEP autoreset, with the info layout SyncVectorEnv builds in that mode.
            final_obs = np.full(self.num_envs, None, dtype=object)
            final_obs[ended] = states[ended]
            info = {
                "final_obs": final_obs,
                "_final_obs": ended,
                "final_info": {},
                "_final_info": ended.copy(),
            }
            states = np.where(ended, self.layout.start_state, states)
            self._elapsed[ended] = 0
        self._states = states
        return states.copy(), rewards, terminated, truncated, info

    def render(self) -> tuple[Any, ...] | None:
        if self.render_mode is None:
            gym.logger.warn("render() was called without a render_mode; pass render_mode='ansi' or 'rgb_array'.")
            return None
        if self._states is None:
            raise RuntimeError("render() was called before reset(); call envs.reset() first.")
        return tuple(render_frame(self.layout, int(s), self.render_mode, self.cell_px) for s in self._states)

    def to_position(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The cats' rows and columns for a batch of observations."""
        return np.divmod(np.asarray(obs), self.layout.cols)

    def _per_copy_seeds(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        # SyncVectorEnv's convention: an int s seeds copy i with s + i; a list gives each copy its own.
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            return [int(seed) + i for i in range(self.num_envs)]
        if isinstance(seed, Sequence) and len(seed) == self.num_envs:
            return list(seed)
        raise ValueError(f"seed must be None, an int, or a list of {self.num_envs} ints/None, got {seed!r}.")

    def _check_actions(self, actions: Any) -> np.ndarray:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or actions.dtype.kind not in "iu":
            raise ValueError(
                f"actions must be an integer array of shape ({self.num_envs},) with values in {dynamics.ACTIONS_TEXT}, "
                f"got dtype {actions.dtype} and shape {actions.shape}."
            )
        if actions.size and (actions.min() < 0 or actions.max() >= dynamics.N_ACTIONS):
            bad = actions[(actions < 0) | (actions >= dynamics.N_ACTIONS)]
            raise ValueError(f"actions must be in {dynamics.ACTIONS_TEXT}, got {bad[:5].tolist()}.")
        return actions.astype(np.int64, copy=False)
