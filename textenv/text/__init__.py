"""Text generation as reinforcement learning: the TextGen-v0 environment and its pieces.

- ``config``: ``TextGenConfig``, every setting of the task (one frozen dataclass).
- ``sampling``: ``SamplingConfig``, the one place logits become the sampling distribution.
- ``decoding``: ``IncrementalLM``, KV-cached next-token logits for left-padded batches.
- ``rewards``: reward specs -> ``RewardFn``.
- ``core``: the batched transition both envs drive.
- ``env`` / ``vector``: ``TextGenEnv`` and its natively batched twin ``TextGenVectorEnv``.

Submodules are imported lazily so that ``import textenv.text.sampling`` does not load transformers. The KL
estimators are in ``rlcore.kl`` (the agents' losses use them too).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SamplingConfig": "textenv.text.sampling",
    "TextGenConfig": "textenv.text.config",
    "IncrementalLM": "textenv.text.decoding",
    "LMStep": "textenv.text.decoding",
    "make_reward_fn": "textenv.text.rewards",
    "RewardFn": "textenv.text.rewards",
    "TextGenEnv": "textenv.text.env",
    "TextGenVectorEnv": "textenv.text.vector",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'textenv.text' has no attribute {name!r}")
