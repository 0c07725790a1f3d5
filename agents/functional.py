"""Returns, advantages and losses as pure functions on tensors.

Every function here is stateless, never modifies its inputs, and works on time-major tensors of shape
(T, N) (T steps of N parallel envs) or on flat (B,) batches where noted. ``mask`` (same shape, 1 for
steps that count, 0 for padding or for the step Gymnasium's next-step autoreset spends on a reset) is
optional everywhere. The gridworld agent and the language-model agent call the same functions.

Episode boundaries are given as two flags per step, as Gymnasium returns them:
``terminated`` (the MDP ended: no value after it) and ``ends`` (terminated or truncated: the episode
stops here, so nothing after it is credited to it). On truncation the caller bootstraps from the value of
the last observation through ``next_values``, the value of the state each step led to.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlcore.kl import kl_penalty


def masked_mean(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1 (all entries when mask is None)."""
    if mask is None:
        return x.mean()
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def masked_whiten(x: Tensor, mask: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """(x - mean) / std over the masked entries; masked-out entries come back as 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) / torch.sqrt(var + eps)
    return out if mask is None else out * mask.to(x.dtype)


def episode_returns(rewards: Tensor, ends: Tensor, gamma: float = 1.0, mask: Tensor | None = None) -> Tensor:
    """The whole discounted return R(tau) of its episode, at every step of that episode.

    REINFORCE's first estimator (lecture: "Policy Gradient Optimization") weighs every action of a
    trajectory by R(tau) = sum_t gamma^t r_t, including rewards that came before the action.
    An episode still running at the end of the rollout gets the return of its part so far.

    Args:
        rewards, ends: (T, N). ``ends[t]`` is 1 when the episode stops after step t.
    Returns:
        (T, N): for each step, the discounted return of its episode from its first step.
    """
    to_go = rewards_to_go(rewards, ends, gamma, mask=mask)
    valid = torch.ones_like(rewards, dtype=torch.bool) if mask is None else mask > 0
    out = torch.empty_like(rewards)
    current = torch.zeros_like(rewards[0])
    starting = torch.ones_like(valid[0])  # the next valid step of each column starts an episode
    for t in range(rewards.shape[0]):
        if t > 0:
            starting = starting | (ends[t - 1] > 0)
        # R(tau) is the reward-to-go at the episode's first valid step (a masked reset step is skipped).
        current = torch.where(starting & valid[t], to_go[t], current)
        starting = starting & ~valid[t]
        out[t] = current
    return out if mask is None else out * mask.to(rewards.dtype)


def rewards_to_go(
    rewards: Tensor,
    ends: Tensor,
    gamma: float = 1.0,
    next_values: Tensor | None = None,
    terminated: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """Discounted rewards-to-go G_t = sum_{t' >= t} gamma^(t'-t) r_t' within each episode.

    Lecture: "you can't alter the past": an action is credited only with what came after it.
    With ``next_values`` the sum is bootstrapped where an episode is cut without terminating
    (truncation, or the end of the rollout): G_t = r_t + gamma * V(s_{t+1}) there.

    Args:
        rewards, ends: (T, N).
        next_values: (T, N) value of the state each step led to; None means no bootstrap.
        terminated: (T, N); defaults to ``ends`` (no bootstrap at any episode end).
    Returns:
        (T, N) rewards-to-go.
    """
    dtype = rewards.dtype
    terminated = ends if terminated is None else terminated
    not_end = 1.0 - ends.to(dtype)
    bootstrap = torch.zeros_like(rewards) if next_values is None else next_values * (1.0 - terminated.to(dtype))
    mask_ = torch.ones_like(rewards) if mask is None else mask.to(dtype)
    out = torch.zeros_like(rewards)
    future = bootstrap[-1]  # what lies beyond the rollout's last step
    for t in reversed(range(rewards.shape[0])):
        # Where an episode ends, its future is the bootstrap value (0 when terminated), not the next episode.
        future = torch.where(not_end[t] > 0, future, bootstrap[t])
        # A masked step (padding, an autoreset step) is skipped: the future passes through it.
        future = torch.where(mask_[t] > 0, rewards[t] + gamma * future, future)
        out[t] = future
    return out * mask_


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    ends: Tensor,
    gamma: float,
    lam: float,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Generalised Advantage Estimation (Schulman et al. 2016, eq. 16; lecture slide "GAE").

    delta_t = r_t + gamma * V(s_{t+1}) * (1 - terminated_t) - V(s_t)
    A_t     = delta_t + gamma * lam * (1 - ends_t) * A_{t+1}

    Args:
        rewards, values, next_values, terminated, ends: (T, N). ``next_values[t]`` is the value of the
            state step t led to (the last observation of the episode when it was truncated, the
            observation after the rollout for its last step).
        mask: (T, N), optional. Masked steps get advantage 0 and cut the recursion.
    Returns:
        advantages (T, N), returns (T, N) = advantages + values (the value-function targets).
    """
    dtype = rewards.dtype
    not_term = 1.0 - terminated.to(dtype)
    not_end = 1.0 - ends.to(dtype)
    if mask is not None:
        not_end = not_end * mask.to(dtype)
    deltas = rewards + gamma * next_values * not_term - values
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        last = deltas[t] + gamma * lam * not_end[t] * last
        if mask is not None:
            last = last * mask[t].to(dtype)
        advantages[t] = last
    return advantages, advantages + values


def response_gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """GAE over whole responses, one row each (the RLHF rollout's layout): ``gae`` with every response ending,
    terminated, at its last token, so nothing is bootstrapped past it and no rollout cuts a response.

    Args:
        rewards, values, mask: (B, T), row i holding response i's tokens; ``mask`` is 1 on the generated tokens
            (a prefix of each row: a response ends at its last 1).
    Returns:
        advantages (B, T), returns (B, T); 0 where ``mask`` is 0.
    """
    mask_t = mask.T.to(rewards.dtype)  # (T, B): time-major, as gae takes it
    next_mask = torch.cat([mask_t[1:], torch.zeros_like(mask_t[:1])])
    ends = (mask_t > 0) & (next_mask == 0)  # the last token of each response
    next_values = torch.cat([values.T[1:], torch.zeros_like(values.T[:1])]) * next_mask
    advantages, _ = gae(rewards.T * mask_t, values.T * mask_t, next_values, ends, ends, gamma, lam, mask_t)
    advantages = advantages.T
    return advantages, (advantages + values) * mask.to(rewards.dtype)


def policy_loss(
    logprob: Tensor, old_logprob: Tensor, advantages: Tensor, clip_coef: float, mask: Tensor | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate, negated to be minimised (Schulman et al. 2017, eq. 7; lecture "The PPO loss").

    L = -mean(min(rho * A, clip(rho, 1 - eps, 1 + eps) * A)),  rho = pi(a|s) / pi_old(a|s).

    Returns:
        the loss (scalar) and detached diagnostics: clip fraction, approx-KL (k3 estimator), mean ratio.
    """
    log_ratio = logprob - old_logprob
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef) * advantages
    loss = -masked_mean(torch.min(unclipped, clipped), mask)
    with torch.no_grad():
        info = {
            "clip_fraction": masked_mean(((ratio - 1.0).abs() > clip_coef).to(logprob.dtype), mask),
            "approx_kl": masked_mean(approx_kl(logprob, old_logprob), mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, info


def approx_kl(logprob: Tensor, old_logprob: Tensor) -> Tensor:
    """Per-sample k3 estimate of KL(pi_old || pi) from the sampled actions' log-probabilities.

    k3 = (r - 1) - log r with r = pi / pi_old (Schulman, "Approximating KL divergence", 2020):
    unbiased and never negative, the estimator CleanRL and stable-baselines3 log as approx-KL. The
    actions were sampled from pi_old, so pi_old plays the sampling policy of ``kl_penalty`` and pi its reference.
    """
    return kl_penalty(old_logprob, logprob, "k3")


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    clip_coef: float | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """Value loss L_VF = 1/2 (V(s) - R)^2 (lecture "The PPO loss"), optionally clipped as in PPO2.

    With ``clip_coef`` the new value may move at most clip_coef from the rollout's value before the loss
    stops rewarding it: 1/2 max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2).
    """
    unclipped = (values - returns) ** 2
    if clip_coef is None:
        return 0.5 * masked_mean(unclipped, mask)
    clipped_values = old_values + (values - old_values).clamp(-clip_coef, clip_coef)
    clipped = (clipped_values - returns) ** 2
    return 0.5 * masked_mean(torch.max(unclipped, clipped), mask)


def explained_variance(predicted: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """1 - Var(target - predicted) / Var(target): 1 is perfect, 0 is no better than the mean, <0 worse."""
    target_mean = masked_mean(target, mask)
    var_target = masked_mean((target - target_mean) ** 2, mask)
    residual = target - predicted
    var_residual = masked_mean((residual - masked_mean(residual, mask)) ** 2, mask)
    if var_target.item() == 0.0:
        return float("nan")
    return float(1.0 - var_residual / var_target)


def _groups(returns: Tensor, group_size: int) -> Tensor:
    """(B,) -> (B / K, K): row g holds the K responses to prompt g (rows g*K .. g*K + K - 1 of the batch)."""
    if returns.dim() != 1 or group_size < 2 or returns.numel() % group_size:
        raise ValueError(f"group advantages need a flat (B,) batch of whole groups of group_size >= 2 responses, "
                         f"got shape {tuple(returns.shape)} with group_size {group_size}")
    return returns.reshape(-1, group_size)


def rloo_advantages(returns: Tensor, group_size: int) -> Tensor:
    """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024): each response's baseline is the
    mean return of the other K - 1 responses to the same prompt, so it is unbiased (independent of the
    response it judges) and needs no critic.

        A_i = R_i - 1/(K-1) sum_{j != i} R_j  =  K/(K-1) (R_i - mean_j R_j)

    Args:
        returns: (B,) one return per response (the RM score minus beta times the response's KL when the KL
            is paid in the reward), grouped: responses g*K .. g*K + K - 1 answer prompt g.
    Returns:
        (B,) advantages; each group's sum to 0.
    """
    groups = _groups(returns, group_size)
    others_mean = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    return (groups - others_mean).reshape(-1)


def grpo_advantages(returns: Tensor, group_size: int, eps: float = 1e-4) -> Tensor:
    """Group-normalised returns of GRPO (Shao et al. 2024, DeepSeekMath, section 4.1.2):
    A_i = (R_i - mean_g R) / (std_g R + eps), the standard deviation unbiased (1 / (K - 1)), as TRL's
    GRPOTrainer computes it; a group of equal returns gets advantages 0.

    Args:
        returns: (B,) grouped as in ``rloo_advantages``.
    """
    groups = _groups(returns, group_size)
    mean, std = groups.mean(dim=1, keepdim=True), groups.std(dim=1, keepdim=True)
    return ((groups - mean) / (std + eps)).reshape(-1)


def kl_loss(logprob: Tensor, ref_logprob: Tensor, mask: Tensor | None = None) -> Tensor:
    """GRPO's KL term, mean over the response tokens of k3 = pi_ref/pi - log(pi_ref/pi) - 1 at the sampled
    tokens (Shao et al. 2024, eq. 4): added to the loss times beta instead of paid in the reward. Its
    gradient pulls pi towards the reference; it is never negative."""
    return masked_mean(kl_penalty(logprob, ref_logprob, "k3"), mask)


def dpo_loss(chosen_logprob: Tensor, rejected_logprob: Tensor, ref_chosen_logprob: Tensor,
             ref_rejected_logprob: Tensor, beta: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Direct preference optimisation (Rafailov et al. 2023, eq. 7): the reward model's pairwise loss with
    the implicit reward r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)).

        L = -mean log sigmoid(r(x, y_chosen) - r(x, y_rejected))

    Args:
        chosen_logprob, rejected_logprob: (B,) the policy's log-probability of each pair's whole response
            (summed over its tokens); ``ref_*`` the same under the frozen reference.
    Returns:
        the loss (scalar) and detached diagnostics: the mean implicit rewards of chosen and rejected
        responses, their margin and the fraction of pairs ranked right.
    """
    chosen = beta * (chosen_logprob - ref_chosen_logprob)
    rejected = beta * (rejected_logprob - ref_rejected_logprob)
    loss = -torch.nn.functional.logsigmoid(chosen - rejected).mean()
    with torch.no_grad():
        info = {"chosen_reward": chosen.mean(), "rejected_reward": rejected.mean(),
                "reward_margin": (chosen - rejected).mean(), "accuracy": (chosen > rejected).float().mean()}
    return loss, info
