"""Exact solutions by value iteration, and the return a given deterministic policy earns.

Bellman optimality (Sutton & Barto 2018, eq. 4.1), with the slip handled exactly: the cat moves in
its intended direction with probability 1 - p and in each of the other three with p / 3, so

    Q(s, a) = sum_d P[a, d] * (r(s, d) + gamma * (1 - done(s, d)) * V(next(s, d)))
    V(s)    = max_a Q(s, a)

The episode limit (100 steps for GridWorld-v0) is ignored: these are infinite-horizon values, which
on the default grid coincide with the limited ones because the best route takes 8 steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from textenv.gridworld import dynamics
from textenv.gridworld.dynamics import N_ACTIONS, Rewards
from textenv.gridworld.layout import BATHTUB, MEAT, WALL, Layout, as_layout

# Tie-breaking discount: among equally good actions prefer the one that ends the episode soonest
# (largest E[beta**T]). Without it, gamma=1 makes "bump into the wall forever" tie with the way home.
_TIE_BETA = 0.99


@dataclass(frozen=True, eq=False)
class Solution:
    """The result of :func:`value_iteration`. Entries for bathtub, meat and wall cells are 0 (never acted in)."""

    layout: Layout
    values: np.ndarray
    """(S,) V*(s), indexed by observation."""
    q_values: np.ndarray
    """(S, 4) Q*(s, a)."""
    policy: np.ndarray
    """(S,) int64 optimal greedy action; ties go to the action that ends the episode soonest."""
    start_return: float
    """V* at the start cell: the optimal expected (discounted) return of an episode."""
    gamma: float
    iterations: int

    @property
    def value_grid(self) -> np.ndarray:
        """V* as a (rows, cols) array, for printing."""
        return self.values.reshape(self.layout.rows, self.layout.cols)


def value_iteration(
    layout: Layout | str | Sequence[str] | None = None,
    rewards: Rewards | dict | None = None,
    slip_prob: float = 0.0,
    gamma: float = 0.99,
    tol: float = 1e-10,
    max_iters: int = 100_000,
) -> Solution:
    """Solve a layout exactly: V*, Q*, an optimal policy and the optimal return from the start.

    Args:
        layout, rewards, slip_prob: as for ``GridWorldEnv``.
        gamma: discount in (0, 1]; 1 gives undiscounted returns (+100 on the default grid).
        tol: stop when no value changes by more than this between sweeps.
        max_iters: give up (RuntimeError) after this many sweeps.
    """
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma!r}.")
    layout = as_layout(layout)
    tables = dynamics.build_tables(layout, dynamics.as_rewards(rewards))
    probs = _direction_probs(dynamics.check_slip_prob(slip_prob))  # (4, 4) P[a, d]
    n = layout.n_states
    next_state = tables.next_state.reshape(n, N_ACTIONS)  # (S, 4) per actual direction d
    reward = tables.reward.reshape(n, N_ACTIONS)
    alive = ~tables.terminated.reshape(n, N_ACTIONS)
    acting = ~np.isin(layout.cells.reshape(-1), (BATHTUB, MEAT, WALL))  # (S,) cells the cat acts in

    values = np.zeros(n)
    for iteration in range(1, max_iters + 1):
        q = (reward + gamma * alive * values[next_state]) @ probs.T  # (S, 4)
        new_values = np.where(acting, q.max(axis=1), 0.0)
        delta = np.abs(new_values - values).max()
        values = new_values
        if delta <= tol:
            break
    else:
        raise RuntimeError(
            f"Value iteration did not converge in {max_iters} sweeps (last change {delta:.3g} > tol={tol}); "
            "with gamma=1 the values can diverge when a loop pays, so try gamma < 1."
        )
    q = np.where(acting[:, None], (reward + gamma * alive * values[next_state]) @ probs.T, 0.0)
    scale = max(1.0, float(np.abs(reward).max()))
    optimal = q >= q.max(axis=1, keepdims=True) - 1e-7 * scale  # (S, 4) actions tied for best
    policy = _fastest_among(optimal, next_state, alive, probs, acting)
    return Solution(
        layout=layout,
        values=values,
        q_values=q,
        policy=policy,
        start_return=float(values[layout.start_state]),
        gamma=gamma,
        iterations=iteration,
    )


def policy_return(
    policy: np.ndarray | Sequence[int] | Callable[[int], int],
    layout: Layout | str | Sequence[str] | None = None,
    rewards: Rewards | dict | None = None,
    gamma: float = 1.0,
    max_steps: int = 100,
) -> float:
    """The (discounted) return of a deterministic policy from the start, without slips.

    Args:
        policy: an (S,) array of actions indexed by observation, or a function observation -> action
            (for instance ``lambda obs: int(agent.predict(obs)[0])``).
        layout, rewards: as for ``GridWorldEnv`` (slip_prob is 0 here).
        gamma: discount; 1 gives the plain sum of rewards.
        max_steps: stop after this many steps, as GridWorld-v0's time limit does.
    """
    return _walk(policy, layout, rewards, gamma, max_steps)[0]


def policy_path(
    policy: np.ndarray | Sequence[int] | Callable[[int], int],
    layout: Layout | str | Sequence[str] | None = None,
    max_steps: int = 100,
) -> list[tuple[int, int]]:
    """The cells (row, col) a deterministic policy visits from the start, start included, without slips."""
    return _walk(policy, layout, None, 1.0, max_steps)[1]


def _walk(policy, layout, rewards, gamma, max_steps) -> tuple[float, list[tuple[int, int]]]:
    layout = as_layout(layout)
    tables = dynamics.build_tables(layout, dynamics.as_rewards(rewards))
    act = policy if callable(policy) else np.asarray(policy).__getitem__
    state, total, discount = layout.start_state, 0.0, 1.0
    path = [layout.start]
    for _ in range(max_steps):
        action = int(act(state))
        if not 0 <= action < N_ACTIONS:
            raise ValueError(f"The policy chose action {action} in state {state}; expected one of {{0, 1, 2, 3}}.")
        i = state * N_ACTIONS + action
        total += discount * float(tables.reward[i])
        discount *= gamma
        state = int(tables.next_state[i])
        path.append(layout.to_position(state))
        if tables.terminated[i]:
            break
    return total, path


def _direction_probs(slip_prob: float) -> np.ndarray:
    """(4, 4) P[a, d]: the chance that intending a moves the cat in direction d."""
    probs = np.full((N_ACTIONS, N_ACTIONS), slip_prob / (N_ACTIONS - 1))
    np.fill_diagonal(probs, 1.0 - slip_prob)
    return probs


def _fastest_among(optimal, next_state, alive, probs, acting, tol=1e-12, max_iters=100_000) -> np.ndarray:
    """Among the tied optimal actions, the one maximising E[beta**T], T the steps to the episode's end."""
    hit = np.zeros(len(acting))
    for _ in range(max_iters):
        h = _TIE_BETA * ((~alive) + alive * hit[next_state]) @ probs.T  # (S, 4)
        h = np.where(optimal, h, -1.0)
        new_hit = np.where(acting, h.max(axis=1), 0.0)
        if np.abs(new_hit - hit).max() <= tol:
            break
        hit = new_hit
    return np.where(acting, h.argmax(axis=1), 0).astype(np.int64)
