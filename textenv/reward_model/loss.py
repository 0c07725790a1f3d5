"""The pairwise (Bradley-Terry) reward-model loss.

Lecture slides, "Reward model loss"; InstructGPT; Llama 2 adds the margin:

    loss = mean( -log sigmoid( r(x, y_chosen) - r(x, y_rejected) - margin ) )
"""

from __future__ import annotations

import torch
from torch.nn.functional import logsigmoid


def pairwise_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                  margin: torch.Tensor | float | None = None) -> torch.Tensor:
    """Mean of ``-logsigmoid(chosen - rejected - margin)`` over the batch (shapes (B,)); a scalar.

    Small when the chosen completion out-scores the rejected one by more than ``margin``, large when
    the order is wrong. ``logsigmoid`` rather than ``log(sigmoid(.))`` keeps it finite for big gaps.
    """
    if chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(f"chosen and rejected rewards must have the same shape, got "
                         f"{tuple(chosen_rewards.shape)} and {tuple(rejected_rewards.shape)}")
    diff = chosen_rewards - rejected_rewards
    if margin is not None:
        diff = diff - margin
    return -logsigmoid(diff).mean()
