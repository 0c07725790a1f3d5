"""stable-baselines3's PPO on TextGen-v0, next to our RLHF PPO (agents.rlhf) on about the same budget.

    python examples/sb3_textgen.py                      # default task, 24 iterations of 32 rows x <= 24 tokens
    python examples/sb3_textgen.py --iterations 10 --num-envs 16

SB3 drives the env through ``textenv.sb3.SB3VecEnvAdapter`` with ``agents.sb3_lm.SB3LMPolicy`` (the same
SFT model as actor, a zero-initialised value head on its trunk) in the env's mode (b): the env pays
``+beta * log pi_ref`` per token and SB3's ``ent_coef = beta`` stands in for the ``-beta * log pi`` half of
the KL penalty (see agents/sb3_lm.py for where the two agree and differ). ``agents.rlhf.train_rlhf`` runs
mode (a): the env computes the whole per-token KL from the agent's own forward. Both use a FIXED beta and
the same PPO settings (epochs, minibatches, clipping, gamma = 1, lambda = 0.95, learning rate). SB3 rolls
out (24 tokens x 32 rows) windows; ours one whole response per row, the same number of iterations, so it
generates at most SB3's tokens (the table prints both counts). Afterwards both policies are scored the same way on held-out prompts: gold score, RM score
and the KL to the reference per response. Outputs: outputs/sb3_textgen/{comparison.png, summary.json}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from agents.rlhf import RLHFConfig, rlhf_ppo_config
from textenv.text.config import TextGenConfig

KL_COEF = 0.05
"""The fixed beta of both sides (SB3 has no adaptive KL controller): TRL's RLOO beta on this task."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=24)
    p.add_argument("--num-envs", type=int, default=RLHFConfig.num_envs)
    p.add_argument("--max-new-tokens", type=int, default=TextGenConfig.max_new_tokens)
    p.add_argument("--kl-coef", type=float, default=KL_COEF, help="fixed beta (SB3: ent_coef and the env's kl_coef)")
    p.add_argument("--lr", type=float, default=rlhf_ppo_config().learning_rate)
    p.add_argument("--eval-prompts", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default="outputs/sb3_textgen")
    return p.parse_args(argv)


def run_ours(args, gold):
    from agents.rlhf import KLConfig, RLHFConfig, rlhf_ppo_config, train_rlhf
    from textenv.text.config import TextGenConfig

    cfg = RLHFConfig(
        env=TextGenConfig(max_new_tokens=args.max_new_tokens, kl_coef=args.kl_coef, device=args.device),
        num_envs=args.num_envs,
        kl=KLConfig(target=None),
        ppo=rlhf_ppo_config(learning_rate=args.lr),
        # one response per row per iteration: at most the tokens SB3's (T, N) windows generate
        responses=args.iterations * args.num_envs, seed=args.seed, device=args.device, gold=gold,
    )
    start = time.perf_counter()
    result = train_rlhf(cfg)
    wall = time.perf_counter() - start
    curve = [{"tokens": h["generated_tokens"], "rm_score": h["rm_score"], "gold_score": h["gold_score"], "kl": h["kl"]}
             for h in result.history]
    return result.agent.policy, cfg.env, curve, wall, result.agent.generated_tokens


def run_sb3(args, gold, env_config=None):
    from stable_baselines3 import PPO as SB3PPO

    from textenv.text.wrappers import RecordResponseStatistics
    from agents.sb3_lm import SB3LMPolicy, SB3RLHFCallback
    from textenv.default import sft_path
    from textenv.sb3 import SB3VecEnvAdapter
    from textenv.text.vector import TextGenVectorEnv

    env = RecordResponseStatistics(TextGenVectorEnv(args.num_envs, env_config, kl_coef=args.kl_coef,
                                                    max_new_tokens=args.max_new_tokens))  # mode (b)
    venv = SB3VecEnvAdapter(env)
    n_steps = env.unwrapped.config.n_steps  # one whole response per row in every rollout
    batch = n_steps * args.num_envs
    lr = args.lr
    model = SB3PPO(
        SB3LMPolicy, venv, n_steps=n_steps, batch_size=batch // 4, n_epochs=4, gamma=1.0, gae_lambda=0.95,
        clip_range=0.2, clip_range_vf=0.2, ent_coef=args.kl_coef, vf_coef=0.5, max_grad_norm=1.0,
        learning_rate=lambda progress: lr * progress,  # linear decay to 0, like agents.rlhf's schedule
        seed=args.seed, device=args.device,
        policy_kwargs=dict(lm=str(sft_path()), sampling=env.unwrapped.sampling),
    )
    callback = SB3RLHFCallback(gold_fn=gold)
    start = time.perf_counter()
    model.learn(args.iterations * batch, callback=callback)
    wall = time.perf_counter() - start
    curve = [{"tokens": h["timesteps"], "rm_score": h["rm_score"], "gold_score": h["gold_score"], "kl": h["kl"]}
             for h in callback.history]
    return model.policy.lm, curve, wall, model.num_timesteps


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for name, curve in curves.items():
        x = [c["tokens"] for c in curve]
        for ax, key, title in zip(axes, ("gold_score", "rm_score", "kl"),
                                  ("gold score", "RM score", "KL to reference per response (nats)")):
            ax.plot(x, [c[key] for c in curve], label=name)
            ax.set_title(title)
            ax.set_xlabel("generated tokens")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    from transformers.utils import logging as hf_logging

    from agents.rlhf import evaluate_policy
    from textenv.default import gold_score, prompts
    from textenv.text.prompts import load_prompts

    hf_logging.disable_progress_bar()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    eval_prompts = load_prompts(prompts("test"))[: args.eval_prompts]

    print(f"budget: {args.iterations} iterations x {args.num_envs} responses x {args.max_new_tokens} tokens, "
          f"fixed beta {args.kl_coef}", flush=True)
    ours_policy, env_config, ours_curve, ours_wall, ours_tokens = run_ours(args, gold_score)
    print(f"agents.rlhf done in {ours_wall:.0f} s", flush=True)
    sb3_lm, sb3_curve, sb3_wall, sb3_tokens = run_sb3(args, gold_score, env_config)
    print(f"SB3 PPO done in {sb3_wall:.0f} s", flush=True)

    rows = {}
    for name, policy, wall, tokens in (("agents.rlhf (mode a)", ours_policy, ours_wall, ours_tokens),
                                       ("SB3 PPO (mode b)", sb3_lm.eval(), sb3_wall, sb3_tokens)):
        r = evaluate_policy(policy, env_config, eval_prompts, gold_score, seed=10_000 + args.seed)
        rows[name] = {"gold_score": float(np.mean(r["gold_score"])), "rm_score": float(np.mean(r["rm_score"])),
                      "kl": float(np.mean(r["kl"])), "wall_s": wall, "tokens": int(tokens), "tokens_per_s": tokens / wall}
    print(f"\n{'':22s} {'gold':>8s} {'RM':>8s} {'KL':>7s} {'wall s':>8s} {'tokens':>8s} {'tokens/s':>9s}")
    for name, r in rows.items():
        print(f"{name:22s} {r['gold_score']:+8.3f} {r['rm_score']:+8.3f} {r['kl']:7.2f} {r['wall_s']:8.0f} "
              f"{r['tokens']:8d} {r['tokens_per_s']:9.0f}")
    speed = rows["agents.rlhf (mode a)"]["tokens_per_s"] / rows["SB3 PPO (mode b)"]["tokens_per_s"]
    print(f"\nagents.rlhf is {speed:.1f}x faster in tokens/s on this machine")
    plot({"agents.rlhf (mode a)": ours_curve, "SB3 PPO (mode b)": sb3_curve}, out / "comparison.png")
    (out / "summary.json").write_text(json.dumps({"args": vars(args), "results": rows, "speedup": speed}, indent=2))
    print(f"plot: {out / 'comparison.png'}   summary: {out / 'summary.json'}")


if __name__ == "__main__":
    from agents.utils import reproducible_cpu_kernels

    reproducible_cpu_kernels()  # before the first torch operation (figures repeat on machines of one vendor)
    main()
