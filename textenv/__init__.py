"""textenv: RLHF as ordinary reinforcement learning.

Importing the package registers two Gymnasium environments:

- ``GridWorld-v0``: the lectures' cat grid (``textenv.gridworld``).
- ``TextGen-v0``: token-level text generation with the RLHF reward (``textenv.text``).

Both also work as ``gym.make("textenv:GridWorld-v0")`` without importing textenv first, and both have a
natively batched twin for ``gym.make_vec(..., vectorization_mode="vector_entry_point")``. TextGen-v0 is
registered with ``config=textenv.default.env_config()`` (the embedded task); ``gym.make("TextGen-v0", max_new_tokens=8)``
replaces one setting, ``config=TextGenConfig(...)`` all of them (see ``textenv.text.config``). TextGen-v0 also runs
under ``vectorization_mode="async"`` (forked workers: each TextGen env made in a process forked after torch
was imported runs torch on one CPU thread, as torch's thread pool does not survive a fork; see
``textenv.text.loading.fork_safe_threads``) and Stable-Baselines3's ``make_vec_env("TextGen-v0", n_envs=...)``
(``render_mode="rgb_array"``: the text drawn into an image).
"""

import os
import sys

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

forked_after_torch = False
"""True in a process forked after its parent had imported torch (read by ``textenv.text.loading.fork_safe_threads``,
which every TextGen env calls first: torch's CPU thread pool does not survive a fork)."""


def _after_fork_in_child() -> None:
    global forked_after_torch
    forked_after_torch = forked_after_torch or "torch" in sys.modules


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _register() -> None:
    # Idempotent: gym.make("textenv:...") imports this module, which may already be imported.
    if "GridWorld-v0" not in registry:
        register(
            id="GridWorld-v0",
            entry_point="textenv.gridworld.env:GridWorldEnv",
            vector_entry_point="textenv.gridworld.vector:GridWorldVectorEnv",
            max_episode_steps=100,
        )
    if "TextGen-v0" not in registry:
        from textenv.default import env_config

        register(
            id="TextGen-v0",
            entry_point="textenv.text.env:TextGenEnv",
            vector_entry_point="textenv.text.vector:TextGenVectorEnv",
            kwargs={"config": env_config()},  # the embedded default task; keyword arguments replace its settings
        )


_register()
