"""How long ``gym.make("TextGen-v0")`` takes in a fresh process, and how much of it is library imports.

    python benchmarks/bench_make.py
    python benchmarks/bench_make.py --rounds 7

Each round starts fresh Python processes, one after the other (interleaved, so background load on a shared
machine hits both alike):

  ready      ``import gymnasium, textenv`` then ``gym.make("TextGen-v0")`` and the first ``reset()``: the
             time from the first import to an env that can step, on the embedded default task;
  imports    ``import torch`` and the transformers code the default task runs (the Auto classes, GPT-2's
             modeling module, the KV cache): the floor any env built on these libraries pays.

The difference is this package's own work (loading two 250k-parameter models, the tokenizer and the prompts).
The goal is ready < 5 s; the script prints the medians and the share that is imports.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

READY = """
import time
start = time.perf_counter()
import gymnasium as gym
import textenv
env = gym.make("TextGen-v0")
env.reset(seed=0)
print(time.perf_counter() - start)
"""

IMPORTS = """
import time
start = time.perf_counter()
import torch
import transformers.models.gpt2.modeling_gpt2
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, DynamicCache
print(time.perf_counter() - start)
"""


def seconds(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    seconds(READY)  # warm the OS file cache (a fresh install's first run also writes .pyc files)
    ready, imports = [], []
    for _ in range(args.rounds):
        ready.append(seconds(READY))
        imports.append(seconds(IMPORTS))
    r, i = statistics.median(ready), statistics.median(imports)
    print(f"gym.make('TextGen-v0') + reset, fresh process: median {r:.2f} s  (min {min(ready):.2f}, max {max(ready):.2f}; goal < 5 s)")
    print(f"import torch + transformers GPT-2 classes:     median {i:.2f} s  (min {min(imports):.2f}, max {max(imports):.2f})")
    print(f"textenv's own work: {r - i:.2f} s; imports are {i / r:.0%} of the time to ready ({args.rounds} rounds)")


if __name__ == "__main__":
    main()
