"""KL coefficient controllers for the RLHF penalty: fixed, or the adaptive controller of Ziegler et al. 2019.

Both expose ``value`` (the current beta), ``update(current_kl, n_episodes) -> beta`` after each iteration, and
``state_dict`` / ``load_state_dict`` for checkpoints.
"""

from __future__ import annotations

import math

import numpy as np


class FixedKLController:
    """A constant KL coefficient beta."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_episodes: int) -> float:
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Proportional control of beta towards a KL target (Ziegler et al. 2019, section 2.2).

        e = clip(KL / target - 1, -0.2, 0.2);   beta <- beta * (1 + e * n_episodes / horizon)

    Args:
        init_kl_coef: starting beta.
        target: the KL per episode (nats, summed over the response's tokens) to hold.
        horizon: how many episodes (n_episodes summed over updates) a full 20% correction is spread over.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        if not (target > 0 and horizon > 0):
            raise ValueError(f"target and horizon must be > 0, got target={target}, horizon={horizon}")
        self.value, self.target, self.horizon = float(init_kl_coef), float(target), float(horizon)

    def update(self, current_kl: float, n_episodes: int) -> float:
        """Move beta after a batch of ``n_episodes`` episodes (responses) whose mean KL was ``current_kl``;
        returns the new beta."""
        if not math.isfinite(current_kl):
            return self.value  # no finished episode this iteration: nothing to react to
        error = float(np.clip(current_kl / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + error * n_episodes / self.horizon
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.target, self.horizon = (float(state[k]) for k in ("value", "target", "horizon"))
