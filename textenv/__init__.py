"""textenv: RLHF as ordinary reinforcement learning.

Importing the package registers two Gymnasium environments:

- ``GridWorld-v0``: the lectures' cat grid (``textenv.gridworld``).
- ``TextGen-v0``: token-level text generation with the RLHF reward (``textenv.text``).

Both also work as ``gym.make("textenv:GridWorld-v0")`` without importing textenv first, and both have a
natively batched twin for ``gym.make_vec(..., vectorization_mode="vector_entry_point")``.
"""

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"


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
        register(
            id="TextGen-v0",
            entry_point="textenv.text.env:TextGenEnv",
            vector_entry_point="textenv.text.vector:TextGenVectorEnv",
        )


_register()
