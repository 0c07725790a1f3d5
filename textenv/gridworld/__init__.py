"""The lectures' cat grid: a cat walks to the meat, avoiding the bathtub and, if it can, the broom.

- ``layout``: ASCII maps -> :class:`Layout`.
- ``dynamics``: the batched transition (:class:`Rewards`, actions 0 up, 1 down, 2 left, 3 right).
- ``env``: :class:`GridWorldEnv`, registered as ``GridWorld-v0``.
- ``vector``: :class:`GridWorldVectorEnv`, its natively batched twin (``vector_entry_point``).
- ``solve``: :func:`value_iteration` and :func:`policy_return`.
- ``render``: text and image frames.
"""

from textenv.gridworld.dynamics import ACTION_NAMES, DOWN, LEFT, RIGHT, UP, Rewards
from textenv.gridworld.env import GridWorldEnv
from textenv.gridworld.layout import DEFAULT_MAP, Layout
from textenv.gridworld.solve import Solution, policy_path, policy_return, value_iteration
from textenv.gridworld.vector import GridWorldVectorEnv

__all__ = [
    "ACTION_NAMES",
    "DEFAULT_MAP",
    "DOWN",
    "LEFT",
    "RIGHT",
    "UP",
    "GridWorldEnv",
    "GridWorldVectorEnv",
    "Layout",
    "Rewards",
    "Solution",
    "policy_path",
    "policy_return",
    "value_iteration",
]
