"""GridWorldEnv: the lectures' cat grid as a single Gymnasium environment."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlcore.checks import check_int, check_options, check_seed
from textenv.gridworld import dynamics
from textenv.gridworld.dynamics import Rewards
from textenv.gridworld.layout import Layout, as_layout
from textenv.gridworld.render import RENDER_MODES, check_render_mode, render_frame


class GridWorldEnv(gym.Env[int, int]):
    """A cat walks a grid to the meat, avoiding the bathtub (and, if it can, the broom).

    ## Description
    The gridworld of the lectures. On the default 5x5 grid the cat starts in the top-left corner
    (0, 0), a broom lies next to it at (0, 1), a bathtub sits at (3, 2) and the meat waits in the
    bottom-right corner (4, 4). Positions are (row, col) with row 0 at the top. Any layout can be
    given as an ASCII map (see ``textenv.gridworld.layout``). With ``slip_prob > 0`` the cat is the
    lectures' "drunk cat": each move goes, with that probability, in one of the three *other*
    directions chosen uniformly.

    ## Action Space
    ``Discrete(4)``:

    - 0: up (row - 1)
    - 1: down (row + 1)
    - 2: left (col - 1)
    - 3: right (col + 1)

    ## Observation Space
    ``Discrete(rows * cols)``: the cat's cell as ``row * cols + col`` (for the default grid the
    start is 0 and the meat 24). The position is the whole (Markov) state. ``env.to_position(obs)``
    gives back ``(row, col)``; learning code usually one-hot encodes the index.

    ## Rewards
    Paid for the cell the cat moves into (defaults, configurable with ``rewards``):

    - empty cell: 0
    - broom: -1 (the cat stands on it; the episode goes on)
    - bathtub: -10 (episode terminates)
    - meat: +100 (episode terminates)
    - off the grid or into a wall ``#``: 0, and the cat stays where it is

    On the default grid the best undiscounted return is +100, in 8 steps that avoid both the broom
    and the bathtub (e.g. down 4 times, then right 4 times); see ``textenv.gridworld.solve``.

    ## Starting State
    The cat starts on the map's ``C`` cell, (0, 0) on the default grid. The start is deterministic.

    ## Episode End
    Termination: the cat moves into the bathtub or onto the meat.
    Truncation: after ``max_episode_steps`` steps (100 for ``GridWorld-v0``), applied by
    ``gym.make``'s ``TimeLimit``; the raw env never truncates.
    A step after termination (or before the first reset) raises ``RuntimeError``. A step after
    truncation is not caught: ``TimeLimit`` owns the limit and the raw env never sees it, so call
    ``reset()`` whenever ``truncated`` is True.

    ## Information
    ``reset`` and ``step`` return an empty dict: everything there is to know is in the observation.

    ## Arguments
    ```python
    import gymnasium as gym
    import textenv  # registers the env (or use the id "textenv:GridWorld-v0")

    env = gym.make("GridWorld-v0", render_mode="ansi", layout=None, slip_prob=0.0, rewards=None)
    envs = gym.make_vec("GridWorld-v0", num_envs=4096, vectorization_mode="vector_entry_point")
    ```

    - ``render_mode``: ``None``, ``"ansi"`` (the grid as text) or ``"rgb_array"`` (an image).
    - ``layout``: a ``Layout``, an ASCII map (a string or a list of row strings), or ``None`` for
      the default grid.
    - ``slip_prob``: probability in [0, 1] that a move goes in a uniformly random other direction.
    - ``rewards``: a ``Rewards`` (or a dict of its fields: empty, broom, bathtub, meat, bump).
    - ``cell_px``: the side of one cell in pixels for ``"rgb_array"``, an int in
      [``MIN_CELL_PX``, ``MAX_CELL_PX``] = [2, 256].

    ``reset(seed=None, options=None)``: ``seed`` is ``None`` or a non-negative int (numpy integers
    too; bools, floats and strings are refused); ``options`` is ``None`` or an empty mapping, since
    the env has no reset options. Every call either completes or raises before changing anything.

    Slips are drawn from a counter-based stream keyed by the reset seed, so ``GridWorldVectorEnv``
    reproduces N of these envs seeded ``s, s + 1, ...`` exactly.

    ## Version History
    - v0: Initial version.
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 4}

    def __init__(
        self,
        render_mode: str | None = None,
        layout: Layout | str | Sequence[str] | None = None,
        slip_prob: float = 0.0,
        rewards: Rewards | dict | None = None,
        cell_px: int = 32,
    ):
        self.render_mode = check_render_mode(render_mode)
        self.layout = as_layout(layout)
        self.rewards = dynamics.as_rewards(rewards)
        self.slip_prob = dynamics.check_slip_prob(slip_prob)
        self.cell_px = check_cell_px(cell_px)
        self._tables = dynamics.build_tables(self.layout, self.rewards)
        self._threshold = dynamics.slip_threshold(self.slip_prob)

        self.observation_space = spaces.Discrete(self.layout.n_states)
        self.action_space = spaces.Discrete(dynamics.N_ACTIONS)

        self._state: int | None = None  # None until the first reset
        self._ended = False
        self._key: np.ndarray | None = None  # (1,) uint64 slip-stream key, set on (re)seeding
        self._counter = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict]:
        # Validate before anything changes, so a refused reset leaves the env as it was.
        seed = check_seed(seed)
        check_options(options, known=())
        super().reset(seed=seed)
        if seed is not None:
            self._key, self._counter = dynamics.key_from_seed(seed), 0
        elif self._key is None:
            self._key, self._counter = self.np_random.integers(2**64, size=1, dtype=np.uint64), 0
        # Otherwise the slip stream carries on from the last episode, as the vector env's rows do.
        self._state = self.layout.start_state
        self._ended = False
        return self._state, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        if self._state is None:
            raise RuntimeError("step() was called before reset(); call env.reset() first.")
        if self._ended:
            raise RuntimeError("step() was called after the episode terminated; call env.reset() to start a new one.")
        action = check_action(action)
        next_state, reward, terminated = dynamics.step(
            self._tables,
            np.array([self._state], dtype=np.int64),
            np.array([action], dtype=np.int64),
            self._threshold,
            self._key,
            np.array([self._counter], dtype=np.uint64),
        )
        self._counter += 1
        self._state = int(next_state[0])
        self._ended = bool(terminated[0])
        return self._state, float(reward[0]), self._ended, False, {}

    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn(
                "render() was called without a render_mode; pass render_mode='ansi' or 'rgb_array' to the env."
            )
            return None
        if self._state is None:
            raise RuntimeError("render() was called before reset(); call env.reset() first.")
        return render_frame(self.layout, self._state, self.render_mode, self.cell_px)

    def to_position(self, obs: int) -> tuple[int, int]:
        """The cat's (row, col) for an observation."""
        return self.layout.to_position(obs)


# Boundary checks, shared with GridWorldVectorEnv. Each refuses silent coercion (a bool is not a
# count, 1.0 is not a seed) and raises naming the argument, what it got and what was expected.

MIN_CELL_PX, MAX_CELL_PX = 2, 256  # below 2 a cell is all grid line; above 256 a 5x5 frame is 20 MB


def check_cell_px(cell_px: Any) -> int:
    """Validate the rgb_array cell size at construction rather than at the first render."""
    return check_int("cell_px", cell_px, low=MIN_CELL_PX, high=MAX_CELL_PX)


def check_action(action: Any) -> int:
    """Return the action as an int, or raise saying what was wrong with it."""
    if isinstance(action, np.ndarray) and action.shape in ((), (1,)):
        action = action.reshape(())[()]  # 0-d or 1-element integer arrays are accepted
    if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
        raise TypeError(
            f"The action must be an integer in {dynamics.ACTIONS_TEXT}, got {type(action).__name__} {action!r}."
        )
    if not 0 <= action < dynamics.N_ACTIONS:
        raise ValueError(f"The action must be in {dynamics.ACTIONS_TEXT}, got {action}.")
    return int(action)
