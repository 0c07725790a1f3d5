"""RLHF with PPO on the embedded default task: make the SFT model write reviews the gold judge prefers.

    python examples/rlhf_ppo.py                        # one seed, the default budget of responses (printed)
    python examples/rlhf_ppo.py --responses 1600       # a budget of 1,600 generated responses
    python examples/rlhf_ppo.py --seeds 0 1 2          # three seeds: mean and spread of the gold-score gain
    python examples/rlhf_ppo.py --train-reward-model   # retrain the reward model on the preference pairs first
    python examples/rlhf_ppo.py --model path/to/causal-lm --reward path/to/rm --prompts prompts.txt

What happens (lecture slides, "RLHF and PPO"): the SFT language model is copied into the policy
(``agents.lm.LMActorCritic``: the LM plus a zero-initialised value head on its trunk) and stays frozen as
the reference. ``TextGen-v0`` generates one token per step; every token pays ``-beta * KL_t`` to the
reference and the last one also gets the reward model's score. ``agents.rlhf.train_rlhf`` rolls out whole responses, one per env row, and
runs PPO's update on them; an adaptive controller (Ziegler et al. 2019) moves beta so the KL per response stays near ``--kl-target``.

The reward model is a proxy learnt from preference pairs; the gold judge (sentiment + fluency) is what the
pairs were labelled with. The table compares the SFT model and the trained policy on held-out prompts:
gold score (the real objective), RM score (what PPO optimised) and KL to the reference (what it cost).
Outputs: outputs/rlhf_ppo/curves.png, summary.json (per seed: responses, generated tokens, loop seconds,
seconds per response, gold, RM score and KL) and one folder per seed with progress.csv and the checkpoint
(``--resume`` continues it).

Stopping and resuming: Ctrl-C (or SIGTERM) lets the current iteration finish, saves a checkpoint there and
exits (status 130 / 143) with the command that continues it; a second Ctrl-C stops at once. ``--resume``
continues each seed from its checkpoint with the same flags (other flags are refused, with the list of
differences); a seed with no checkpoint yet starts fresh, with a note. One live run per ``--out`` folder.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from agents.rlhf import KLConfig, RLHFConfig, TextEnvConfig, evaluate, default_gold, rlhf_ppo_config, train_rlhf

DEFAULTS = RLHFConfig()
PPO_DEFAULTS = rlhf_ppo_config()
from agents.run_guard import FolderBusyError, RunFolder, TrainingInterrupted
from agents.utils import reproducible_cpu_kernels


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    p.add_argument("--responses", type=int, default=DEFAULTS.responses,
                   help="budget per seed: generated responses to train on (whole iterations of --num-envs)")
    p.add_argument("--num-envs", type=int, default=DEFAULTS.env.num_envs, help="responses per iteration")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULTS.env.max_new_tokens, help="response length limit")
    p.add_argument("--lr", type=float, default=PPO_DEFAULTS.learning_rate, help="Adam learning rate (decays linearly to 0)")
    p.add_argument("--epochs", type=int, default=PPO_DEFAULTS.n_epochs, help="PPO epochs per iteration")
    p.add_argument("--minibatches", type=int, default=PPO_DEFAULTS.n_minibatches, help="minibatches per epoch")
    p.add_argument("--kl-coef", type=float, default=DEFAULTS.kl.init_coef, help="initial KL coefficient beta")
    p.add_argument("--kl-target", type=float, default=DEFAULTS.kl.target, help="KL per response (nats) the controller holds")
    p.add_argument("--kl-horizon", type=float, default=DEFAULTS.kl.horizon, help="controller horizon (responses)")
    p.add_argument("--mixed-precision", action="store_true",
                   help="bf16 autocast in the update (CUDA, or a CPU with native bf16)")
    p.add_argument("--eval-prompts", type=int, default=256, help="held-out prompts for the before/after table")
    p.add_argument("--model", default=None, help="SFT causal LM name/path (default: the embedded one)")
    p.add_argument("--reward", default=None, help="reward model name/path (default: the embedded one)")
    p.add_argument("--prompts", default=None, help="prompts file (default: the embedded train split)")
    p.add_argument("--train-reward-model", action="store_true", help="retrain the reward model first")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; 1 is fastest for this tiny model on a small shared CPU (0: torch's default)")
    p.add_argument("--out", default="outputs/rlhf_ppo")
    p.add_argument("--resume", action="store_true",
                   help="continue each seed's run from its checkpoint, with the same flags; a seed without a "
                        "checkpoint yet starts fresh (with a note)")
    p.add_argument("--checkpoint-every", type=int, default=1,
                   help="iterations between checkpoints: a killed run loses at most this many (Ctrl-C saves "
                        "one where it stops)")
    p.add_argument("--log-every", type=int, default=10, help="print a metrics line every N iterations")
    return p.parse_args()


def make_config(args: argparse.Namespace, seed: int, reward, resume: bool = False) -> RLHFConfig:
    return RLHFConfig(
        env=TextEnvConfig(model=args.model, reward=reward, prompts=args.prompts, num_envs=args.num_envs,
                          max_new_tokens=args.max_new_tokens, max_prompt_tokens=12,
                          device=args.device),
        kl=KLConfig(init_coef=args.kl_coef, target=args.kl_target, horizon=args.kl_horizon),
        ppo=rlhf_ppo_config(learning_rate=args.lr, n_epochs=args.epochs, n_minibatches=args.minibatches),
        responses=args.responses,
        mixed_precision=args.mixed_precision,
        seed=seed,
        device=args.device,
        out_dir=str(Path(args.out) / f"seed{seed}"),
        checkpoint_every=args.checkpoint_every,
        resume=resume,
        log_every=args.log_every,
    )


def resumable(args: argparse.Namespace, seed: int) -> bool:
    """Whether ``seed``'s folder holds a checkpoint to resume (with --resume, a seed without one starts fresh)."""
    path = Path(args.out) / f"seed{seed}" / "checkpoint.pt"
    if not path.exists():
        print(f"seed {seed}: no checkpoint at {path} yet: starting it fresh", flush=True)
        return False
    return True


def eval_prompts(args: argparse.Namespace) -> list[str]:
    """Held-out prompts: the default task's test split (your own prompts file when given)."""
    from textenv.text.loading import load_prompts

    if args.prompts is not None:
        return load_prompts(args.prompts)[: args.eval_prompts]
    from textenv.default import prompts as default_prompts

    return load_prompts(default_prompts("test"))[: args.eval_prompts]


def retrain_reward_model(out: Path, sft, n_norm: int = 1000) -> str:
    """Retrain the reward model on the shipped preference pairs (textenv.reward_model); returns its path.

    As in ``python -m textenv.default.build``: the RM starts from the SFT trunk, learns the pairs with the
    pairwise loss, and is normalised to mean 0 / std 1 over fresh SFT samples on train prompts.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from textenv import default, reward_model as rmod
    from textenv.default.sft import generate_completions

    path = out / "reward_model"
    t0 = time.perf_counter()
    print(f"training the reward model into {path} ...", flush=True)
    lm, tok = AutoModelForCausalLM.from_pretrained(str(sft)).eval(), AutoTokenizer.from_pretrained(str(sft))
    torch.manual_seed(0)
    rm = rmod.init_reward_model(lm, tok)
    stats = rmod.train_reward_model(rm, tok, default.preferences("train"), rmod.RewardTrainConfig())
    prompts = list(default.prompts("train")["prompt"])[:n_norm]
    completions = [g[0] for g in generate_completions(lm, tok, prompts, 1, max_new_tokens=48, seed=3)]
    rmod.set_normalization(rm, rmod.score_texts(rm, tok, prompts, completions))
    accuracy = rmod.pairwise_accuracy(rm, tok, default.preferences("test"))
    rmod.save_reward_model(rm, tok, path)
    print(f"reward model: loss {stats['loss_first']:.3f} -> {stats['loss_last']:.3f}, held-out pairwise accuracy "
          f"{accuracy:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return str(path)


def table(rows: list[tuple[str, dict]]) -> str:
    lines = [f"{'':24s} {'gold score':>14s} {'RM score':>14s} {'KL to ref':>10s} {'length':>7s}"]
    for name, r in rows:
        lines.append(f"{name:24s} {np.mean(r['gold_score']):+8.3f} ±{sem(r['gold_score']):.3f} "
                     f"{np.mean(r['rm_score']):+8.3f} ±{sem(r['rm_score']):.3f} {np.mean(r['kl']):10.2f} "
                     f"{np.mean(r['tokens']):7.1f}")
    return "\n".join(lines)


def sem(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def show_samples(before: dict, after: dict, k: int = 4) -> None:
    for i in range(k):
        print(f"\n  prompt: {before['prompt'][i]!r}")
        print(f"    SFT  (gold {before['gold_score'][i]:+.2f}, RM {before['rm_score'][i]:+.2f}): {before['completion'][i]!r}")
        print(f"    PPO  (gold {after['gold_score'][i]:+.2f}, RM {after['rm_score'][i]:+.2f}): {after['completion'][i]!r}")


def plot(histories: dict[int, list[dict]], kl_target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("gold_score", "gold score (true objective)"), ("rm_score", "RM score (proxy, optimised)"),
            ("kl", "KL to reference per response (nats)"), ("kl_coef", "KL coefficient beta")]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    for seed, h in histories.items():
        x = [r["responses"] for r in h]
        for ax, (key, title) in zip(axes, keys):
            ax.plot(x, [r[key] for r in h], label=f"seed {seed}", alpha=0.8)
            ax.set_title(title)
            ax.set_xlabel("responses")
    axes[2].axhline(kl_target, color="k", ls="--", lw=1, label="target")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    try:
        with RunFolder(args.out, "--out"):  # writable, and no other live run writes its summary there
            run(args)
    except FolderBusyError as e:
        sys.exit(f"error: {e}")
    except TrainingInterrupted as e:
        command = shlex.join([sys.executable, *sys.argv] + ([] if args.resume else ["--resume"]))
        print(f"\nstopped by {e.signal_name} at iteration {e.iteration}; checkpoint saved to {e.checkpoint}; "
              f"resume with: {command}", flush=True)
        sys.exit(e.exit_code)


def run(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out = Path(args.out)
    start = time.perf_counter()
    sft = args.model
    if sft is None:
        from textenv.default import sft_path

        sft = sft_path()
    reward = retrain_reward_model(out, sft) if args.train_reward_model else args.reward

    prompts = eval_prompts(args)
    cfg0 = make_config(args, args.seeds[0], reward)
    gold = default_gold(cfg0)
    env_kwargs = cfg0.env.env_kwargs()
    from agents.lm import load_lm
    from agents.utils import resolve_device

    before = evaluate(load_lm(sft, resolve_device(args.device)).eval(), env_kwargs, prompts, gold, seed=10_000)
    print(f"\nSFT model on {len(prompts)} held-out prompts: gold {np.mean(before['gold_score']):+.3f}, "
          f"RM {np.mean(before['rm_score']):+.3f}   ({time.perf_counter() - start:.0f} s)\n", flush=True)

    histories, runs = {}, []
    for seed in args.seeds:
        t0 = time.perf_counter()
        config = make_config(args, seed, reward, resume=args.resume and resumable(args, seed))
        print(f"--- seed {seed}: a budget of {config.responses} responses: {config.iterations} iterations x "
              f"{args.num_envs} responses x <= {args.max_new_tokens} tokens", flush=True)
        result = train_rlhf(config)
        after = evaluate(result.agent.policy, env_kwargs, prompts, gold, seed=10_000 + seed)
        histories[seed] = result.history
        final_kl = float(np.mean([h["kl"] for h in result.history[-10:]]))
        agent = result.agent
        runs.append({
            "seed": seed, "responses": agent.responses, "generated_tokens": agent.generated_tokens,
            "loop_s": agent.loop_s, "s_per_response": agent.loop_s / max(agent.responses, 1),
            "gold": float(np.mean(after["gold_score"])), "rm": float(np.mean(after["rm_score"])),
            "kl": float(np.mean(after["kl"])),
            "gold_before": float(np.mean(before["gold_score"])), "gold_after": float(np.mean(after["gold_score"])),
            "rm_before": float(np.mean(before["rm_score"])), "rm_after": float(np.mean(after["rm_score"])),
            "kl_after": float(np.mean(after["kl"])), "train_kl_last10": final_kl,
            "kl_coef_final": result.history[-1]["kl_coef"], "train_s": time.perf_counter() - t0,
        })
        print(f"\nseed {seed}: before vs after on held-out prompts ({runs[-1]['train_s']:.0f} s)")
        print(table([("SFT (reference)", before), (f"PPO seed {seed}", after)]))
        show_samples(before, after)
        print()

    plot(histories, args.kl_target, out / "curves.png")
    gains = np.array([r["gold_after"] - r["gold_before"] for r in runs])
    kls = np.array([r["kl_after"] for r in runs])
    summary = {"runs": runs, "gold_gain_mean": float(gains.mean()), "gold_gain_std": float(gains.std(ddof=1)) if len(gains) > 1 else 0.0,
               "kl_mean": float(kls.mean()), "kl_target": args.kl_target, "wall_s": time.perf_counter() - start}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    spread = f" ± {summary['gold_gain_std']:.3f} (std over {len(runs)} seeds)" if len(runs) > 1 else ""
    print(f"gold score: {runs[0]['gold_before']:+.3f} (SFT) -> "
          f"{np.mean([r['gold_after'] for r in runs]):+.3f} (PPO); gain {gains.mean():+.3f}{spread}")
    print(f"KL to reference per response: {kls.mean():.2f} nats (target {args.kl_target}); "
          f"per seed {', '.join(f'{k:.2f}' for k in kls)}")
    print(f"curves: {out / 'curves.png'}   summary: {out / 'summary.json'}   total {summary['wall_s']:.0f} s")


if __name__ == "__main__":
    reproducible_cpu_kernels()  # before the first torch operation: figures repeat on any x86-64 machine
    main()
