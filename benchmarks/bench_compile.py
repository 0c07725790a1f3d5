"""torch.compile on the RLHF hot paths: the update's forward + backward, and the rollout's decode step.

    python benchmarks/bench_compile.py                       # the default task's model, CPU, one thread
    python benchmarks/bench_compile.py --device cuda         # where a GPU is lent

Both paths run eagerly and compiled (``torch.compile(model, dynamic=True)``) on the same inputs, in
alternating rounds; it prints the compile time (the first compiled call) and the steady-state ratio
compiled / eager per path. The update path is ``LMActorCritic.score_responses`` on minibatches of real
responses plus the backward of their summed log-probs; the decode path is ``IncrementalLM`` generating
``--new-tokens`` tokens for ``--rows`` prompts with its KV cache. A path is worth compiling when its ratio
is below 1 and the time saved over a run exceeds the compile time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from agents.lm import LMActorCritic
from agents.rlhf.responses import collect_responses
from rlcore.device import resolve_device
from textenv.text.decoding import IncrementalLM


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=32, help="responses per rollout")
    p.add_argument("--new-tokens", type=int, default=24)
    p.add_argument("--minibatch", type=int, default=8, help="responses per update step")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def update_steps(policy, batch, minibatch: int) -> None:
    for rows in torch.arange(batch.ids.shape[0], device=batch.ids.device).split(minibatch):
        logprob, _, values = policy.score_responses(batch.ids[rows], batch.mask[rows], batch.prompt_cols)
        (logprob.sum() + values.sum()).backward()
    policy.zero_grad(set_to_none=True)


@torch.no_grad()
def decode(model, ids, mask, new_tokens: int) -> None:
    runner = IncrementalLM(model)
    for _ in range(new_tokens):
        nxt = runner(ids, mask).logits.argmax(-1, keepdim=True)
        ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from textenv.default import sft_path
    from textenv.text.vector import TextGenVectorEnv

    device = resolve_device(args.device)
    policy = LMActorCritic(sft_path(), device=device)
    env = TextGenVectorEnv(num_envs=args.rows, policy=policy, max_new_tokens=args.new_tokens, device=args.device)
    batch = collect_responses(env, policy, 0.1, 0, torch.Generator(device).manual_seed(0), device)
    prompt = {"ids": batch.ids[:, :batch.prompt_cols], "mask": batch.mask[:, :batch.prompt_cols]}
    eager_model = policy.model
    compiled_model = torch.compile(policy.model, dynamic=True)

    def update(model):
        policy.model = model
        update_steps(policy, batch, args.minibatch)

    def generate(model):
        decode(model, prompt["ids"], prompt["mask"], args.new_tokens)

    for name, run in (("update forward+backward", update), ("decode step (KV cache)", generate)):
        try:
            compile_s = timed(lambda: run(compiled_model))
        except Exception as e:  # a graph that does not compile is a result too
            print(f"{name}: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
            continue
        run(eager_model)
        eager, compiled = [], []
        for _ in range(args.rounds):
            eager.append(timed(lambda: run(eager_model)))
            compiled.append(timed(lambda: run(compiled_model)))
        e, c = float(np.median(eager)), float(np.median(compiled))
        print(f"{name}: eager {e * 1000:.1f} ms, compiled {c * 1000:.1f} ms, compiled / eager {c / e:.2f} "
              f"(first compiled call {compile_s:.1f} s: pays back after {compile_s / max(e - c, 1e-9):.0f} calls "
              f"if the ratio is below 1)")
    policy.model = eager_model


if __name__ == "__main__":
    main()
