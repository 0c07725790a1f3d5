"""agents.PPO against stable-baselines3's PPO on GridWorld-v0, over several seeds.

    python examples/compare_gridworld.py                            # 3 seeds, 30k steps each (~3.5 min on 2 cores)
    python examples/compare_gridworld.py --seeds 5 --steps 50000 --eval-every 2048
    python examples/compare_gridworld.py --stop-at-optimum          # stop each run once it is optimal

Both agents train on the lectures' 5x5 grid for the same number of env steps. Every ``--eval-every``
steps (at the first policy update past each multiple) a callback plays the greedy policy once (the grid
is deterministic) and compares its undiscounted return with value iteration's optimum (+100). The table
gives the final greedy return, the env steps and the training wall-clock (scoring excluded) until the
greedy return first equals the optimum and from when it stayed there, and the training steps per second.
The plot shows what the greedy policy does (misses the meat / reaches it over the broom, 99 /
optimal) against env steps and against seconds. Output: outputs/compare_gridworld.png.

agents.PPO runs with the settings of ``common.GRID_PPO`` on 64 cats of the native vector env; SB3 runs
with its defaults on one env (``PPO("MlpPolicy", gym.make("GridWorld-v0"))``), the way users run it.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from gridworld_common import (
    GRID_NUM_ENVS, GRID_PPO, OUTPUTS, OptimumTracker, greedy_return, make_grid_envs, median, optimal_return,
)


@dataclass
class Run:
    """One training run, as it goes into the table and the plot."""

    agent: str
    seed: int
    tracker: OptimumTracker
    final_return: float
    timesteps: int
    seconds: float
    """training wall-clock, scoring excluded"""

    @property
    def steps_per_s(self) -> float:
        return self.timesteps / self.seconds


def run_agents_ppo(seed: int, steps: int, tracker: OptimumTracker, num_envs: int = GRID_NUM_ENVS) -> Run:
    from agents import PPO

    tracker.start()
    agent = PPO(make_grid_envs(num_envs), seed=seed, device="cpu", config=GRID_PPO)
    tracker.check(agent, 0)
    agent.learn(steps, callback=tracker.agents_callback)
    seconds = tracker.seconds
    tracker.check(agent, agent.num_timesteps, force=True)
    return Run("agents.PPO", seed, tracker, greedy_return(agent), agent.num_timesteps, seconds)


def run_sb3_ppo(seed: int, steps: int, tracker: OptimumTracker) -> Run:
    from stable_baselines3 import PPO as SB3PPO

    tracker.start()
    model = SB3PPO("MlpPolicy", gym.make("GridWorld-v0"), seed=seed, device="cpu")  # SB3's defaults
    model.learn(steps, callback=tracker.sb3_callback())
    seconds = tracker.seconds
    tracker.check(model, model.num_timesteps, force=True)  # the policy after the last update
    return Run("SB3 PPO", seed, tracker, greedy_return(model), model.num_timesteps, seconds)


def warm_up(agents=("agents.PPO", "SB3 PPO")) -> None:
    """Pay one-time costs (lazy torch initialisation, imports) before any clock starts, for both agents alike."""
    from agents import PPO

    if "agents.PPO" in agents:
        PPO(make_grid_envs(8), seed=0, device="cpu", config=GRID_PPO).learn(8 * GRID_PPO.n_steps)
    if "SB3 PPO" in agents:
        from stable_baselines3 import PPO as SB3PPO

        SB3PPO("MlpPolicy", gym.make("GridWorld-v0"), n_steps=64, batch_size=64, n_epochs=1, device="cpu").learn(64)


def compare(seeds: int, steps: int, eval_every: int, stop_at_optimum: bool, agents=("agents.PPO", "SB3 PPO"),
            log=print) -> list[Run]:
    optimum = optimal_return()
    warm_up(agents)
    runs = []
    for seed in range(seeds):
        for name in agents:
            tracker = OptimumTracker(optimum, eval_every, stop_at_optimum)
            run = run_agents_ppo(seed, steps, tracker) if name == "agents.PPO" else run_sb3_ppo(seed, steps, tracker)
            runs.append(run)
            first = "never" if not tracker.reached else f"{tracker.first_steps} steps / {tracker.first_seconds:.1f} s"
            log(f"  {name:10s} seed {seed}: optimum first reached after {first}; final greedy return "
                f"{run.final_return:g} ({run.timesteps} steps in {run.seconds:.1f} s)")
    return runs


def table(runs: list[Run], optimum: float) -> str:
    """One row per agent: medians over seeds (the runs that never reached the optimum are counted apart)."""
    lines = [
        f"optimal greedy return (value iteration): {optimum:g}",
        f"{'agent':10s} {'final greedy return':>20s} {'reached':>8s} {'first reached: steps':>21s} {'seconds':>8s} "
        f"{'held from: steps':>17s} {'seconds':>8s} {'steps/s':>8s}",
    ]
    for name in dict.fromkeys(r.agent for r in runs):
        rs = [r for r in runs if r.agent == name]
        finals = "/".join(f"{r.final_return:g}" for r in rs)
        reached = sum(r.tracker.reached for r in rs)
        held = [r.tracker.held_from for r in rs]
        lines.append(
            f"{name:10s} {finals:>20s} {reached:>5d}/{len(rs):<2d} "
            f"{median(r.tracker.first_steps for r in rs):21.0f} {median(r.tracker.first_seconds for r in rs):8.2f} "
            f"{median(h and h[0] for h in held):17.0f} {median(h and h[1] for h in held):8.2f} "
            f"{np.median([r.steps_per_s for r in rs]):8.0f}"
        )
    lines.append("medians over seeds (of those that got there); 'held from': the first scoring after which every "
                 "scoring was optimal;\nseconds: training wall-clock, greedy scoring excluded")
    return "\n".join(lines)


def plot(runs: list[Run], optimum: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"agents.PPO": "tab:blue", "SB3 PPO": "tab:orange"}
    fig, (ax_steps, ax_time) = plt.subplots(1, 2, figsize=(11, 4))
    for i, run in enumerate(runs):
        steps, seconds, score = (np.array(x) for x in zip(*run.tracker.history))
        # 99 (the meat, over the broom) and 100 are indistinguishable on a return axis: plot the outcome.
        outcome = np.where(score >= optimum - 1e-6, 2, np.where(score > 0, 1, 0)) + 0.04 * (i % 5 - 2)
        label = run.agent if run.seed == 0 else None
        style = dict(where="post", color=colors.get(run.agent), alpha=0.7, label=label)
        ax_steps.step(steps, outcome, **style)
        ax_time.step(np.maximum(seconds, 1e-2), outcome, **style)  # log axis: the first scoring is at ~0 s
    for ax in (ax_steps, ax_time):
        ax.set_yticks([0, 1, 2], ["no meat (<= 0)", "meat, not optimal", f"optimal ({optimum:g})"])
        ax.set_ylim(-0.3, 2.3)
        ax.set_ylabel("greedy policy")
        ax.legend(loc="center right")
    ax_steps.set_xlabel("env steps")
    ax_time.set_xlabel("training wall-clock [s] (log)")
    ax_time.set_xscale("log")
    fig.suptitle(f"GridWorld-v0: agents.PPO vs SB3 PPO, {len({r.seed for r in runs})} seeds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 for each agent")
    p.add_argument("--steps", type=int, default=30_000, help="env steps per run, for both agents")
    p.add_argument("--eval-every", type=int, default=1024, help="env steps between two greedy scorings")
    p.add_argument("--stop-at-optimum", action="store_true", help="stop each run once its greedy return is optimal")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small nets)")
    p.add_argument("--out", default=str(OUTPUTS / "compare_gridworld.png"))
    return p.parse_args(argv)


def main(argv=None) -> list[Run]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(f"GridWorld-v0, {args.seeds} seeds x {args.steps} env steps per agent")
    runs = compare(args.seeds, args.steps, args.eval_every, args.stop_at_optimum)
    optimum = optimal_return()
    print()
    print(table(runs, optimum))
    print(f"plot: {plot(runs, optimum, Path(args.out))}   (total {time.perf_counter() - start:.0f} s)")
    return runs


if __name__ == "__main__":
    from agents.utils import reproducible_cpu_kernels

    reproducible_cpu_kernels()  # before the first torch operation (figures repeat on machines of one vendor)
    main()
