"""One RLHF PPO iteration (rollout + update) of agents.rlhf.train_rlhf, split into its pieces, against SB3's PPO.

    python benchmarks/bench_rlhf_iteration.py                               # 64 prompts x 32 new tokens
    python benchmarks/bench_rlhf_iteration.py --num-envs 16 --max-new-tokens 8 --model path/to/lm --reward path/to/rm
    python benchmarks/bench_rlhf_iteration.py --mixed-precision --skip-sb3  # bf16 autocast in our update
    python benchmarks/bench_rlhf_iteration.py --num-envs 8 --max-new-tokens 4 --epochs 1   # tiny: checks it runs

Both sides generate the same number of tokens (fixed-length responses: EOS does not end them) with the
same LM, reference, reward model, epochs and number of minibatches, after ``--warmup`` untimed iterations:

- ours: ``train_rlhf`` itself, its timed iterations instrumented from the callback. The rollout is
  ``collect_responses``: one whole response per env row, ``LMActorCritic`` in mode (a), one KV-cached
  forward per token shared with the env's KL (memo hit). The update is GAE and ``ppo_update`` on
  minibatches of whole responses, each scored with one forward (``LMActorCritic.score_responses``).
- SB3: ``SB3LMPolicy`` in mode (b): a full forward over the (B, L) window per step while acting, and one
  row per step in the update (SB3's minibatches are shuffled steps).

Printed: tokens/s of each and ours / SB3, the rollout and update halves and their ratios, and where each
iteration's time goes, so the slowest part is visible. Ours: policy forward (sampling), reference
forward, reward model, the rest of the rollout (env bookkeeping, per-token KL, sampling, decoding), the
update's scoring forwards, its Adam steps, and the rest of the update (backward, losses, GAE, clipping).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch

from agents.rlhf import KLConfig, RLHFConfig, rlhf_ppo_config, train_rlhf
from textenv.text.config import TextGenConfig


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
    kw = dict(max_new_tokens=args.max_new_tokens, max_prompt_tokens=args.max_prompt_tokens, device=args.device)
    kw.update({k: getattr(args, k) for k in ("model", "reward", "prompts") if getattr(args, k)})
    return kw


def sft(args) -> str:
    if args.model:
        return args.model
    from textenv.default import sft_path

    return str(sft_path())


def bench_ours(args) -> dict:
    """train_rlhf for warmup + timed iterations; the callback of the last warm-up one installs the timers."""
    config = RLHFConfig(
        # responses of the full length: both sides generate exactly T x N tokens
        env=TextGenConfig(stop_at_eos=False, kl_coef=0.05, **env_kwargs(args)),  # a fixed beta, as the SB3 side pays
        num_envs=args.num_envs,
        kl=KLConfig(target=None),
        ppo=rlhf_ppo_config(n_epochs=args.epochs, n_minibatches=args.minibatches, anneal_lr=False),
        responses=(args.warmup + args.iterations) * args.num_envs,
        gold=None, seed=0, device=args.device, mixed_precision=args.mixed_precision,
    )
    timers, timed, forwards = Timers(), defaultdict(float), {}

    def instrument(agent) -> None:
        policy = agent.policy
        instrument_env(agent.env, timers)
        # Instance attributes win over the class's: nn.Module.__call__ and score_responses() find the timed ones.
        policy.forward = timers.wrap(policy.forward, "policy forward (sampling)")
        policy.score_responses = timers.wrap(policy.score_responses, "update: scoring forward")
        agent.optimizer.step = timers.wrap(agent.optimizer.step, "update: Adam step")
        forwards["before"] = dict(policy.incremental.stats)

    def on_iteration(agent, m: dict) -> None:
        if m["iteration"] > args.warmup:
            for key in ("rollout_s", "update_s"):
                timed[key] += m[key]
            timed["tokens"] += args.num_envs * args.max_new_tokens
        if m["iteration"] == args.warmup:
            instrument(agent)

    result = train_rlhf(config, callback=on_iteration)
    parts = dict(timers.seconds)
    rollout = ("policy forward (sampling)", "reference forward", "reward model")
    update = ("update: scoring forward", "update: Adam step")
    split = {name: parts.get(name, 0.0) for name in rollout}
    split["rollout rest (env, KL, sampling, text)"] = timed["rollout_s"] - sum(split.values())
    split.update({name: parts.get(name, 0.0) for name in update})
    split["update rest (backward, losses, GAE)"] = timed["update_s"] - sum(parts.get(n, 0.0) for n in update)
    total = timed["rollout_s"] + timed["update_s"]
    stats = result.agent.policy.incremental.stats
    return {"tokens_per_s": timed["tokens"] / total, "total_s": total / args.iterations,
            "rollout_s": timed["rollout_s"] / args.iterations, "update_s": timed["update_s"] / args.iterations,
            "split": {k: v / args.iterations for k, v in split.items()},
            "policy_forwards": {k: stats[k] - forwards["before"].get(k, 0) for k in stats}}


def bench_sb3(args) -> dict:
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.callbacks import BaseCallback

    from agents.sb3_lm import SB3LMPolicy
    from textenv.sb3 import SB3VecEnvAdapter
    from textenv.text.vector import TextGenVectorEnv
    from textenv.text.wrappers import RecordResponseStatistics

    env = RecordResponseStatistics(TextGenVectorEnv(num_envs=args.num_envs, kl_coef=0.05, stop_at_eos=False,
                                                    **env_kwargs(args)))  # mode (b): no policy=
    venv = SB3VecEnvAdapter(env)
    n_steps = env.unwrapped.config.n_steps  # one whole response per row in every rollout
    batch = n_steps * args.num_envs
    model = SB3PPO(SB3LMPolicy, venv, n_steps=n_steps, batch_size=batch // args.minibatches,
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

    for _ in range(args.warmup):
        model.learn(batch, reset_num_timesteps=False)
    timers = Timers()
    instrument_env(env, timers)
    model.policy.forward = timers.wrap(model.policy.forward, "policy forward (sampling)")
    rollout_s = update_s = 0.0
    for _ in range(args.iterations):
        marks = Marks()
        model.learn(batch, callback=marks, reset_num_timesteps=False)
        end = time.perf_counter()
        rollout_s, update_s = rollout_s + marks.t1 - marks.t0, update_s + end - marks.t1
    split = dict(timers.seconds)
    split["rollout rest (env, KL, sampling, text)"] = rollout_s - sum(split.values())
    split["update"] = update_s
    n, total = args.iterations, rollout_s + update_s
    return {"tokens_per_s": batch * n / total, "total_s": total / n, "rollout_s": rollout_s / n,
            "update_s": update_s / n, "split": {k: v / n for k, v in split.items()}}


def report(results: dict) -> None:
    names = list(results)
    print(f"\n{'':42s}" + "".join(f"{n:>24s}" for n in names))
    for key, label in (("tokens_per_s", "tokens/s"), ("total_s", "s / iteration"), ("rollout_s", "  rollout"),
                       ("update_s", "  update")):
        print(f"{label:42s}" + "".join(f"{results[n][key]:24.3f}" for n in names))
    for n in names:
        r = results[n]
        print(f"\nwhere an iteration of {n} goes (s, share):")
        for part, seconds in r["split"].items():
            print(f"  {part:40s} {seconds:10.3f} {100 * seconds / r['total_s']:5.0f}%")
        slowest = max(r["split"], key=r["split"].get)
        print(f"  slowest part: {slowest} ({100 * r['split'][slowest] / r['total_s']:.0f}%)")
    if len(names) == 2:
        ours, sb3 = results[names[0]], results[names[1]]
        print(f"\nours / SB3: {ours['tokens_per_s'] / sb3['tokens_per_s']:.1f}x tokens/s (goal >= 10x); "
              f"SB3 / ours seconds: rollout {sb3['rollout_s'] / ours['rollout_s']:.1f}x, "
              f"update {sb3['update_s'] / ours['update_s']:.1f}x")
    print(f"policy IncrementalLM stats over the timed iterations (ours): {results[names[0]]['policy_forwards']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-envs", type=int, default=64, help="responses per iteration (prompts)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens generated per response")
    p.add_argument("--max-prompt-tokens", type=int, default=16)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--minibatches", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first, per side (>= 1)")
    p.add_argument("--iterations", type=int, default=1, help="timed iterations per side (their mean is printed)")
    p.add_argument("--mixed-precision", action="store_true", help="ours: bf16 autocast in the update")
    p.add_argument("--model", default=None, help="causal LM path (default: the embedded SFT model)")
    p.add_argument("--reward", default=None, help="reward model path (default: the embedded RM)")
    p.add_argument("--prompts", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    p.add_argument("--skip-sb3", action="store_true")
    args = p.parse_args()
    if args.warmup < 1 or args.iterations < 1:  # ours installs its timers from the last warm-up's callback
        p.error("--warmup and --iterations must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    print(f"one RLHF PPO iteration: {args.num_envs} responses x {args.max_new_tokens} new tokens, "
          f"{args.epochs} epochs x {args.minibatches} minibatches, mean of {args.iterations} after "
          f"{args.warmup} warm-up, torch threads {torch.get_num_threads()}, mixed precision {args.mixed_precision}")
    results = {"ours (train_rlhf)": bench_ours(args)}
    if not args.skip_sb3:
        results["SB3 PPO + SB3LMPolicy"] = bench_sb3(args)
    report(results)


if __name__ == "__main__":
    main()
