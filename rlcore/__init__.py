"""rlcore: the small pieces the environments (textenv) and the agents (agents) both use.

- ``rlcore.checks``: the plain argument checks (ints, numbers, flags, seeds, options) behind every clear error.
- ``rlcore.kl``: the per-token KL estimators (pure functions): the env's penalty and GRPO's loss term.
- ``rlcore.device``: ``resolve_device``, the one ``"auto"`` device rule.

It imports nothing from either side, so both depend on it and neither on the other's internals.
"""
