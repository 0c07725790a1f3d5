"""REINFORCE and the lectures' variance-reduction ladder, on the same rollout and functional pieces as PPO.

    from agents.reinforce import REINFORCE
    envs = gym.make_vec("GridWorld-v0", num_envs=16, vectorization_mode="vector_entry_point")
    agent = REINFORCE(envs, estimator="gae", seed=0).learn(100_000)
    action, _ = agent.predict(obs, deterministic=True)

The policy gradient (lecture "Policy Gradient Optimization") is estimated from sampled steps as

    g_hat = mean over steps of  grad log pi(a_t | s_t) * Psi_t

and REINFORCE takes one gradient-ascent step on it per rollout. The lecture's rungs differ only in the
weight Psi_t each action gets ("Reducing variance"), which is ``ESTIMATORS``:

    "return"        R(tau), the whole discounted return of the episode, past rewards included
    "reward_to_go"  G_t = sum_{t' >= t} gamma^(t'-t) r_t'       ("you can't alter the past")
    "baseline"      G_t - V(s_t), V learned by regressing G_t      ("subtracting a baseline")
    "group"         R(tau_i) minus the mean return of the batch's other whole episodes: the leave-one-out
                    baseline of RLOO (agents.functional.rloo_advantages), critic-free; unbiased because the
                    other episodes do not depend on this one's actions, and a group of episodes from one
                    start state on the grid (every episode starts on the cat's cell), as RLOO's K responses
                    share their prompt
    "gae"           GAE(gamma, lambda) advantage with the learned V ("Generalized Advantage Estimation")

PPO (agents.ppo) is the next rung: its clipped, importance-sampled surrogate has, at ratio 1 (the
first minibatch of an update), the same gradient as "gae"; importance sampling lets it take several
steps on one rollout, and clipping keeps those steps close to the policy that collected the data.

The return estimators (all but "gae") are Monte Carlo: they use only episodes that start and end
inside the rollout (``whole_episode_mask``); a time-limit truncation counts as the end of an episode,
as in the lecture ("run each trajectory for 100 steps or until the cat faints"). "gae" bootstraps from V
where an episode is cut, so it uses every step.

Normalisation: we average over steps (as PPO's loss does), where the lecture's g_hat averages over
episodes; the two differ by the constant mean episode length of the batch, which changes no direction.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from agents import functional as F
from agents.logger import Logger
from agents.onpolicy import build_agent, episode_metrics, predict
from agents.policies import ActorCritic
from agents.rollout import Rollout, RolloutCollector
from agents.utils import flatten_time

ESTIMATORS = ("return", "reward_to_go", "baseline", "group", "gae")
"""The rungs of the lecture's ladder, in its order (examples/reinforce_ladder.py measures what each one buys)."""


@dataclass
class REINFORCEConfig:
    """REINFORCE hyperparameters. The defaults suit GridWorld-v0 on a native vector env of 8-64 cats."""

    estimator: str = "gae"
    """the weight of each grad-log-prob: 'return', 'reward_to_go', 'baseline', 'group' or 'gae' (module doc)"""
    n_steps: int = 128
    """steps per sub-env in each rollout (T); Monte Carlo estimators lose the cut episodes at both ends"""
    learning_rate: float = 1e-2
    """Adam's step size (one policy step per rollout)"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """GAE's lambda (estimator 'gae' only)"""
    vf_coef: float = 0.5
    """weight of the value loss 1/2 (V(s) - target)^2; the value is trained only by 'baseline' and 'gae'"""
    value_steps: int = 4
    """extra value-only Adam steps per rollout: a baseline that lags the policy removes less variance"""
    ent_coef: float = 0.0
    """weight of the entropy bonus (0: the plain policy gradient)"""
    norm_adv: bool = False
    """whiten the weights over the batch; subtracting their mean is itself a baseline, so off for the ladder"""
    max_grad_norm: float | None = None
    """clip the global gradient norm to this (None: the plain gradient step)"""
    log_dir: str | None = None
    """folder for progress.csv and TensorBoard events (None: console only)"""
    progress_bar: bool = True
    """show a progress bar with the main metrics"""

    def __post_init__(self):
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.n_steps < 1 or self.value_steps < 0:
            raise ValueError(f"n_steps must be >= 1 and value_steps >= 0, got {self.n_steps} and {self.value_steps}")


# ---------------------------------------------------------------------------------------------- pure pieces
def whole_episode_mask(ends: Tensor, mask: Tensor, in_progress: Tensor | None = None) -> Tensor:
    """Keep only the steps of episodes that start and end inside the rollout.

    Args:
        ends, mask: (T, N) from the Rollout (``mask`` drops NEXT_STEP's reset steps).
        in_progress: (N,) bool, True where a sub-env was mid-episode when the rollout began: its first
            episode lacks its beginning (no R(tau) for it). None: every sub-env starts a fresh episode.
    Returns:
        (T, N) float mask: 1 on the steps of whole episodes.
    """
    N = ends.shape[1]
    ends_b = ends > 0
    # A step is in the tail when no episode end comes at or after it: reverse cumulative "any end".
    ended_later = ends_b.flip(0).cumsum(0).flip(0) > 0  # (T, N)
    keep = ended_later & (mask > 0)
    if in_progress is not None:
        # The head: steps up to and including each column's first end, where the episode was already running.
        zero = torch.zeros(1, N, dtype=torch.long, device=ends.device)
        ended_before = torch.cat([zero, ends_b.long().cumsum(0)[:-1]])  # (T, N) ends strictly before t
        head = (ended_before == 0) & in_progress.to(ends.device)[None, :]
        keep = keep & ~head
    return keep.to(mask.dtype)


def pg_weights(
    estimator: str,
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    ends: Tensor,
    mask: Tensor,
    gamma: float,
    gae_lambda: float = 0.95,
) -> tuple[Tensor, Tensor | None]:
    """Psi_t for each step under ``estimator``, and the value targets it trains V on (None: no value).

    Args:
        rewards, values, next_values, terminated, ends, mask: (T, N) as in agents.rollout.Rollout;
            for the Monte Carlo estimators ``mask`` should keep whole episodes only (whole_episode_mask).
    Returns:
        weights (T, N), 0 where masked; value targets (T, N) or None.
    """
    if estimator in ("return", "reward_to_go", "baseline"):
        # No bootstrap: a truncated episode is a whole (time-limited) trajectory.
        to_go = F.rewards_to_go(rewards, ends, gamma, mask=mask)
        if estimator == "reward_to_go":
            return to_go, None
        if estimator == "baseline":
            return (to_go - values) * mask, to_go
        # F.episode_returns starts a new episode only right after an end; a masked step after an end
        # (NEXT_STEP's reset step) would hide that start, so mark masked steps as ends too (they carry no
        # reward, so the sums are unchanged).
        return F.episode_returns(rewards, torch.maximum(ends, 1.0 - mask), gamma, mask=mask), None
    if estimator == "group":
        returns = F.episode_returns(rewards, torch.maximum(ends, 1.0 - mask), gamma, mask=mask)  # R(tau) per step
        last = ends * mask  # the last step of each whole episode
        n, total = last.sum(), (returns * last).sum()  # episodes, sum of their returns
        if n < 2:  # no other episode to compare with: no signal
            return torch.zeros_like(returns), None
        return (returns - (total - returns) / (n - 1)) * mask, None
    if estimator == "gae":
        advantages, returns = F.gae(rewards, values, next_values, terminated, ends, gamma, gae_lambda, mask)
        return advantages, returns
    raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")


def reinforce_loss(logprob: Tensor, weights: Tensor, mask: Tensor | None = None) -> Tensor:
    """-mean(log pi(a_t|s_t) * Psi_t): minimising it ascends the policy gradient (weights are constants)."""
    return -F.masked_mean(logprob * weights.detach(), mask)


def flat_grad(loss: Tensor, parameters: list[torch.nn.Parameter], retain_graph: bool = False) -> Tensor:
    """d loss / d parameters, flattened to one vector (P,); zeros for parameters the loss does not touch.

    ``retain_graph=True`` keeps the graph for another gradient of the same forward (several rungs, one batch).
    """
    grads = torch.autograd.grad(loss, parameters, retain_graph=retain_graph, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(parameters, grads)])


def estimate_gradient(
    policy: ActorCritic,
    rollout: Rollout,
    estimator: str,
    gamma: float,
    gae_lambda: float = 0.95,
    mask: Tensor | None = None,
) -> Tensor:
    """The policy-gradient estimate g_hat of one batch for a fixed policy, flattened (P,).

    This is the ascent direction (the gradient of J, not of the loss) over ``policy.parameters()``; the
    weights come from ``rollout.values`` (the value at collection time), so pass a rollout collected by
    ``policy`` itself. Used to measure each estimator's variance over many batches.

    Args:
        mask: (T, N) steps to use. Default: every valid step for 'gae'; for the Monte Carlo estimators the
            whole episodes, assuming every sub-env began a fresh episode with the rollout (a new
            RolloutCollector resets them); otherwise pass ``whole_episode_mask(..., in_progress)``.
    """
    if mask is None:
        mask = rollout.mask if estimator == "gae" else whole_episode_mask(rollout.ends, rollout.mask)
    weights, _ = pg_weights(
        estimator, rollout.rewards, rollout.values, rollout.next_values, rollout.terminated, rollout.ends,
        mask, gamma, gae_lambda,
    )
    T, N = rollout.rewards.shape
    logprob, _, _ = policy.evaluate_actions(flatten_time(rollout.obs, T * N), rollout.actions.reshape(-1))
    loss = reinforce_loss(logprob, weights.reshape(-1), mask.reshape(-1))
    return -flat_grad(loss, list(policy.parameters()))


# ---------------------------------------------------------------------------------------------- the agent
Callback = Callable[["REINFORCE", dict], "bool | None"]  # agents.onpolicy.Callback, typed for REINFORCE


class REINFORCE:
    """REINFORCE with any rung of the ladder, on one policy, one optimizer and one vector env.

    Args:
        env: a Gymnasium env or vector env (a single env is wrapped as a vector env of one).
        policy: an ``agents.policies.ActorCritic``; default: ``MLPActorCritic`` for the env's spaces
            (its critic is trained only by the 'baseline' and 'gae' estimators).
        seed: seeds torch, NumPy and the env's first reset; a seeded CPU run is reproducible.
        device: "auto" (CUDA when available, else CPU), "cpu", "cuda", ...
        config: a REINFORCEConfig; keyword hyperparameters override its fields.
    """

    def __init__(
        self,
        env: gym.Env | gym.vector.VectorEnv,
        policy: ActorCritic | None = None,
        seed: int | None = None,
        device: str | torch.device = "auto",
        config: REINFORCEConfig | None = None,
        **hyperparameters,
    ):
        self.config = dataclasses.replace(config or REINFORCEConfig(), **hyperparameters)
        self.seed = seed
        parts = build_agent(env, policy, seed, device, self.config.learning_rate)
        self.device, self.env, self.policy, self.optimizer = parts.device, parts.env, parts.policy, parts.optimizer
        self.observation_space, self.action_space = parts.observation_space, parts.action_space
        self.num_timesteps = 0
        self.iteration = 0
        self._collector: RolloutCollector | None = None

    def learn(self, total_timesteps: int, callback: Callback | None = None) -> "REINFORCE":
        """Train for about ``total_timesteps`` env steps (whole iterations); returns self."""
        cfg = self.config
        if self._collector is None:
            self._collector = RolloutCollector(self.env, self.policy, cfg.n_steps, self.device, self.seed)
        batch = cfg.n_steps * self.env.num_envs
        n_iterations = max(1, -(-total_timesteps // batch))
        logger = Logger(cfg.log_dir, n_iterations, cfg.progress_bar)
        try:
            for _ in range(n_iterations):
                start = time.perf_counter()
                # Sub-envs mid-episode now start the rollout with an episode whose beginning we did not see.
                in_progress = torch.as_tensor(self._collector.ep_length > 0)
                self.policy.eval()
                rollout = self._collector.collect()
                self.policy.train()
                metrics = self.update(rollout, in_progress)
                self.num_timesteps += int(rollout.mask.sum().item())
                self.iteration += 1
                metrics.update(episode_metrics(rollout))
                metrics.update(
                    iteration=self.iteration,
                    timesteps=self.num_timesteps,
                    steps_per_s=batch / (time.perf_counter() - start),
                )
                logger.log(metrics, self.num_timesteps)
                if callback is not None and callback(self, metrics) is False:
                    break
        finally:
            logger.close()
        return self

    def update(self, rollout: Rollout, in_progress: Tensor | None = None) -> dict[str, float]:
        """One policy-gradient step (and ``value_steps`` more value steps) on a rollout; returns diagnostics."""
        cfg = self.config
        monte_carlo = cfg.estimator != "gae"
        mask = whole_episode_mask(rollout.ends, rollout.mask, in_progress) if monte_carlo else rollout.mask
        weights, targets = pg_weights(
            cfg.estimator, rollout.rewards, rollout.values, rollout.next_values, rollout.terminated, rollout.ends,
            mask, cfg.gamma, cfg.gae_lambda,
        )
        T, N = rollout.rewards.shape
        b_obs, b_actions = flatten_time(rollout.obs, T * N), rollout.actions.reshape(-1)
        b_weights, b_mask = weights.reshape(-1), mask.reshape(-1)
        if cfg.norm_adv:
            b_weights = F.masked_whiten(b_weights, b_mask)
        metrics = {"used_fraction": b_mask.mean().item()}  # the share of the rollout's steps trained on
        if b_mask.sum() == 0:  # no episode ended inside the rollout yet: nothing to learn from
            return metrics

        # policy loss (+ value loss for the rungs with a baseline)
        logprob, entropy, value = self.policy.evaluate_actions(b_obs, b_actions)
        pg_loss = reinforce_loss(logprob, b_weights, b_mask)
        ent = F.masked_mean(entropy, b_mask)
        loss = pg_loss - cfg.ent_coef * ent
        metrics.update(policy_loss=pg_loss.item(), entropy=ent.item())
        if targets is not None:
            b_targets = targets.reshape(-1)
            v_loss = F.value_loss(value, value.detach(), b_targets, None, b_mask)
            loss = loss + cfg.vf_coef * v_loss
            metrics["value_loss"] = v_loss.item()
            metrics["explained_variance"] = F.explained_variance(rollout.values, targets, mask)
        metrics["grad_norm"] = self._step(loss)

        # value-only steps: the critic chases the current policy's returns
        if targets is not None:
            for _ in range(cfg.value_steps):
                _, value = self.policy(b_obs)
                self._step(cfg.vf_coef * F.value_loss(value, value.detach(), b_targets, None, b_mask))
        return metrics

    def _step(self, loss: Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.policy.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm or float("inf"))
        self.optimizer.step()
        return float(norm)

    def predict(self, obs, deterministic: bool = False) -> tuple[np.ndarray | int, None]:
        """Action(s) for one observation or a batch, as in stable-baselines3: returns (action, None)."""
        return predict(self.policy, obs, self.observation_space, self.device, deterministic)