"""PPO, RLOO, GRPO, DPO and stable-baselines3's PPO on the default task: one leaderboard, scored by the gold judge.

    python examples/compare_algorithms.py                          # ppo rloo grpo dpo, 3 seeds, 3,200 responses
    python examples/compare_algorithms.py --betas 0.03 0.1 0.3     # the gold-versus-KL frontier, fixed betas
    python examples/compare_algorithms.py --methods ppo rloo --seeds 0 --responses 640   # a quick look
    python examples/compare_algorithms.py --methods sb3            # the SB3 baseline (slow: mode b, per-step forwards)
    python examples/compare_algorithms.py --methods trl_rloo trl_grpo   # TRL 1.16's trainers on the same task

The online methods share everything but the advantage: the same env (the KL paid per token, or for GRPO's
form in the loss), the same PPO update (``agents.ppo_update.ppo_update``: 4 epochs of 4 minibatches, clipping
0.2) and the same budget of generated responses. PPO's advantages come from its critic (GAE); RLOO's and
GRPO's from the other responses to the same prompt (groups of ``--group-size`` rows, the env's
``group_size`` reset option), so no critic is trained. DPO generates nothing: it learns the preference
pairs that trained the reward model (the same 9,262 pairs, one pass), with the SFT model as its reference;
its "equal budget" is equal data, the labels the reward model was fitted to, not equal responses.

Without ``--betas`` each online method runs with the adaptive KL controller of the main job (target 4 nats
per response) and DPO with beta 0.1. With ``--betas``, the online methods run at each fixed beta and DPO at
each of ``--dpo-betas``: the points of the reward-versus-KL frontier (Gao et al. 2023), where
over-optimisation shows as gold falling while KL grows.

``trl_rloo`` and ``trl_grpo`` are TRL 1.16's ``RLOOTrainer`` and ``GRPOTrainer`` on the same models, prompts,
reward, groups and budget (benchmarks/trl16_worker.py; its own virtualenv, built on first use), with
TRL's default update shape: one optimizer step per generation of 32 completions. TRL has no adaptive KL controller: without ``--betas`` they run at the fixed betas of the best TRL
settings found when the issue was filed (RLOO 0.05, GRPO 0.04, learning rate ``--trl-lr`` 1e-3; TRL's
default 1e-6 does not move this policy in the budget).

Every policy is scored the same way on held-out prompts: gold-score gain over the SFT model, RM score and
KL to the reference per response; wall-clock and responses are reported beside them. Each finished run is
saved at once to ``--out``/results.json (``--resume`` skips the runs already there, so a stopped comparison
keeps its work); the table and ``frontier.png`` are made from that file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

METHODS = ("ppo", "rloo", "grpo", "dpo", "sb3", "trl_rloo", "trl_grpo")
TRL_BETA = {"trl_rloo": 0.05, "trl_grpo": 0.04}
"""TRL's fixed beta without --betas (the best of the grid measured when the issue was filed)"""
ROOT = Path(__file__).resolve().parents[1]
TRL_VENV = ROOT / ".bench-venvs" / "trl-1.16"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["ppo", "rloo", "grpo", "dpo"], choices=METHODS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--responses", type=int, default=3200, help="budget of generated responses (online methods)")
    p.add_argument("--betas", type=float, nargs="+", default=None,
                   help="fixed KL coefficients for the online methods (default: the adaptive controller)")
    p.add_argument("--dpo-betas", type=float, nargs="+", default=None,
                   help="DPO's beta values with --betas (default 0.03 0.1 0.3; without --betas: 0.1)")
    p.add_argument("--group-size", type=int, default=4, help="responses per prompt for RLOO and GRPO")
    p.add_argument("--dpo-lr", type=float, default=None, help="DPO's learning rate (default: DPOConfig's)")
    p.add_argument("--trl-lr", type=float, default=1e-3, help="TRL trainers' learning rate")
    p.add_argument("--eval-prompts", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="outputs/compare_algorithms")
    p.add_argument("--resume", action="store_true", help="skip the runs already in --out/results.json")
    return p.parse_args()


def plan(args: argparse.Namespace) -> list[tuple[str, float | None, int]]:
    """The runs, as (method, beta or None for the adaptive controller, seed)."""
    runs = []
    for method in args.methods:
        if method == "dpo":
            from agents.dpo import DPOConfig

            betas = args.dpo_betas or ([0.03, 0.1, 0.3] if args.betas else [DPOConfig.beta])
        elif method.startswith("trl_"):
            betas = args.betas or [TRL_BETA[method]]
        elif method == "sb3":  # no adaptive controller either: examples/sb3_textgen.py's fixed beta
            from sb3_textgen import KL_COEF  # examples/ is on sys.path when this script runs

            betas = args.betas or [KL_COEF]
        else:
            betas = args.betas or [None]
        runs += [(method, beta, seed) for beta in betas for seed in args.seeds]
    return runs


def online_config(method: str, beta: float | None, seed: int, args: argparse.Namespace):
    from agents.rlhf import KLConfig, RLHFConfig, rlhf_ppo_config
    from textenv.text.config import TextGenConfig

    # Without a beta: the adaptive controller from the default start; with one: that beta, fixed.
    env, kl = (TextGenConfig(), KLConfig()) if beta is None else (TextGenConfig(kl_coef=beta), KLConfig(target=None))
    if method == "ppo":
        return RLHFConfig(env=env, kl=kl, responses=args.responses, seed=seed)
    # The group baseline already centres (GRPO also scales) the advantages: no further whitening.
    return RLHFConfig(env=env, kl=kl, responses=args.responses, seed=seed, advantage=method, group_size=args.group_size,
                      kl_in="loss" if method == "grpo" else "reward", ppo=rlhf_ppo_config(norm_adv=False))


def train(method: str, beta: float | None, seed: int, args: argparse.Namespace):
    """The trained policy, the responses it generated and the seconds it took."""
    start = time.perf_counter()
    if method == "dpo":
        from agents.dpo import DPOConfig, train_dpo

        lr = {} if args.dpo_lr is None else {"learning_rate": args.dpo_lr}
        return train_dpo(DPOConfig(beta=beta, seed=seed, **lr)).policy, 0, time.perf_counter() - start
    if method.startswith("trl_"):
        from textenv.text.loading import load_causal_lm
        from rlcore.device import resolve_device

        save_dir = Path(args.out) / "trl" / f"{method}_beta{beta}_seed{seed}"
        run_trl(method.removeprefix("trl_"), beta, seed, save_dir, args)
        responses = json.loads((save_dir / "trl_run.json").read_text())["responses"]
        return load_causal_lm(save_dir, resolve_device("auto")).eval(), responses, time.perf_counter() - start
    if method == "sb3":
        from sb3_textgen import parse_args as sb3_settings, run_sb3

        from textenv.default import gold_score

        rows = sb3_settings([]).num_envs  # examples/sb3_textgen.py's setup, at this budget and beta
        sb3_args = sb3_settings(["--kl-coef", str(beta), "--seed", str(seed), "--iterations", str(args.responses // rows)])
        lm, _, _, _ = run_sb3(sb3_args, gold_score, None)
        return lm.eval(), args.responses, time.perf_counter() - start
    from agents.rlhf import train_rlhf

    result = train_rlhf(online_config(method, beta, seed, args))
    return result.agent.policy, result.agent.responses, time.perf_counter() - start


def run_trl(method: str, beta: float, seed: int, save_dir: Path, args: argparse.Namespace) -> None:
    """One TRL 1.16 run in its own virtualenv (built on first use by benchmarks/trl_setup.ensure_venv)."""
    import subprocess
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from trl_setup import ensure_venv, worker_env

    from textenv import default

    python, _ = ensure_venv(TRL_VENV, ["trl==1.16.0"], {"trl": "1.16.0"})
    cmd = [str(python), str(ROOT / "benchmarks" / "trl16_worker.py"), "--method", method, "--model",
           str(default.sft_path()), "--reward", str(default.reward_path()), "--prompts",
           str(default.prompts_path("train")), "--responses", str(args.responses), "--beta", str(beta),
           "--lr", str(args.trl_lr), "--num-generations", str(args.group_size), "--seed", str(seed),
           "--threads", str(args.threads or 1), "--save-dir", str(save_dir)]
    subprocess.run(cmd, check=True, env=worker_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def table(results: list[dict], sft_gold: float) -> str:
    lines = [f"{'method':6s} {'beta':>8s} {'seeds':>5s} {'gold gain':>17s} {'RM':>7s} {'KL':>6s} {'wall s':>7s} "
             f"{'responses':>9s}"]
    keys = sorted({(r["method"], r["beta"] if r["beta"] is not None else -1.0) for r in results},
                  key=lambda k: (METHODS.index(k[0]), k[1]))
    for method, beta in keys:
        rs = [r for r in results if r["method"] == method and (r["beta"] if r["beta"] is not None else -1.0) == beta]
        gain = np.array([r["gold"] - sft_gold for r in rs])
        spread = gain.std(ddof=1) if len(gain) > 1 else float("nan")
        label = "adapt" if beta < 0 else f"{beta:g}"
        lines.append(f"{method:6s} {label:>8s} {len(rs):5d} {gain.mean():+8.3f} ± {spread:.3f} "
                     f"{np.mean([r['rm'] for r in rs]):+7.3f} {np.mean([r['kl'] for r in rs]):6.2f} "
                     f"{np.mean([r['wall_s'] for r in rs]):7.0f} {int(np.mean([r['responses'] for r in rs])):9d}")
    return "\n".join(lines)


def plot(results: list[dict], sft_gold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method in METHODS:
        rs = [r for r in results if r["method"] == method]
        if rs:
            ax.scatter([r["kl"] for r in rs], [r["gold"] - sft_gold for r in rs], label=method, alpha=0.8)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("KL to the reference per response (nats)")
    ax.set_ylabel("gold-score gain over SFT")
    ax.set_title("gold versus KL, one point per run")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    import torch
    from transformers.utils import logging as hf_logging

    from agents.checkpoint import atomic_write
    from agents.rlhf import evaluate_policy
    from rlcore.device import resolve_device
    from textenv.default import gold_score, prompts, sft_path
    from textenv.text.loading import load_causal_lm
    from textenv.text.prompts import load_prompts

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text())["runs"] if args.resume and results_path.exists() else []
    held_out = load_prompts(prompts("test"))[: args.eval_prompts]
    env_config = None  # the registered default task, which every method trained on
    sft = evaluate_policy(load_causal_lm(sft_path(), resolve_device("auto")).eval(), env_config, held_out, gold_score, seed=10_000)
    sft_gold = float(np.mean(sft["gold_score"]))
    print(f"SFT on {len(held_out)} held-out prompts: gold {sft_gold:+.3f}", flush=True)
    done = {(r["method"], r["beta"], r["seed"]) for r in results}
    for method, beta, seed in plan(args):
        if (method, beta, seed) in done:
            continue
        policy, responses, wall = train(method, beta, seed, args)
        ev = evaluate_policy(policy, env_config, held_out, gold_score, seed=10_000 + seed)
        results.append({"method": method, "beta": beta, "seed": seed, "responses": responses, "wall_s": wall,
                        "gold": float(np.mean(ev["gold_score"])), "rm": float(np.mean(ev["rm_score"])),
                        "kl": float(np.mean(ev["kl"]))})
        r = results[-1]
        print(f"{method} beta {beta if beta is not None else 'adaptive'} seed {seed}: gold {r['gold']:+.3f} "
              f"(gain {r['gold'] - sft_gold:+.3f}), RM {r['rm']:+.3f}, KL {r['kl']:.2f}, {wall:.0f} s", flush=True)
        record = {"sft_gold": sft_gold, "args": vars(args), "runs": results}  # atomically: a stop keeps the runs done
        atomic_write(results_path, lambda f: f.write(json.dumps(record, indent=2).encode()))
    print("\n" + table(results, sft_gold))
    plot(results, sft_gold, out / "frontier.png")
    print(f"\nresults: {results_path}   plot: {out / 'frontier.png'}")


if __name__ == "__main__":
    from agents.utils import reproducible_cpu_kernels

    reproducible_cpu_kernels()  # before the first torch operation (figures repeat on machines of one vendor)
    main()
