"""Per-token KL penalties between the acting policy and the frozen reference (pure functions).

The RLHF reward keeps the policy close to the model it started from (lecture slides, "Reward hacking"):
every generated token pays ``kl_coef * KL_t``. With ``logp = log pi(a_t | s_t)`` and
``ref_logp = log pi_ref(a_t | s_t)`` of the token that was actually sampled from ``pi``:

- ``"k1"``:   ``logp - ref_logp``. Unbiased for KL(pi || pi_ref), high variance, can be negative.
  This is lm-human-preferences' ``-beta * (logp - ref_logp)`` reward.
- ``"abs"``:  ``|logp - ref_logp|``. Biased, never negative.
- ``"k2"``:   ``0.5 * (logp - ref_logp) ** 2``. Biased, low variance, never negative.
- ``"k3"``:   ``(r - 1) - log r`` with ``r = pi_ref / pi = exp(ref_logp - logp)``. Unbiased and never
  negative (J. Schulman, "Approximating KL divergence", 2020).
- ``"full"``: the exact ``KL(pi || pi_ref) = sum_v pi(v) (log pi(v) - log pi_ref(v))`` over the whole
  vocabulary, from the two rows of logits. No sampling noise, one reduction over V per token.
"""

from __future__ import annotations

import torch

ESTIMATORS = ("k1", "abs", "k2", "k3", "full")


def kl_penalty(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    estimator: str = "k1",
    logits: torch.Tensor | None = None,
    ref_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token KL estimate between the policy and the reference.

    Args:
        logp: ``(...)`` log-probability of the sampled token under the policy.
        ref_logp: ``(...)`` log-probability of the same token under the reference.
        estimator: one of ``ESTIMATORS``.
        logits: ``(..., V)`` policy logits of the sampling distribution; needed by ``"full"`` only.
            Entries may be ``-inf`` (tokens removed by top-k / top-p).
        ref_logits: ``(..., V)`` reference logits; needed by ``"full"`` only.

    Returns:
        ``(...)`` the estimate, same shape as ``logp``.
    """
    if estimator == "full":
        if logits is None or ref_logits is None:
            raise ValueError('kl estimator "full" needs logits= and ref_logits= (the two (..., V) rows)')
        return full_kl(logits, ref_logits)
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp and ref_logp must have the same shape, got {tuple(logp.shape)} and {tuple(ref_logp.shape)}")
    log_ratio = logp - ref_logp  # (...) log pi/pi_ref
    if estimator == "k1":
        return log_ratio
    if estimator == "abs":
        return log_ratio.abs()
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    if estimator == "k3":
        # r = pi_ref / pi; (r - 1) - log r >= 0 because log r <= r - 1. expm1 keeps precision near r = 1.
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown kl estimator {estimator!r}; expected one of {ESTIMATORS}")


def full_kl(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """Exact ``KL(softmax(logits) || softmax(ref_logits))`` over the last dimension.

    Args:
        logits: ``(..., V)`` policy logits; ``-inf`` entries have probability 0 and contribute 0.
        ref_logits: ``(..., V)`` reference logits. A token the policy can sample but the reference
            cannot (``-inf``) makes the KL ``inf``, as it should.

    Returns:
        ``(...)`` the KL in nats.
    """
    if logits.shape != ref_logits.shape:
        raise ValueError(f"logits and ref_logits must have the same shape, got {tuple(logits.shape)} and {tuple(ref_logits.shape)}")
    logp = torch.log_softmax(logits.float(), dim=-1)  # (..., V)
    ref_logp = torch.log_softmax(ref_logits.float(), dim=-1)  # (..., V)
    p = logp.exp()
    # 0 * log 0 = 0: masked-out policy tokens must not turn (-inf) - (-inf) into NaN.
    terms = torch.where(p > 0, p * (logp - ref_logp), torch.zeros_like(p))
    return terms.sum(-1)
