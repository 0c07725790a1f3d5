"""stable-baselines3's PPO on GridWorld-v0, with SB3's defaults, scored against value iteration's optimum.

    python examples/sb3_gridworld.py                     # 30k env steps (about a minute on a CPU core)
    python examples/sb3_gridworld.py --steps 50000 --seed 3

GridWorld-v0 is a plain Gymnasium env, so SB3 takes it as it is: ``PPO("MlpPolicy", env)`` wraps it in a
DummyVecEnv of one and one-hot encodes the Discrete(25) cell index. Every hyperparameter is SB3's default
(n_steps 2048, batch 64, 10 epochs, lr 3e-4, gamma 0.99, GAE lambda 0.95). Afterwards the greedy policy
(``predict(obs, deterministic=True)``) walks the grid once, which is exact because the grid is
deterministic, and its undiscounted return is compared with the optimum (+100: any way to the meat that
avoids the broom and the bathtub; value iteration takes the shortest, down 4 then right 4).
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import torch
from stable_baselines3 import PPO

import textenv  # noqa: F401  (registers GridWorld-v0)
from textenv.gridworld import ACTION_NAMES, policy_path, policy_return, value_iteration
from agents.utils import reproducible_cpu_kernels


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30_000, help="env steps to train for")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for SB3's small MLP)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = PPO("MlpPolicy", gym.make("GridWorld-v0"), seed=args.seed, device="cpu")
    start = time.perf_counter()
    model.learn(args.steps)
    seconds = time.perf_counter() - start

    greedy = lambda obs: int(model.predict(obs, deterministic=True)[0])  # noqa: E731
    solution = value_iteration()
    optimum = policy_return(solution.policy)
    score = policy_return(greedy)
    print(f"SB3 PPO (defaults), seed {args.seed}: {model.num_timesteps} env steps in {seconds:.1f} s "
          f"({model.num_timesteps / seconds:.0f} steps/s)")
    print(f"greedy return {score:g}   optimum (value iteration) {optimum:g}   "
          f"{'optimal' if score == optimum else 'not optimal'}")
    print("greedy path :", " ".join(f"{r},{c}" for r, c in policy_path(greedy)))
    print("optimal path:", " ".join(f"{r},{c}" for r, c in policy_path(solution.policy)))
    print("greedy action per cell:")
    for row in range(5):
        print("   ", " ".join(f"{ACTION_NAMES[greedy(row * 5 + col)]:>5s}" for col in range(5)))


if __name__ == "__main__":
    reproducible_cpu_kernels()  # before the first torch operation (figures repeat on machines of one vendor)
    main()
