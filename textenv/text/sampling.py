"""The sampling distribution: one place that turns next-token logits into what is sampled and scored.

The env and the agent share one ``SamplingConfig`` (the agent reads ``env.sampling``), so the token
probabilities the KL penalty and the PPO ratio are computed from are the ones the tokens were drawn from.

Policy:    ``sampling_logits(logits)``  = temperature, then top-k, then top-p (masked entries set to ``-inf``).
Reference: ``reference_logits(logits)`` = the same temperature, but NO top-k / top-p. Truncating the reference
as well would give ``-inf`` reference log-probabilities to tokens the policy can still sample once it has
drifted (its top-k is no longer the reference's top-k), and the KL would be infinite. Scaling both by the
same temperature compares the two models on the same footing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rlcore.checks import check_int


MIN_TEMPERATURE = 1e-4
"""The lowest temperature. Logits are divided by it in float32: at 1e-40 logits of ~10 become 1e41 > 3.4e38,
inf, and log_softmax gives NaN. At 1e-4 they stay near 1e5 and sampling is already greedy for any gap
between two logits above ~1e-3, so nothing lower is needed."""


@dataclass(frozen=True)
class SamplingConfig:
    """How next-token logits become the sampling distribution."""

    temperature: float = 1.0
    """Logits are divided by this (>= MIN_TEMPERATURE = 1e-4). Applied to the policy and the reference alike."""
    top_k: int = 0
    """Keep only the k most likely tokens (0: keep all). Policy only."""
    top_p: float = 1.0
    """Keep the smallest set of most likely tokens whose probability reaches top_p (1.0: keep all). Policy only."""

    def __post_init__(self) -> None:
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)):
            raise TypeError(f"temperature must be a number, got {type(self.temperature).__name__}")
        if not (math.isfinite(self.temperature) and self.temperature >= MIN_TEMPERATURE):
            raise ValueError(
                f"temperature must be a finite number > 0 and at least {MIN_TEMPERATURE:g} (lower ones overflow the "
                f"float32 logits / temperature to inf and the log-probabilities to NaN), got {self.temperature}"
            )
        # Numpy integers are ints here as everywhere at the env's boundary (rlcore.checks); kept as a Python int.
        object.__setattr__(self, "top_k", check_int("top_k (0 disables it)", self.top_k, low=0))
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)):
            raise TypeError(f"top_p must be a number in (0, 1], got {type(self.top_p).__name__}")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1] (1.0 disables it), got {self.top_p}")

    def sampling_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Policy logits -> logits of the sampling distribution.

        Args:
            logits: ``(..., V)`` raw next-token logits.

        Returns:
            ``(..., V)`` float32 logits, ``-inf`` where top-k / top-p removed a token. At least one
            token (the most likely) always survives.
        """
        out = logits.float() / self.temperature  # (..., V)
        vocab = out.shape[-1]
        if 0 < self.top_k < vocab:
            kth = torch.topk(out, self.top_k, dim=-1).values[..., -1:]  # (..., 1)
            out = out.masked_fill(out < kth, float("-inf"))
        if self.top_p < 1.0:
            sorted_logits, order = torch.sort(out, dim=-1, descending=True)  # (..., V)
            probs = torch.softmax(sorted_logits, dim=-1)
            # Probability mass strictly before each token; drop a token once the mass before it reaches top_p.
            mass_before = torch.cumsum(probs, dim=-1) - probs
            drop_sorted = mass_before >= self.top_p
            drop_sorted[..., 0] = False
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            out = out.masked_fill(drop, float("-inf"))
        return out

    @property
    def is_temperature_only(self) -> bool:
        """No top-k / top-p: ``sampling_logits`` and ``reference_logits`` are the same function."""
        return self.top_k == 0 and self.top_p >= 1.0

    def reference_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Reference logits -> the reference distribution the KL is measured against (temperature only).

        Args:
            logits: ``(..., V)`` raw reference logits.

        Returns:
            ``(..., V)`` float32 logits.
        """
        return logits.float() / self.temperature

    def sample(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw one token per row from ``sampling_logits(logits)``.

        Args:
            logits: ``(N, V)`` raw policy logits.
            generator: the random source of the draw (None: torch's global one).

        Returns:
            ``(N,)`` int64 token ids.
        """
        probs = torch.softmax(self.sampling_logits(logits), dim=-1)  # (N, V)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def check_logits(logits: torch.Tensor, shape: tuple, who: str) -> None:
    """Refuse next-token logits that are no distribution: a wrong shape, NaN, +inf, or a row with no finite
    entry. ``-inf`` alone is fine: it rules a token out (top-k does the same)."""
    if tuple(logits.shape) != tuple(shape):
        raise ValueError(f"{who} returned logits of shape {tuple(logits.shape)}; expected {tuple(shape)}")
    if bool(torch.isfinite(logits.sum(-1)).all()):
        return  # a finite sum: every entry is finite (the common case, one cheap reduction per step)
    finite = torch.isfinite(logits)
    ok = (finite | torch.isneginf(logits)).all(-1) & finite.any(-1)  # (N,)
    if not bool(ok.all()):
        i = int((~ok).nonzero()[0])
        first = [round(float(x), 4) for x in logits[i, :6]]
        raise ValueError(
            f"{who} returned unusable next-token logits in row {i} (NaN, +inf or no finite entry; the first are {first}): "
            f"there is no distribution to score the action with, so the step was not taken"
        )
