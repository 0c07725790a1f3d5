"""The lectures' REINFORCE ladder on GridWorld-v0: how much each rung lowers the variance of the policy gradient.

    python examples/reinforce_ladder.py                                   # quick: a few minutes on 2 cores
    python examples/reinforce_ladder.py --batches 500 --train-steps 100000 --seeds 3

Part 1, variance at one fixed policy. A softmax policy partly trained by agents.PPO (``--pretrain-steps``)
is frozen. The baseline rungs use a fixed value: by default the exact V^pi of that policy (policy evaluation
on the known grid: the lecture's V^pi(s) itself), or with ``--value critic`` PPO's own critic as it stands
after pretraining (a poor one: that shows what a bad V does to GAE). Then ``--batches`` independent batches
of whole episodes are collected with the frozen policy, and on each batch the gradient estimate g_hat
(flattened, agents.reinforce.estimate_gradient) is computed under every rung, on the same steps:

    return        R(tau): the whole return weighs every action
    reward_to_go  G_t: "you can't alter the past"
    baseline      G_t - V(s_t)
    group         R(tau) minus the mean return of the batch's other whole episodes (RLOO's baseline, no V)
    gae           GAE(gamma, lambda) with the same V
    ppo           PPO's clipped importance-sampled surrogate at ratio 1 with the GAE advantages: at the
                  first minibatch of an update (ratio 1) its gradient IS the GAE gradient (the rows match
                  to float precision); clipping and importance sampling matter only from the second step on
    ppo+whiten    the same with the advantages whitened over the batch, as PPOConfig(norm_adv=True) does

Over the batches we report the total variance tr Cov(g_hat) (the sum of the per-parameter variances), the
size of the mean gradient |E g_hat|, their ratio tr Cov / |E g_hat|^2 (scale-free noise-to-signal; whitening
rescales g_hat, so compare ppo+whiten on the scale-free columns only), the mean cosine between one batch's g_hat and the
mean of the other batches (how well one batch points the right way), and the cosine between each rung's
mean gradient and the reward_to_go mean (rungs that agree estimate the same gradient; a biased rung drifts).

Part 2, learning curves. REINFORCE with each estimator and agents.PPO train for the same number of env steps
from scratch; the plot shows the mean episode return of the sampling policy against env steps.
Output: outputs/reinforce_ladder.png (the path is printed).

What it shows, measured with the default flags and the other flags named there: README.md, section
"GridWorld-v0 and the PPO core" (the figures live there, so this docstring cannot go stale).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from gridworld_common import OUTPUTS, GRID_PPO, greedy_return, make_grid_envs, optimal_return
from agents import PPO
from agents import functional as F
from agents.policies import ActorCritic
from agents.reinforce import ESTIMATORS, REINFORCE, estimate_gradient, flat_grad, whole_episode_mask
from agents.rollout import Rollout, RolloutCollector
from agents.utils import flatten_time
from textenv.gridworld.dynamics import Rewards, build_tables
from textenv.gridworld.layout import Layout
from agents.utils import reproducible_cpu_kernels

RUNGS = (*ESTIMATORS, "ppo", "ppo+whiten")


# ---------------------------------------------------------------------------------------------- part 1
class ExactValue(ActorCritic):
    """A frozen policy's actor with the exact V^pi(s) (a table) in place of its learned critic."""

    def __init__(self, policy: ActorCritic, values: torch.Tensor):
        super().__init__()
        self.policy = policy
        self.register_buffer("values", values)

    def forward(self, obs):
        logits, _ = self.policy(obs)
        return logits, self.values[obs.long().reshape(-1)]  # (B, A), (B,)


def policy_value(policy: ActorCritic, gamma: float) -> torch.Tensor:
    """V^pi on the default grid by policy evaluation: solve V = sum_a pi(a|s) (r(s,a) + gamma V(s')) exactly.

    The grid is known, so the lecture's V^pi(s) needs no estimate. (The 100-step limit is ignored, as in
    textenv.gridworld.solve; this policy's episodes are far shorter.)
    """
    layout = Layout.default()
    tables = build_tables(layout, Rewards())
    S = layout.n_states
    with torch.no_grad():
        probs = torch.softmax(policy(torch.arange(S))[0], -1).double().numpy()  # (S, 4)
    next_state = tables.next_state.reshape(S, 4)
    reward = tables.reward.reshape(S, 4)
    alive = ~tables.terminated.reshape(S, 4)
    transition = np.zeros((S, S))  # P_pi(s' | s), episodes that end go nowhere
    np.add.at(transition, (np.repeat(np.arange(S), 4), next_state.reshape(-1)), (probs * alive).reshape(-1))
    values = np.linalg.solve(np.eye(S) - gamma * transition, (probs * reward).sum(1))
    return torch.as_tensor(values, dtype=torch.float32)


def frozen_policy(pretrain_steps: int, seed: int, gamma: float, value: str) -> ActorCritic:
    """A partly trained policy (agents.PPO for ``pretrain_steps``) with a fixed value for the baseline rungs.

    value='exact': V^pi by policy evaluation; value='critic': PPO's own critic as it is after pretraining.
    """
    agent = PPO(make_grid_envs(), seed=seed, device="cpu", config=dataclasses.replace(GRID_PPO, gamma=gamma))
    agent.learn(pretrain_steps)
    policy = agent.policy.eval()
    if value == "exact":
        policy = ExactValue(policy, policy_value(policy, gamma))
    return policy


def rung_gradients(
    policy, rollout: Rollout, gamma: float, gae_lambda: float, clip_coef: float
) -> dict[str, torch.Tensor]:
    """g_hat of one batch under every rung, all on the same steps (the whole episodes of the batch)."""
    mask = whole_episode_mask(rollout.ends, rollout.mask)
    grads = {est: estimate_gradient(policy, rollout, est, gamma, gae_lambda, mask) for est in ESTIMATORS}
    # PPO's surrogate at ratio 1: old log-probs are the current ones, detached.
    adv, _ = F.gae(rollout.rewards, rollout.values, rollout.next_values, rollout.terminated, rollout.ends,
                   gamma, gae_lambda, mask)
    T, N = rollout.rewards.shape
    logprob, _, _ = policy.evaluate_actions(flatten_time(rollout.obs, T * N), rollout.actions.reshape(-1))
    b_adv, b_mask, params = adv.reshape(-1), mask.reshape(-1), list(policy.parameters())
    loss, _ = F.policy_loss(logprob, logprob.detach(), b_adv, clip_coef, b_mask)
    grads["ppo"] = -flat_grad(loss, params, retain_graph=True)
    loss, _ = F.policy_loss(logprob, logprob.detach(), F.masked_whiten(b_adv, b_mask), clip_coef, b_mask)
    grads["ppo+whiten"] = -flat_grad(loss, params)
    return grads


def variance_study(policy, n_batches: int, num_envs: int, n_steps: int, gamma: float, gae_lambda: float,
                   seed: int) -> tuple[dict[str, torch.Tensor], dict]:
    """(K, P) gradient samples per rung over ``n_batches`` batches collected by the frozen policy."""
    envs = make_grid_envs(num_envs)
    samples: dict[str, list[torch.Tensor]] = {r: [] for r in RUNGS}
    episodes, steps = [], []
    for k in range(n_batches):
        # A new collector resets the cats: every batch starts fresh episodes, so the batches are independent
        # and no episode began before its batch (whole_episode_mask needs no in_progress).
        rollout = RolloutCollector(envs, policy, n_steps, torch.device("cpu"), seed=seed if k == 0 else None).collect()
        for name, g in rung_gradients(policy, rollout, gamma, gae_lambda, GRID_PPO.clip_coef).items():
            samples[name].append(g)
        mask = whole_episode_mask(rollout.ends, rollout.mask)
        episodes.append(int((rollout.ends * mask).sum()))
        steps.append(int(mask.sum()))
    stats = {"episodes_per_batch": float(np.mean(episodes)), "steps_per_batch": float(np.mean(steps))}
    return {k: torch.stack(v) for k, v in samples.items()}, stats


def variance_rows(samples: dict[str, torch.Tensor]) -> list[dict]:
    """Total variance, mean size, noise-to-signal and cosines for each rung's (K, P) samples."""
    reference = samples["reward_to_go"].mean(0)
    rows = []
    for name, g in samples.items():
        K = g.shape[0]
        mean = g.mean(0)
        total_var = g.var(0, unbiased=True).sum().item()  # tr Cov(g_hat)
        leave_one_out = (K * mean[None] - g) / (K - 1)  # the mean of the other batches, for each batch
        cos_batch = torch.nn.functional.cosine_similarity(g, leave_one_out, dim=1).mean().item()
        rows.append({
            "rung": name,
            "total_variance": total_var,
            "mean_norm": mean.norm().item(),
            "noise_to_signal": total_var / mean.norm().item() ** 2,
            "cos_batch_to_mean": cos_batch,
            "cos_mean_to_rtg": torch.nn.functional.cosine_similarity(mean, reference, dim=0).item(),
        })
    return rows


def variance_table(rows: list[dict]) -> str:
    base = rows[0]["total_variance"]
    lines = [f"{'rung':13s} {'tr Cov(g)':>11s} {'vs return':>9s} {'|E g|':>9s} {'trCov/|Eg|^2':>12s} "
             f"{'vs prev rung':>12s} {'cos(g, E g)':>11s} {'cos(E g, E g_rtg)':>17s}"]
    for prev, r in zip([None, *rows], rows):
        step = "" if prev is None else f"x{r['noise_to_signal'] / prev['noise_to_signal']:.2f}"
        lines.append(f"{r['rung']:13s} {r['total_variance']:11.4g} {r['total_variance'] / base:9.3g} "
                     f"{r['mean_norm']:9.4g} {r['noise_to_signal']:12.3f} {step:>12s} {r['cos_batch_to_mean']:11.3f} "
                     f"{r['cos_mean_to_rtg']:17.3f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- part 2
def learning_curve(rung: str, steps: int, seed: int, args) -> tuple[list[tuple[int, float]], float, float]:
    """(env steps, mean episode return) per iteration, the final greedy return and the seconds it took."""
    curve: list[tuple[int, float]] = []
    record = lambda agent, m: curve.append((m["timesteps"], m["episode_return"]))  # noqa: E731
    start = time.perf_counter()
    if rung == "ppo":
        agent = PPO(make_grid_envs(), seed=seed, device="cpu", config=dataclasses.replace(GRID_PPO, gamma=args.gamma))
    else:
        agent = REINFORCE(
            make_grid_envs(args.num_envs), seed=seed, device="cpu", estimator=rung, n_steps=args.n_steps,
            learning_rate=args.lr, gamma=args.gamma, gae_lambda=args.gae_lambda, progress_bar=False,
        )
    agent.learn(steps, callback=record)
    return curve, greedy_return(agent), time.perf_counter() - start


def steps_to(curve: list[tuple[int, float]], target: float) -> int | None:
    """Env steps until the mean episode return of an iteration first reaches ``target`` (None: never)."""
    return next((steps for steps, ret in curve if ret >= target), None)


def smooth(y: np.ndarray, k: int = 5) -> np.ndarray:
    """Moving average that ignores NaN (iterations in which no episode finished)."""
    y = np.asarray(y, dtype=float)
    out = np.empty_like(y)
    for i in range(len(y)):
        window = y[max(0, i - k + 1): i + 1]
        out[i] = np.nanmean(window) if np.isfinite(window).any() else np.nan
    return out


def plot(rows: list[dict], curves: dict[str, list], optimum: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_var, ax_cos, ax_learn) = plt.subplots(1, 3, figsize=(15, 4.2))
    names = [r["rung"] for r in rows]
    ax_var.bar(names, [r["noise_to_signal"] for r in rows], color="tab:red")
    ax_var.set_yscale("log")
    ax_var.set_title("noise-to-signal tr Cov(g) / |E g|^2 (log)")
    ax_cos.bar(names, [r["cos_batch_to_mean"] for r in rows], color="tab:green")
    ax_cos.set_ylim(0, 1)
    ax_cos.set_title("cosine of one batch's g to the mean g")
    for ax in (ax_var, ax_cos):
        ax.tick_params(axis="x", rotation=30)
    for rung, runs in curves.items():
        # Average the seeds on a common grid of env steps (iterations where no episode ended are skipped).
        grid = np.linspace(0, min(curve[-1][0] for curve, _ in runs), 100)
        ys = []
        for curve, _ in runs:
            steps, returns = np.array(curve, dtype=float).T
            ok = np.isfinite(returns)
            ys.append(np.interp(grid, steps[ok], returns[ok]))
        ax_learn.plot(grid, smooth(np.mean(ys, axis=0), 3), label=rung)
    ax_learn.axhline(optimum, color="k", ls="--", lw=0.8, label="optimum")
    ax_learn.set_xlabel("env steps")
    ax_learn.set_ylabel("mean episode return (sampling policy)")
    ax_learn.set_title("learning curves, same budget")
    ax_learn.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("part 1: variance at a fixed policy")
    g.add_argument("--pretrain-steps", type=int, default=3072, help="agents.PPO steps that make the frozen policy")
    g.add_argument("--value", choices=("exact", "critic"), default="exact",
                   help="V for the baseline rungs: exact V^pi (policy evaluation) or PPO's critic as pretrained")
    g.add_argument("--batches", type=int, default=100, help="independent batches per rung")
    g.add_argument("--batch-envs", type=int, default=8, help="cats per batch (each batch: envs x --batch-steps)")
    g.add_argument("--batch-steps", type=int, default=128, help="steps per cat in a batch")
    g = p.add_argument_group("part 2: learning curves")
    g.add_argument("--train-steps", type=int, default=30_000, help="env steps per training run (0: skip part 2)")
    g.add_argument("--seeds", type=int, default=2, help="training seeds per rung")
    g.add_argument("--num-envs", type=int, default=8, help="REINFORCE: cats per rollout")
    g.add_argument("--n-steps", type=int, default=128, help="REINFORCE: steps per cat per rollout (whole episodes)")
    g.add_argument("--lr", type=float, default=1e-2, help="REINFORCE: Adam step size (all rungs)")
    g.add_argument("--target", type=float, default=90.0, help="report the env steps to this mean episode return")
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--gae-lambda", type=float, default=0.8, help="GAE's lambda (gae and ppo rungs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small nets)")
    p.add_argument("--out", default=str(OUTPUTS / "reinforce_ladder.png"))
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    policy = frozen_policy(args.pretrain_steps, args.seed, args.gamma, args.value)
    with torch.no_grad():
        v_start = policy(torch.tensor([0]))[1].item()
    print(f"frozen policy: agents.PPO after {args.pretrain_steps} steps, greedy return {greedy_return_of(policy):g}; "
          f"value for the baseline rungs: {args.value} (V(start) = {v_start:.1f})")
    samples, stats = variance_study(policy, args.batches, args.batch_envs, args.batch_steps, args.gamma,
                                    args.gae_lambda, args.seed + 1)
    rows = variance_rows(samples)
    print(f"\nPart 1: {args.batches} batches of {args.batch_envs} x {args.batch_steps} steps, "
          f"{stats['episodes_per_batch']:.1f} whole episodes ({stats['steps_per_batch']:.0f} steps) per batch, "
          f"{samples['return'].shape[1]} parameters")
    print(variance_table(rows))
    gap = (samples["ppo"] - samples["gae"]).abs().max().item()
    print(f"max |g_ppo - g_gae| over all batches and parameters: {gap:.2e} (the same gradient at ratio 1)")

    curves: dict[str, list] = {}
    if args.train_steps > 0:
        print(f"\nPart 2: {args.train_steps} env steps per run, {args.seeds} seed(s); REINFORCE: "
              f"{args.num_envs} x {args.n_steps} steps per update, lr {args.lr}; ppo: examples/gridworld_common.GRID_PPO")
        print(f"{'rung':13s} {'final greedy return':>20s} {'last episode return':>20s} "
              f"{f'steps to return >= {args.target:g}':>24s} {'seconds':>8s}")
        for rung in (*ESTIMATORS, "ppo"):
            runs = [learning_curve(rung, args.train_steps, args.seed + s, args) for s in range(args.seeds)]
            curves[rung] = [(c, g) for c, g, _ in runs]
            last = np.nanmean([np.nanmean([r for _, r in c[-3:]]) for c, _, _ in runs])
            finals = "/".join(f"{g:g}" for _, g, _ in runs)
            reach = "/".join(str(steps_to(c, args.target) or "-") for c, _, _ in runs)
            print(f"{rung:13s} {finals:>20s} {last:20.1f} {reach:>24s} {np.mean([s for _, _, s in runs]):8.1f}")
    path = plot(rows, curves, optimal_return(), Path(args.out))
    print(f"\nplot: {path}   (total {time.perf_counter() - start:.0f} s)")


def greedy_return_of(policy) -> float:
    """Greedy return of a bare ActorCritic (common.greedy_return wants an agent with predict)."""

    class _Agent:
        def predict(self, obs, deterministic=True):
            with torch.no_grad():
                return int(policy(torch.as_tensor([obs]))[0].argmax(-1)), None

    return greedy_return(_Agent())


if __name__ == "__main__":
    reproducible_cpu_kernels()  # before the first torch operation (figures repeat on machines of one vendor)
    main()
