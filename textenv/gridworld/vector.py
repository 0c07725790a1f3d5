"""GridWorldVectorEnv: N cats stepped together with numpy, the natively batched twin of GridWorldEnv."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from rlcore.checks import check_int, check_options, check_row_seeds, describe
from textenv.gridworld import dynamics
from textenv.gridworld.dynamics import Rewards
from textenv.gridworld.env import check_cell_px
from textenv.gridworld.layout import Layout, as_layout
from textenv.gridworld.render import RENDER_MODES, check_render_mode, render_frame


# Far above any useful batch, low enough to fail with a clear message instead of a MemoryError
# (a step holds about 100 bytes per copy: 2**24 copies is about 1.7 GB).
MAX_NUM_ENVS = 2**24


class GridWorldVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` copies of :class:`~textenv.gridworld.env.GridWorldEnv` in numpy arrays.

    Behaves exactly like ``SyncVectorEnv`` over ``gym.make("GridWorld-v0")`` copies in
    ``AutoresetMode.SAME_STEP`` with the same seeds and actions, slips included: ``reset(seed=s)``
    seeds copy ``i`` as a single env's ``reset(seed=s + i)``, and ``step`` returns the next episode's
    first observation for copies that ended, with the last one in ``info["final_obs"]`` (an object
    array, ``None`` where nothing ended; mask ``info["_final_obs"]``) and its (empty) info dict in
    ``info["final_info"]`` (mask ``info["_final_info"]``). Steps where nothing ended return ``{}``.

    ``reset(seed=..., options=...)`` follows ``SyncVectorEnv``: ``seed`` is ``None``, a non-negative
    int ``s`` (copy ``i`` gets ``s + i``) or a sequence of N non-negative ints or ``None``;
    ``options={"reset_mask": mask}`` with ``mask`` a bool array of shape (N,) resets only the copies
    where it is True (the others keep their state and ignore their seed) and returns every copy's
    observation. Every call either completes or raises before changing anything.

    Args:
        num_envs: number of copies N, an int in [1, ``MAX_NUM_ENVS``].
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
        self.num_envs = check_int("num_envs", num_envs, low=1, high=MAX_NUM_ENVS)
        self.render_mode = check_render_mode(render_mode)
        self.layout = as_layout(layout)
        self.rewards = dynamics.as_rewards(rewards)
        self.slip_prob = dynamics.check_slip_prob(slip_prob)
        self.cell_px = check_cell_px(cell_px)
        self.max_episode_steps = (
            None if max_episode_steps is None else check_int("max_episode_steps", max_episode_steps, low=1)
        )
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
        # Validate everything before changing anything, so a refused reset leaves every copy as it was.
        seeds = check_row_seeds(seed, self.num_envs)  # all checked before any copy is reseeded
        mask = self._reset_mask(options)  # (N,) bool
        # An int seed also reseeds np_random (which draws the keys of never-seeded copies), as VectorEnv does.
        super().reset(seed=seeds[0] if isinstance(seed, (int, np.integer)) else None)
        if self._keys is None:
            self._keys = self.np_random.integers(2**64, size=self.num_envs, dtype=np.uint64)
        for i, s in enumerate(seeds):
            if mask[i] and s is not None:
                # Same key and counter as a single env's reset(seed=s): the streams then agree.
                self._keys[i] = dynamics.key_from_seed(s)[0]
                self._counters[i] = 0
        states = np.full(self.num_envs, self.layout.start_state, dtype=np.int64)
        if self._states is not None:
            states = np.where(mask, states, self._states)  # unmasked copies carry on where they are
        self._states = states
        self._elapsed[mask] = 0
        # SyncVectorEnv merges the reset copies' infos; a single env's reset info is empty.
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

    def _reset_mask(self, options: Any) -> np.ndarray:
        """Which copies reset: options["reset_mask"] checked as SyncVectorEnv checks it, else all."""
        options = check_options(options, known=("reset_mask",))
        if "reset_mask" not in options:
            return np.ones(self.num_envs, dtype=bool)
        mask = options["reset_mask"]
        expected = f"a numpy bool array of shape ({self.num_envs},)"
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
            dtype = f" of dtype {mask.dtype}" if isinstance(mask, np.ndarray) else ""
            raise TypeError(f"options['reset_mask'] must be {expected}, got {describe(mask)}{dtype}.")
        if mask.shape != (self.num_envs,):
            raise ValueError(f"options['reset_mask'] must be {expected}, got shape {mask.shape}.")
        if not mask.any():
            raise ValueError("options['reset_mask'] must select at least one copy, got all False.")
        if self._states is None and not mask.all():
            # The unmasked copies would have no state to carry on from.
            raise RuntimeError(
                "reset() with a partial reset_mask was called before the first full reset; call envs.reset() first."
            )
        return mask.copy()

    def _check_actions(self, actions: Any) -> np.ndarray:
        expected = f"an integer array of shape ({self.num_envs},) with values in {dynamics.ACTIONS_TEXT}"
        try:
            array = np.asarray(actions)
        except (TypeError, ValueError, OverflowError) as err:  # ragged nesting, odd objects
            raise ValueError(f"actions must be {expected}, got {describe(actions)}, which is not one array.") from err
        if array.shape != (self.num_envs,) or array.dtype.kind not in "iu":
            # Floats, bools and strings are refused rather than cast: 1.7 or True is not a direction.
            raise ValueError(f"actions must be {expected}, got dtype {array.dtype} and shape {array.shape}.")
        outside = (array < 0) | (array >= dynamics.N_ACTIONS)
        if outside.any():
            raise ValueError(f"actions must be in {dynamics.ACTIONS_TEXT}, got {array[outside][:5].tolist()}.")
        return array.astype(np.int64, copy=False)
