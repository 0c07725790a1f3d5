"""One RLHF PPO iteration (rollout + update): agents.PPO + agents.lm against stable-baselines3's PPO.

    python benchmarks/bench_rlhf_iteration.py                               # 64 prompts x 32 new tokens
    python benchmarks/bench_rlhf_iteration.py --num-envs 16 --max-new-tokens 8 --model path/to/lm --reward path/to/rm

Both sides generate the same number of tokens with the same LM, reference, reward model, epochs and
number of minibatches, after one untimed warm-up iteration each:

- agents.PPO: ``LMActorCritic`` in mode (a): one KV-cached forward per token, shared with the env's KL
  (memo hit); the update scores each episode with one forward over its whole sequence.
- SB3: ``SB3LMPolicy`` in mode (b): a full forward over the (B, L) window per step while acting, and one
  row per step in the update (SB3's minibatches are shuffled steps).

Printed: tokens/s of each and their ratio, and where an iteration's time goes (policy generation, reference
forward, reward model, the rest of the env, the update), so the slowest part is visible.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch


class Timers:
    """Accumulated seconds per name; ``wrap(fn, name)`` times every call of fn."""

    def __init__(self):
        self.seconds = defaultdict(float)

    def wrap(self, fn, name):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return timed


class TimedCallable:
    """Stands in for an object whose calls are timed (the env's reference IncrementalLM, its reward fn)."""

    def __init__(self, obj, timers: Timers, name: str):
        self._obj, self._call = obj, timers.wrap(obj.__call__, name)

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._obj, name)


def instrument_env(env, timers: Timers) -> None:
    core = env.unwrapped.core
    core.ref_lm = TimedCallable(core.ref_lm, timers, "reference forward")
    core.reward_fn = TimedCallable(core.reward_fn, timers, "reward model")


def env_kwargs(args) -> dict:
    kw = dict(max_new_tokens=args.max_new_tokens, max_prompt_tokens=args.max_prompt_tokens, device=args.device,
              kl_coef=0.05, stop_at_eos=False)  # full-length responses: both sides generate exactly T x N tokens
    if args.model:
        kw["model"] = args.model
    if args.reward:
        kw["reward"] = args.reward
    if args.prompts:
        kw["prompts"] = args.prompts
    return kw


def sft(args) -> str:
    if args.model:
        return args.model
    from textenv.default import sft_path

    return str(sft_path())


def bench_ours(args) -> dict:
    from agents import PPO
    from agents.lm import LMActorCritic
    from agents.rlhf import ResponseStats, rlhf_ppo_config
    from textenv.text.sampling import SamplingConfig
    from textenv.text.vector import TextGenVectorEnv

    policy = LMActorCritic(sft(args), sampling=SamplingConfig(), device=args.device)
    env = ResponseStats(TextGenVectorEnv(num_envs=args.num_envs, policy=policy, **env_kwargs(args)))
    cfg = rlhf_ppo_config(n_steps=args.max_new_tokens, n_epochs=args.epochs, n_minibatches=args.minibatches)
    agent = PPO(env, policy=policy, seed=0, device=args.device, config=cfg)
    batch = args.max_new_tokens * args.num_envs
    agent.learn(batch)  # warm-up
    timers = Timers()
    instrument_env(env, timers)
    policy.act = timers.wrap(policy.act, "policy generation")
    seen = {}
    agent.learn(batch, callback=lambda a, m: seen.update(m))
    total = seen["rollout_s"] + seen["update_s"]
    split = dict(timers.seconds)
    split["env (KL, text, bookkeeping)"] = seen["rollout_s"] - sum(split.values())
    split["update"] = seen["update_s"]
    return {"tokens_per_s": batch / total, "total_s": total, "split": split, "policy_forwards": policy.incremental.stats}


def bench_sb3(args) -> dict:
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.callbacks import BaseCallback

    from agents.rlhf import ResponseStats
    from agents.sb3_lm import SB3LMPolicy
    from textenv.sb3 import SB3VecEnvAdapter
    from textenv.text.vector import TextGenVectorEnv

    env = ResponseStats(TextGenVectorEnv(num_envs=args.num_envs, **env_kwargs(args)))  # mode (b)
    venv = SB3VecEnvAdapter(env)
    batch = args.max_new_tokens * args.num_envs
    model = SB3PPO(SB3LMPolicy, venv, n_steps=args.max_new_tokens, batch_size=batch // args.minibatches,
                   n_epochs=args.epochs, gamma=1.0, gae_lambda=0.95, ent_coef=0.05, learning_rate=1e-4,
                   max_grad_norm=1.0, seed=0, device=args.device,
                   policy_kwargs=dict(lm=sft(args), sampling=env.unwrapped.sampling))

    class Marks(BaseCallback):
        def _on_rollout_start(self):
            self.t0 = time.perf_counter()

        def _on_rollout_end(self):
            self.t1 = time.perf_counter()

        def _on_step(self):
            return True

    model.learn(batch)  # warm-up
    timers = Timers()
    instrument_env(env, timers)
    model.policy.forward = timers.wrap(model.policy.forward, "policy generation")
    marks = Marks()
    start = time.perf_counter()
    model.learn(batch, callback=marks, reset_num_timesteps=False)
    end = time.perf_counter()
    rollout_s, update_s = marks.t1 - marks.t0, end - marks.t1
    split = dict(timers.seconds)
    split["env (KL, text, bookkeeping)"] = rollout_s - sum(split.values())
    split["update"] = update_s
    return {"tokens_per_s": batch / (end - start), "total_s": end - start, "split": split}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-envs", type=int, default=64, help="prompts per iteration")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens generated per prompt")
    p.add_argument("--max-prompt-tokens", type=int, default=16)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--minibatches", type=int, default=4)
    p.add_argument("--model", default=None, help="causal LM path (default: the embedded SFT model)")
    p.add_argument("--reward", default=None, help="reward model path (default: the embedded RM)")
    p.add_argument("--prompts", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default); 1 is fastest for tiny models")
    p.add_argument("--skip-sb3", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    print(f"one PPO iteration: {args.num_envs} prompts x {args.max_new_tokens} new tokens, "
          f"{args.epochs} epochs x {args.minibatches} minibatches, torch threads {torch.get_num_threads()}")
    results = {"agents.PPO + LMActorCritic": bench_ours(args)}
    if not args.skip_sb3:
        results["SB3 PPO + SB3LMPolicy"] = bench_sb3(args)
    names = list(results)
    parts = list(results[names[0]]["split"])
    print(f"\n{'':32s}" + "".join(f"{n:>28s}" for n in names))
    print(f"{'tokens/s':32s}" + "".join(f"{results[n]['tokens_per_s']:28.0f}" for n in names))
    print(f"{'iteration wall-clock (s)':32s}" + "".join(f"{results[n]['total_s']:28.2f}" for n in names))
    for part in parts:
        row = "".join(f"{results[n]['split'][part]:20.2f} s {100 * results[n]['split'][part] / results[n]['total_s']:4.0f}%"
                      for n in names)
        print(f"  {part:30s}" + row)
    if len(names) == 2:
        ratio = results[names[0]]["tokens_per_s"] / results[names[1]]["tokens_per_s"]
        print(f"\nratio agents.PPO / SB3: {ratio:.1f}x tokens/s (goal >= 10x)")
    for n in names:
        split = results[n]["split"]
        slowest = max(split, key=split.get)
        print(f"slowest part of {n}: {slowest} ({100 * split[slowest] / results[n]['total_s']:.0f}%)")
    print(f"policy IncrementalLM stats (agents.PPO): {results[names[0]]['policy_forwards']}")


if __name__ == "__main__":
    main()
