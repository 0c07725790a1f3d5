"""Steps per second: the native GridWorldVectorEnv against SyncVectorEnv over single envs.

    python benchmarks/bench_gridworld_vector.py
    python benchmarks/bench_gridworld_vector.py --num-envs 4096 --steps 2000 --sync-steps 20 --slip-prob 0.1

Both run random actions in SAME_STEP autoreset mode with the 100-step limit. The Sync one is timed for
fewer vector steps because it is a Python loop over its copies. Random actions are drawn up front, so
the figures time the envs, not the action sampler.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import textenv  # noqa: F401  (registers GridWorld-v0)


def steps_per_second(envs: gym.vector.VectorEnv, steps: int, seed: int) -> float:
    """Environment steps (vector steps x copies) per second over `steps` vector steps of random actions."""
    actions = np.random.default_rng(seed).integers(0, 4, size=(steps, envs.num_envs))
    envs.reset(seed=seed)
    envs.step(actions[0])  # warm-up
    start = time.perf_counter()
    for t in range(steps):
        envs.step(actions[t])
    return steps * envs.num_envs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=2000, help="vector steps timed for the native env")
    parser.add_argument("--sync-steps", type=int, default=20, help="vector steps timed for SyncVectorEnv")
    parser.add_argument("--slip-prob", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    kwargs = {"slip_prob": args.slip_prob}
    native = gym.make_vec("GridWorld-v0", num_envs=args.num_envs, vectorization_mode="vector_entry_point", **kwargs)
    sync = SyncVectorEnv(
        [lambda: gym.make("GridWorld-v0", **kwargs) for _ in range(args.num_envs)],
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    native_sps = steps_per_second(native, args.steps, args.seed)
    sync_sps = steps_per_second(sync, args.sync_steps, args.seed)
    print(f"GridWorld-v0, {args.num_envs} copies, slip_prob={args.slip_prob}, random actions")
    print(f"  native GridWorldVectorEnv: {native_sps:>14,.0f} steps/s  ({args.steps} vector steps)")
    print(f"  SyncVectorEnv of singles : {sync_sps:>14,.0f} steps/s  ({args.sync_steps} vector steps)")
    print(f"  ratio native / sync      : {native_sps / sync_sps:>14,.1f}x")


if __name__ == "__main__":
    main()
