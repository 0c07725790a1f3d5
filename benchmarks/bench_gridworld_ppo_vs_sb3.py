"""Wall-clock to the optimal greedy return on GridWorld-v0: agents.PPO against stable-baselines3's PPO.

    python benchmarks/bench_gridworld_ppo_vs_sb3.py                 # seeds 0-2, about 3 minutes on 2 cores
    python benchmarks/bench_gridworld_ppo_vs_sb3.py --seeds 5 --eval-every 2048
    python benchmarks/bench_gridworld_ppo_vs_sb3.py --eval-every 2048 --hold 3    # optimal 3 scorings in a row

Each run trains until the greedy policy's undiscounted return first equals value iteration's optimum
(+100 on the default grid), or gives up at its step cap. The greedy policy is scored at the first policy
update past every ``--eval-every`` env steps, and that scoring is left out of the clock, which starts
before the agent is built. Both agents are warmed up once first (lazy torch initialisation), and both run
with one torch thread (the fastest setting for these small networks for both).

- agents.PPO: ``examples/gridworld_common.GRID_PPO`` on 64 cats of the native vector env (tuned for the grid).
- SB3 PPO: ``PPO("MlpPolicy", gym.make("GridWorld-v0"))``, every setting SB3's default, as users run it.

The figure of merit is the ratio of the median wall-clocks. "First reached" counts a greedy policy that
hits the optimum by chance early on, for either agent, so the per-seed figures are noisy; the medians
over a few seeds are what to quote, and ``--hold 3 --eval-every 2048`` (optimal at three scorings in a
row, 2048 steps apart: SB3 updates every 2048 steps) is the stricter reading.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from gridworld_common import OptimumTracker, median, optimal_return  # noqa: E402
from compare_gridworld import run_agents_ppo, run_sb3_ppo, warm_up  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--eval-every", type=int, default=1024, help="env steps between two greedy scorings")
    p.add_argument("--ours-cap", type=int, default=50_000, help="agents.PPO gives up after this many env steps")
    p.add_argument("--sb3-cap", type=int, default=100_000, help="SB3 gives up after this many env steps")
    p.add_argument("--hold", type=int, default=1,
                   help="stricter: count the optimum once this many scorings in a row were optimal (1: first hit)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    optimum = optimal_return()
    warm_up()
    when = "first equals" if args.hold == 1 else f"has equalled, at {args.hold} scorings in a row,"
    print(f"GridWorld-v0: wall-clock until the greedy return {when} the optimum ({optimum:g}); scored every "
          f"{args.eval_every} env steps; {args.seeds} seeds; {torch.get_num_threads()} torch thread(s)")
    print(f"{'seed':>4s} {'agents.PPO steps':>17s} {'seconds':>8s} {'SB3 PPO steps':>14s} {'seconds':>8s} "
          f"{'ratio':>7s}")
    ours, sb3 = [], []
    for seed in range(args.seeds):
        a = run_agents_ppo(seed, args.ours_cap, OptimumTracker(optimum, args.eval_every, True, args.hold))
        b = run_sb3_ppo(seed, args.sb3_cap, OptimumTracker(optimum, args.eval_every, True, args.hold))
        ours.append(a.tracker)
        sb3.append(b.tracker)
        ratio = b.tracker.first_seconds / a.tracker.first_seconds if a.tracker.reached and b.tracker.reached else None
        print(f"{seed:4d} {_fmt(a.tracker.first_steps):>17s} {_fmt(a.tracker.first_seconds, '.2f'):>8s} "
              f"{_fmt(b.tracker.first_steps):>14s} {_fmt(b.tracker.first_seconds, '.2f'):>8s} "
              f"{_fmt(ratio, '.1f'):>7s}", flush=True)
    t_ours, t_sb3 = median(t.first_seconds for t in ours), median(t.first_seconds for t in sb3)
    print(f"{'median':>4s} {median(t.first_steps for t in ours):17.0f} {t_ours:8.2f} "
          f"{median(t.first_steps for t in sb3):14.0f} {t_sb3:8.2f} {t_sb3 / t_ours:7.1f}")
    reached = (f"reached: agents.PPO {sum(t.reached for t in ours)}/{args.seeds}, "
               f"SB3 {sum(t.reached for t in sb3)}/{args.seeds}")
    print(f"agents.PPO is {t_sb3 / t_ours:.1f}x faster to the optimum (ratio of median seconds; goal >= 5x); {reached}")
    total = np.sum([t.first_seconds or 0 for t in ours]), np.sum([t.first_seconds or 0 for t in sb3])
    print(f"(summed over seeds: agents.PPO {total[0]:.1f} s, SB3 {total[1]:.1f} s)")


def _fmt(x, spec: str = "d") -> str:
    return "never" if x is None else format(x, spec)


if __name__ == "__main__":
    main()
