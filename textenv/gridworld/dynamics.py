"""The cat's transition, written once and batched: the single env calls it with a batch of one.

The deterministic part is precomputed into flat tables indexed by ``state * 4 + direction``, so a
step of N cats is three gathers. The "drunk cat" slip needs randomness that is the same whether a
cat lives alone or in row i of a vector env; a counter-based stream gives that without a Python
loop: every cat owns a 64-bit key (from its seed) and a step counter, and its uniform numbers are
SplitMix64 (Steele, Lea & Flood 2014) of ``key + counter * golden_gamma``, i.e. the counter-th
output of a SplitMix64 generator seeded with the key.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass, fields

import numpy as np

from textenv.gridworld.layout import BATHTUB, BROOM, MEAT, WALL, Layout

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
N_ACTIONS = 4
ACTION_NAMES = ("up", "down", "left", "right")
ACTIONS_TEXT = "{0, 1, 2, 3} (0 up, 1 down, 2 left, 3 right)"  # for error messages
# (d_row, d_col) per action; row 0 is the top of the grid.
MOVES = np.array([(-1, 0), (1, 0), (0, -1), (0, 1)], dtype=np.int64)

_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)
_U30, _U27, _U31, _U32 = (np.uint64(s) for s in (30, 27, 31, 32))


@dataclass(frozen=True)
class Rewards:
    """What each kind of move pays. Passed to the envs as a Rewards or a dict of these fields."""

    empty: float = 0.0
    """Moving onto an empty cell (the start cell included)."""
    broom: float = -1.0
    """Moving onto the broom; the cat stands on it and the episode goes on."""
    bathtub: float = -10.0
    """Moving into the bathtub; the episode terminates."""
    meat: float = 100.0
    """Moving onto the meat; the episode terminates."""
    bump: float = 0.0
    """A move off the grid or into a wall; the cat stays where it is."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not is_real(value):
                got = f"{type(value).__name__} {reprlib.repr(value)}"
                raise TypeError(f"Rewards.{f.name} must be a finite number, got {got}.")
            if not is_finite(value):
                raise ValueError(f"Rewards.{f.name} must be a finite number, got {reprlib.repr(value)}.")


def is_finite(value: int | float) -> bool:
    """math.isfinite, but False rather than OverflowError for ints beyond float range (10**400)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def is_real(value: object) -> bool:
    """Whether value is a real number: Python or numpy ints and floats, but not bools or complex."""
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))


def as_rewards(rewards: Rewards | dict | None) -> Rewards:
    """Accept a Rewards, a dict of its fields, or None (the lectures' values)."""
    if rewards is None:
        return Rewards()
    if isinstance(rewards, Rewards):
        return rewards
    if isinstance(rewards, dict):
        known = {f.name for f in fields(Rewards)}
        unknown = [key for key in rewards if key not in known]
        if unknown:
            # repr-sorted: the keys may be of mixed types that do not compare.
            raise ValueError(f"Unknown reward keys {sorted(unknown, key=repr)}; expected a subset of {sorted(known)}.")
        return Rewards(**rewards)
    raise TypeError(f"rewards must be a Rewards, a dict or None, got {type(rewards).__name__} {reprlib.repr(rewards)}.")


@dataclass(frozen=True, eq=False)
class Tables:
    """The deterministic transition as flat tables indexed by ``state * 4 + direction``."""

    next_state: np.ndarray
    """(S * 4,) int64: where the cat lands."""
    reward: np.ndarray
    """(S * 4,) float64: what the move pays."""
    terminated: np.ndarray
    """(S * 4,) bool: whether the move ends the episode (bathtub or meat)."""


def build_tables(layout: Layout, rewards: Rewards) -> Tables:
    """Precompute the deterministic move from every cell in every direction."""
    pay = {BROOM: rewards.broom, BATHTUB: rewards.bathtub, MEAT: rewards.meat}
    n = layout.n_states * N_ACTIONS
    next_state = np.empty(n, dtype=np.int64)
    reward = np.empty(n, dtype=np.float64)
    terminated = np.zeros(n, dtype=bool)
    for state in range(layout.n_states):
        row, col = layout.to_position(state)
        for action, (dr, dc) in enumerate(MOVES.tolist()):
            r, c = row + dr, col + dc
            i = state * N_ACTIONS + action
            if not (0 <= r < layout.rows and 0 <= c < layout.cols) or layout.cells[r, c] == WALL:
                next_state[i], reward[i] = state, rewards.bump
                continue
            code = int(layout.cells[r, c])
            next_state[i] = layout.to_state(r, c)
            reward[i] = pay.get(code, rewards.empty)
            terminated[i] = code in (BATHTUB, MEAT)
    for table in (next_state, reward, terminated):
        table.setflags(write=False)
    return Tables(next_state=next_state, reward=reward, terminated=terminated)


def check_slip_prob(slip_prob: float) -> float:
    """Validate slip_prob and return it as a float."""
    if not is_real(slip_prob):
        got = f"{type(slip_prob).__name__} {reprlib.repr(slip_prob)}"
        raise TypeError(f"slip_prob must be a number in [0, 1], got {got}.")
    if not 0.0 <= slip_prob <= 1.0:  # also rejects NaN; no float() first, 10**400 would overflow it
        raise ValueError(f"slip_prob must be in [0, 1], got {reprlib.repr(slip_prob)}.")
    return float(slip_prob)


def slip_threshold(slip_prob: float) -> np.uint64:
    """slip_prob as a 32-bit threshold: a step slips when the high 32 random bits fall below it.

    Exact at 0 and 1; otherwise slip_prob is rounded to a multiple of 2**-32.
    """
    return np.uint64(round(check_slip_prob(slip_prob) * 2**32))


def key_from_seed(seeds: np.ndarray | int) -> np.ndarray:
    """The per-cat stream key for integer seed(s): SplitMix64's finaliser, a bijection on uint64."""
    # int() first: numpy integers would overflow in `% 2**64`; Python ints of any size reduce fine.
    reduced = [int(s) % 2**64 for s in np.asarray(seeds, dtype=object).reshape(-1)]
    return splitmix64(np.array(reduced, dtype=np.uint64))


def splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on a uint64 array (wraps modulo 2**64, as it should)."""
    z = (z ^ (z >> _U30)) * _MIX1
    z = (z ^ (z >> _U27)) * _MIX2
    return z ^ (z >> _U31)


def step(
    tables: Tables,
    states: np.ndarray,
    actions: np.ndarray,
    threshold: np.uint64,
    keys: np.ndarray,
    counters: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Move N cats one step.

    Args:
        tables: from :func:`build_tables`.
        states: (N,) int64 current observations.
        actions: (N,) int64 intended directions in {0, 1, 2, 3}, already validated.
        threshold: from :func:`slip_threshold`.
        keys, counters: (N,) uint64 random-stream keys and this step's counters (the caller advances them).

    Returns:
        next_states (N,) int64, rewards (N,) float64, terminated (N,) bool.
    """
    direction = actions
    if threshold:
        bits = splitmix64(keys + counters * _GOLDEN_GAMMA)  # (N,) uint64
        slipped = (bits >> _U32) < threshold
        # Low 32 bits pick one of the 3 other directions uniformly: other = k, skipping the intended one.
        k = (((bits & _LOW32) * np.uint64(3)) >> _U32).astype(np.int64)
        direction = np.where(slipped, k + (k >= actions), actions)
    index = states * N_ACTIONS + direction
    return tables.next_state[index], tables.reward[index], tables.terminated[index]
