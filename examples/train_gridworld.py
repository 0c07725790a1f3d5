"""Train agents.PPO and stable-baselines3's PPO on GridWorld-v0 and compare them against the exact optimum.

    python examples/train_gridworld.py                   # 3 seeds x 30k env steps per agent, a few minutes on 2 cores
    python examples/train_gridworld.py --seeds 5 --steps 50000

The lectures' cat grid (a 5x5 map: the cat starts top-left, a broom next to it costs -1, the bathtub costs
-10 and ends the episode, the meat pays +100 and ends it) has an exact solution by value iteration: the
best greedy return is +100 (the meat without the broom; e.g. down 4, right 4). Both agents train for the
same number of env steps; every 1024 steps a callback scores the greedy policy. The table gives each
agent's final greedy return, the env steps and seconds until it first equalled the optimum and from when
it stayed there, and its training steps per second; the plot goes to outputs/compare_gridworld.png.

agents.PPO runs the grid settings of ``examples/common.GRID_PPO`` on 64 cats of the natively batched env;
SB3 runs ``PPO("MlpPolicy", gym.make("GridWorld-v0"))`` with all its defaults. This script is
``examples/compare_gridworld.py`` with its defaults; see there for the flags.
"""

from __future__ import annotations

import compare_gridworld

if __name__ == "__main__":
    from agents.utils import reproducible_cpu_kernels

    reproducible_cpu_kernels()  # before the first torch operation: figures repeat on any x86-64 machine
    compare_gridworld.main()
