"""The one PPO update every agent here runs (agents.PPO on any env, agents.rlhf.train_rlhf on text), and the
learning-rate schedule both use. The update is written once: epochs of minibatch steps on the lectures'
loss, gradient clipping, the optional early stop, and (under torchrun) the collectives of agents.distributed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Iterable

import torch

from agents import distributed as D
from agents import functional as F

if TYPE_CHECKING:
    from agents.ppo import PPOConfig


def learning_rate_at(cfg: PPOConfig, iteration: int, n_iterations: int) -> float:
    """The step size of iteration ``iteration`` (0-based) of ``n_iterations``: ``cfg.learning_rate``, decayed
    linearly to 0 over the iterations when ``cfg.anneal_lr`` (CleanRL's schedule; TRL's linear one)."""
    if not cfg.anneal_lr:
        return cfg.learning_rate
    return cfg.learning_rate * (1.0 - iteration / n_iterations)


def ppo_update(policy: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: PPOConfig, batch: dict,
               minibatches: Callable[[], Iterable[torch.Tensor]], score: Callable, where: str,
               kl_coef: float = 0.0) -> dict[str, float]:
    """The PPO update every agent here runs: ``cfg.n_epochs`` passes of minibatch steps on the lectures'
    loss L = L_POLICY + c1 L_VF - c2 H, with gradient clipping and the optional early stop at ``target_kl``.

    Args:
        policy: the module whose parameters ``optimizer`` steps (and whose gradients are clipped).
        optimizer: steps once per minibatch.
        cfg: the loss coefficients, clipping, epochs, advantage whitening and ``target_kl``.
        batch: tensors of one shape, indexed along dim 0 by the minibatches: ``logprobs`` and ``values`` of
            the rollout, ``advantages``, ``returns`` and ``mask`` (1 where a step counts). The gridworld
            passes flat (T*N,) steps; the RLHF loop (B, T) responses, one row per response.
        minibatches: called once per epoch; yields index tensors into dim 0 of the batch.
        score: ``score(index) -> (logprob, entropy, values)`` of the current policy, shaped like
            ``batch["logprobs"][index]``.
        where: what the error message calls this update ("iteration 7").
        kl_coef: beta of GRPO's KL term: > 0 adds ``kl_coef * F.kl_loss`` against ``batch["ref_logprobs"]``
            (the reference's log-probs of the taken actions) to the loss, and reports it as ``kl_loss``.

    Returns:
        the mean over minibatch steps of policy_loss, value_loss, entropy, grad_norm, clip_fraction,
        approx_kl and ratio, plus ``epochs`` (the passes done).

    Raises:
        FloatingPointError: a minibatch's loss is NaN or infinite (on any rank), before any weight moves.
    """
    advantages, mask = batch["advantages"], batch["mask"]
    if cfg.norm_adv and cfg.norm_adv_over == "batch":
        advantages = D.masked_whiten(advantages, mask)
    whiten_per_minibatch = cfg.norm_adv and cfg.norm_adv_over == "minibatch"
    sums: dict[str, float] = {}
    n_updates, epoch, stop = 0, 0, False
    for epoch in range(cfg.n_epochs):
        for mb in minibatches():
            mb_mask = mask[mb]
            # Under torchrun minibatch k is the union of every rank's k-th minibatch: its tokens are counted
            # over all ranks, so every decision below (skip, whiten, weigh, stop) is the same on each rank.
            weight, n_tokens, whitened = D.count_and_whiten(mb_mask, advantages[mb] if whiten_per_minibatch else None)
            if n_tokens == 0:
                continue
            mb_adv = whitened if whiten_per_minibatch else advantages[mb]
            loss, terms, info = _minibatch_loss(cfg, batch, mb, mb_mask, mb_adv, score, kl_coef)
            step_metrics = _minibatch_step(policy, optimizer, cfg, loss, terms, info, weight, mb_mask, n_tokens,
                                           f"{where}, epoch {epoch}")
            for k, v in step_metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            n_updates += 1
            if cfg.target_kl is not None and step_metrics["approx_kl"] > cfg.target_kl:
                stop = True
                break
        if stop:
            break
    metrics = {k: v / max(n_updates, 1) for k, v in sums.items()}
    metrics["epochs"] = epoch + 1
    return metrics


def _minibatch_loss(cfg: PPOConfig, batch: dict, mb: torch.Tensor, mb_mask: torch.Tensor, mb_adv: torch.Tensor,
                    score: Callable, kl_coef: float) -> tuple:
    """The lectures' loss on minibatch ``mb``: L = L_POLICY + c1 L_VF - c2 H (+ beta KL to the reference).

    Args:
        mb: index tensor into dim 0 of ``batch``; ``mb_mask`` is ``batch["mask"][mb]``.
        mb_adv: the minibatch's advantages, whitened as ``cfg`` asks.
        cfg, batch, score, kl_coef: as in ``ppo_update``.

    Returns:
        ``(loss, terms, info)``: the scalar loss; its terms ``policy_loss``, ``value_loss`` and ``entropy``
        (scalar tensors); and ``F.policy_loss``'s detached diagnostics, plus ``kl_loss`` with the KL term.
    """
    logprob, entropy, value = score(mb)
    pg_loss, info = F.policy_loss(logprob, batch["logprobs"][mb], mb_adv, cfg.clip_coef, mb_mask)
    v_loss = F.value_loss(value, batch["values"][mb], batch["returns"][mb],
                          cfg.clip_coef if cfg.clip_vloss else None, mb_mask)
    ent = F.masked_mean(entropy, mb_mask)
    loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * ent
    if kl_coef > 0:
        ref_kl = F.kl_loss(logprob, batch["ref_logprobs"][mb], mb_mask)
        loss = loss + kl_coef * ref_kl
        info = {**info, "kl_loss": ref_kl.detach()}
    return loss, {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": ent}, info


def _minibatch_step(policy: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: PPOConfig,
                    loss: torch.Tensor, terms: dict, info: dict, weight: torch.Tensor, mb_mask: torch.Tensor,
                    n_tokens: torch.Tensor, where: str) -> dict[str, float]:
    """Backpropagate ``loss``, average the gradients over the ranks, clip them and step the optimizer.

    Args:
        terms, info: the loss's terms and diagnostics from ``_minibatch_loss``.
        weight: this rank's loss weight (its share of all ranks' tokens, ``D.count_and_whiten``).
        mb_mask: this rank's minibatch mask; ``n_tokens`` counts all ranks' masked tokens.
        where: what the error message calls this step ("iteration 7, epoch 0").

    Returns:
        This step's policy_loss, value_loss, entropy, grad_norm and diagnostics, averaged over all ranks' tokens.

    Raises:
        FloatingPointError: the loss is NaN or infinite on some rank (checked before any weight moves).
    """
    optimizer.zero_grad(set_to_none=True)
    (loss * weight.to(loss.dtype) if D.world().size > 1 else loss).backward()
    # the gradients averaged over the ranks and the loss terms over all their tokens, in one collective
    averaged = D.average_gradients(
        policy.parameters(), {"loss": loss.item(), **{k: v.item() for k, v in terms.items()},
                              **{k: v.item() for k, v in info.items()}},
        float(mb_mask.sum()), float(n_tokens))
    if not math.isfinite(averaged.pop("loss")):  # the same verdict on every rank, before any weight moves
        raise FloatingPointError(
            f"PPO loss became {loss.item()} at {where} (policy {terms['policy_loss'].item()}, value "
            f"{terms['value_loss'].item()}, entropy {terms['entropy'].item()}): check the rewards for NaN/inf or "
            "lower the learning rate"
        )
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
    optimizer.step()
    step_metrics = {k: averaged[k] for k in ("policy_loss", "value_loss", "entropy")}
    step_metrics["grad_norm"] = float(grad_norm)
    step_metrics.update((k, averaged[k]) for k in info)
    return step_metrics
