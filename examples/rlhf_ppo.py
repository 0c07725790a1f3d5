"""RLHF with PPO: make a language model write what a reward model prefers; the embedded default task unless told.

    python examples/rlhf_ppo.py                        # one seed, the default budget of responses (printed)
    python examples/rlhf_ppo.py --responses 1600       # a budget of 1,600 generated responses
    python examples/rlhf_ppo.py --seeds 0 1 2          # three seeds: mean and spread of the gold-score gain
    python examples/rlhf_ppo.py --train-reward-model   # retrain the reward model on the preference pairs first
    python examples/rlhf_ppo.py --recipe lecture       # the lecture's setup: GPT-2, IMDB prompts, a sentiment RM
    python examples/rlhf_ppo.py --model path/to/causal-lm --reward path/to/rm --prompts prompts.jsonl
    python examples/rlhf_ppo.py --lora                 # train a LoRA adapter (pip install -e .[lora])
    torchrun --standalone --nproc_per_node=2 examples/rlhf_ppo.py   # 2 processes, each --num-envs responses

What happens (lecture slides, "RLHF and PPO"): the SFT language model is copied into the policy
(``agents.lm.LMActorCritic``: the LM plus a zero-initialised value head on its trunk) and stays frozen as
the reference. ``TextGen-v0`` generates one token per step; every token pays ``-beta * KL_t`` to the
reference and the last one also gets the reward model's score. ``agents.rlhf.train_rlhf`` rolls out whole responses, one per env row, and
runs PPO's update on them; an adaptive controller (Ziegler et al. 2019) moves beta so the KL per response stays near ``--kl-target``.

Your own pieces: ``--model`` (any Hugging Face causal LM, name or folder), ``--reward`` (any sequence
classifier; ``--reward-label`` picks the logit of one with several labels) and ``--prompts``: a
.txt/.json/.jsonl/.csv/.parquet file, a ``datasets`` ``save_to_disk`` folder or a Hub dataset ``NAME[:SPLIT]``
(``--prompt-split``), read from ``--prompt-column`` (default: the first of prompt, query, text). Evaluation
uses ``--eval-prompts-file``, or else a fixed split of your prompts (seed 0) that training never sees.
``--judge`` adds a gold column: a ``module:function`` taking (prompts, completions) or a second
sequence classifier (``--judge-label``). ``--recipe lecture`` sets all of these to the lecture's setup (TRL's
gpt2-sentiment notebook); any flag you pass overrides the recipe's value.

The reward model is a proxy learnt from preference pairs; on the default task the gold judge (sentiment +
fluency) is what the pairs were labelled with. The table compares the SFT model and the trained policy on
held-out prompts: gold score (the real objective, when there is a judge), RM score (what PPO optimised) and
KL to the reference (what it cost).
Outputs: outputs/rlhf_ppo/curves.png, summary.json (per seed: responses, generated tokens, loop seconds,
seconds per response, gold, RM score and KL) and one folder per seed with progress.csv and the checkpoint
(``--resume`` continues it).

Several processes: under ``torchrun`` every rank rolls out ``--num-envs`` responses of its own per iteration
(an iteration trains on ``--num-envs`` x world size; ``--responses`` counts all ranks), one policy trains
(``agents.distributed``), and rank 0 alone evaluates, prints and writes ``--out``.

Stopping and resuming: Ctrl-C (or SIGTERM) lets the current iteration finish, saves a checkpoint there and
exits (status 130 / 143) with the command that continues it; a second Ctrl-C stops at once. ``--resume``
continues each seed from its checkpoint with the same flags (other flags are refused, with the list of
differences); a seed with no checkpoint yet starts fresh, with a note. One live run per ``--out`` folder.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from agents import distributed as D
from agents.checkpoint import atomic_write
from agents.rlhf import KLConfig, LoRAConfig, RLHFConfig, default_gold, evaluate_policy, rlhf_ppo_config, train_rlhf
from agents.run_guard import FolderBusyError, RunFolder, TrainingInterrupted
from agents.utils import reproducible_cpu_kernels
from textenv.text.config import TextGenConfig

DEFAULTS = RLHFConfig()
PPO_DEFAULTS = rlhf_ppo_config()

HELD_OUT_SEED = 0
"""Seeds the split of your prompts into training and held-out ones: fixed, so every seed of a run and every
resume train on the same prompts and are evaluated on the same others."""

RECIPES = {
    "default": {},
    # The lecture's setup, as TRL's gpt2-sentiment notebook runs it: GPT-2 writes continuations of the first 2 to 7
    # tokens of IMDB reviews (LengthSampler(2, 8)) and is paid the "positive" logit of a DistilBERT sentiment
    # classifier; TRL's PPO settings (batch 128 in one minibatch, 4 epochs, lr 1.41e-5, adaptive KL from 0.2
    # toward 6 nats over a 10,000 horizon) and one pass over the 24,895 long-enough reviews (194 batches). The
    # notebook starts from lvwerra/gpt2-imdb (GPT-2 fine-tuned on IMDB): pass --model lvwerra/gpt2-imdb for that.
    "lecture": dict(model="gpt2", reward="lvwerra/distilbert-imdb", reward_label=1, prompts="stanfordnlp/imdb",
                    prompt_split="train", prompt_column="text", prompt_lengths=[2, 8], max_prompt_tokens=8,
                    max_new_tokens=16, num_envs=128, minibatches=1, epochs=4, lr=1.41e-5, kl_coef=0.2,
                    kl_target=6.0, kl_horizon=10000.0, responses=128 * 194),
}


def label_arg(text: str) -> int | str:
    """``--reward-label 1`` is the index 1, ``--reward-label POSITIVE`` the label called that."""
    return int(text) if text.lstrip("-").isdigit() else text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--recipe", choices=sorted(RECIPES), default="default")
    recipe = first.parse_known_args(argv)[0].recipe

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=sorted(RECIPES), default="default",
                   help="a preset of the task and PPO flags: 'default' (the embedded task) or 'lecture' (GPT-2, IMDB "
                        "prompts, lvwerra/distilbert-imdb's positive logit, TRL's settings); flags override it")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    p.add_argument("--responses", type=int, default=DEFAULTS.responses,
                   help="budget per seed: generated responses to train on (whole iterations of --num-envs)")
    p.add_argument("--num-envs", type=int, default=DEFAULTS.num_envs, help="responses per iteration")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULTS.env.max_new_tokens, help="response length limit")
    p.add_argument("--max-prompt-tokens", type=int, default=DEFAULTS.env.max_prompt_tokens,
                   help="prompt budget in tokens: a longer prompt keeps its LAST this-many tokens (cut from the left, "
                        "a leading BOS the tokenizer adds kept), with a warning")
    p.add_argument("--lr", type=float, default=PPO_DEFAULTS.learning_rate, help="Adam learning rate (decays linearly to 0)")
    p.add_argument("--epochs", type=int, default=PPO_DEFAULTS.n_epochs, help="PPO epochs per iteration")
    p.add_argument("--minibatches", type=int, default=PPO_DEFAULTS.n_minibatches, help="minibatches per epoch")
    p.add_argument("--kl-coef", type=float, default=DEFAULTS.env.kl_coef, help="initial KL coefficient beta")
    p.add_argument("--kl-target", type=float, default=DEFAULTS.kl.target, help="KL per response (nats) the controller holds")
    p.add_argument("--kl-horizon", type=float, default=DEFAULTS.kl.horizon, help="controller horizon (responses)")
    p.add_argument("--mixed-precision", action="store_true",
                   help="bf16 autocast in the update (CUDA, or a CPU with native bf16)")
    p.add_argument("--model", default=None, help="SFT causal LM name/path (default: the embedded one)")
    p.add_argument("--reward", default=None, help="reward model name/path (default: the embedded one)")
    p.add_argument("--reward-label", type=label_arg, default=None,
                   help="the reward classifier's logit that is the score, an index or a label name (for a model "
                        "with several labels, e.g. 1 for lvwerra/distilbert-imdb's POSITIVE)")
    p.add_argument("--prompts", default=None,
                   help="training prompts: a .txt (one per line), .json, .jsonl, .csv or .parquet file, a datasets "
                        "save_to_disk folder, or a Hub dataset NAME[:SPLIT] (default: the embedded train split)")
    p.add_argument("--prompt-column", default=None,
                   help="the column (or JSON field) holding the prompts (default: the first of prompt, query, text)")
    p.add_argument("--prompt-split", default=None,
                   help="the split of a Hub dataset or a saved DatasetDict (default: train)")
    p.add_argument("--prompt-lengths", type=int, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="cut each prompt to its first k tokens of the policy's tokenizer, k drawn per prompt from "
                        "range(MIN, MAX) with a fixed seed (TRL's LengthSampler; the lecture recipe: 2 8)")
    p.add_argument("--eval-prompts", type=int, default=256,
                   help="held-out prompts for the before/after table (the most taken from --eval-prompts-file; "
                        "without one, at most a fifth of your prompts are held out of training)")
    p.add_argument("--eval-prompts-file", default=None,
                   help="evaluation prompts (same formats and column as --prompts); default: the embedded test "
                        "split, or a fixed split of --prompts held out of training")
    p.add_argument("--judge", default=None,
                   help="the gold judge for the table: module:function taking (prompts, completions) -> scores, or "
                        "a sequence-classification model's name/path (default: the embedded task's judge when the "
                        "model is the embedded one, else none)")
    p.add_argument("--judge-label", type=label_arg, default=None, help="the judge model's logit (as --reward-label)")
    p.add_argument("--train-reward-model", action="store_true",
                   help="retrain the reward model on the embedded task's preference pairs first")
    p.add_argument("--lora", action="store_true", help="train a LoRA adapter and the value head, not the whole LM")
    p.add_argument("--lora-r", type=int, default=LoRAConfig().r, help="LoRA rank (with --lora)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute the LM's activations in the backward pass (less memory in the update)")
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
    p.set_defaults(**RECIPES[recipe])
    return p.parse_args(argv)


def make_config(args: argparse.Namespace, seed: int, reward, train_prompts, judge=None, resume: bool = False) -> RLHFConfig:
    return RLHFConfig(
        env=TextGenConfig(model=args.model, reward=reward, reward_label=args.reward_label, prompts=train_prompts,
                          max_new_tokens=args.max_new_tokens, max_prompt_tokens=args.max_prompt_tokens,
                          kl_coef=args.kl_coef, device=args.device),
        num_envs=args.num_envs,
        kl=KLConfig(target=args.kl_target, horizon=args.kl_horizon),
        ppo=rlhf_ppo_config(learning_rate=args.lr, n_epochs=args.epochs, n_minibatches=args.minibatches),
        responses=args.responses,
        mixed_precision=args.mixed_precision,
        lora=LoRAConfig(r=args.lora_r) if args.lora else None,
        gradient_checkpointing=args.gradient_checkpointing,
        gold=judge if judge is not None else "default",  # --judge, else the embedded task's judge on its own model
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


def read_prompts(args: argparse.Namespace, source, sft, seed: int) -> list[str]:
    """Prompts from ``source`` with the prompt flags (column, split, and the --prompt-lengths cut)."""
    from textenv.text.prompts import load_prompts, prompt_prefixes

    prompts = load_prompts(source, column=args.prompt_column, split=args.prompt_split)
    if args.prompt_lengths:
        from transformers import AutoTokenizer

        low, high = args.prompt_lengths
        prompts = prompt_prefixes(prompts, AutoTokenizer.from_pretrained(str(sft)), low, high, seed=seed)
    return prompts


def prompt_sets(args: argparse.Namespace, sft) -> tuple[list[str] | None, list[str]]:
    """``(training prompts, evaluation prompts)``; the training prompts are None for the embedded train split.

    Never evaluates on a training prompt: an evaluation file loses the prompts it shares with training, and
    without one a fixed, seeded split of your prompts is held out (at most a fifth of them, at most
    ``--eval-prompts``) and the training env never sees it.
    """
    from textenv.text.prompts import load_prompts, split_prompts

    train = None if args.prompts is None else read_prompts(args, args.prompts, sft, seed=HELD_OUT_SEED)
    if args.eval_prompts_file is not None:
        held = read_prompts(args, args.eval_prompts_file, sft, seed=HELD_OUT_SEED + 1)
        seen = set(train) if train is not None else set(load_prompts(_default_prompts("train")))
        kept = [p for p in dict.fromkeys(held) if p not in seen]
        if len(kept) < len(set(held)):
            print(f"evaluation: dropped {len(set(held)) - len(kept)} prompts of {args.eval_prompts_file} that are also "
                  f"training prompts", flush=True)
        if not kept:
            sys.exit(f"error: every prompt of {args.eval_prompts_file} is also a training prompt: nothing to evaluate on")
        return train, kept[: args.eval_prompts]
    if train is None:
        return None, load_prompts(_default_prompts("test"))[: args.eval_prompts]
    distinct = len(set(train))
    n = min(args.eval_prompts, distinct // 5)
    if n < 1:
        sys.exit(f"error: {args.prompts} holds {distinct} distinct prompts: too few to hold a fifth out for evaluation; "
                 f"pass more, or --eval-prompts-file")
    train, held = split_prompts(train, n, seed=HELD_OUT_SEED)
    print(f"evaluation: {n} of the {distinct} distinct prompts held out of training (a fixed split, seed "
          f"{HELD_OUT_SEED}); training draws from the other {len(train)}", flush=True)
    return train, held


def _default_prompts(split: str):
    from textenv.default import prompts_path

    return prompts_path(split)


def judge_fn(args: argparse.Namespace):
    """The ``--judge``: a module:function taking (prompts, completions), or a sequence classifier read the way
    a reward model is (``--judge-label``), as a checked ``(prompts, completions) -> scores``."""
    from rlcore.device import resolve_device
    from textenv.text.rewards import make_reward_fn

    module, _, name = args.judge.partition(":")
    if name and not Path(args.judge).exists():
        try:
            fn = importlib.import_module(module)
            for part in name.split("."):
                fn = getattr(fn, part)
        except (ImportError, AttributeError) as e:
            sys.exit(f"error: --judge {args.judge}: cannot import {name} from {module} ({e})")
        if not callable(fn):
            sys.exit(f"error: --judge {args.judge} is not callable: it must take (prompts, completions) -> scores")
        return make_reward_fn(fn)
    return make_reward_fn(args.judge, label=args.judge_label, device=resolve_device(args.device))


def retrain_reward_model(out: Path, sft, n_norm: int = 1000) -> str:
    """Retrain the reward model on the shipped preference pairs; returns its path.

    The recipe of ``python -m textenv.default.build`` (``textenv.reward_model.build_reward_model``): the RM starts
    from the SFT trunk, learns the pairs with the pairwise loss, and is normalised to mean 0 / std 1 over fresh
    SFT samples on train prompts.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from textenv import default, reward_model as rmod

    path = out / "reward_model"
    t0 = time.perf_counter()
    print(f"training the reward model into {path} ...", flush=True)
    lm, tok = AutoModelForCausalLM.from_pretrained(str(sft)).eval(), AutoTokenizer.from_pretrained(str(sft))
    rm, stats = rmod.build_reward_model(
        lm, tok, default.preferences("train"), list(default.prompts("train")["prompt"])[:n_norm],
        rmod.RewardTrainConfig(), seed=0, norm_seed=3, max_new_tokens=48,
        evaluate_fn=lambda rm: {"pairwise_accuracy": rmod.pairwise_accuracy(rm, tok, default.preferences("test"))})
    rmod.save_reward_model(rm, tok, path)
    print(f"reward model: loss {stats['loss_first']:.3f} -> {stats['loss_last']:.3f}, held-out pairwise accuracy "
          f"{stats['pairwise_accuracy']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return str(path)


def table(rows: list[tuple[str, dict]], gold: bool) -> str:
    head = f"{'':24s}" + (f" {'gold score':>14s}" if gold else "") + f" {'RM score':>14s} {'KL to ref':>10s} {'length':>7s}"
    lines = [head]
    for name, r in rows:
        cells = f" {np.mean(r['gold_score']):+8.3f} ±{sem(r['gold_score']):.3f}" if gold else ""
        lines.append(f"{name:24s}{cells} {np.mean(r['rm_score']):+8.3f} ±{sem(r['rm_score']):.3f} "
                     f"{np.mean(r['kl']):10.2f} {np.mean(r['tokens']):7.1f}")
    if not gold:
        lines.append("no gold judge: gold column omitted (--judge adds one)")
    return "\n".join(lines)


def sem(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def show_samples(before: dict, after: dict, gold: bool, k: int = 4) -> None:
    def scores(r, i):
        return (f"gold {r['gold_score'][i]:+.2f}, " if gold else "") + f"RM {r['rm_score'][i]:+.2f}"

    for i in range(min(k, len(before["prompt"]))):
        print(f"\n  prompt: {before['prompt'][i]!r}")
        print(f"    SFT  ({scores(before, i)}): {before['completion'][i]!r}")
        print(f"    PPO  ({scores(after, i)}): {after['completion'][i]!r}")


def plot(histories: dict[int, list[dict]], kl_target: float, path: Path, gold: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ([("gold_score", "gold score (true objective)")] if gold else []) + [
        ("rm_score", "RM score (proxy, optimised)"), ("kl", "KL to reference per response (nats)"),
        ("kl_coef", "KL coefficient beta")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.25 * len(keys), 3.6))
    for seed, h in histories.items():
        x = [r["responses"] for r in h]
        for ax, (key, title) in zip(axes, keys):
            ax.plot(x, [r[key] for r in h], label=f"seed {seed}", alpha=0.8)
            ax.set_title(title)
            ax.set_xlabel("responses")
    kl_ax = axes[[k for k, _ in keys].index("kl")]
    if kl_target is not None:
        kl_ax.axhline(kl_target, color="k", ls="--", lw=1, label="target")
    kl_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    world = D.init_from_env(args.device)  # under torchrun: join the other ranks (each on its own GPU)
    try:
        # writable, and no other live run writes its summary there (rank 0 writes --out)
        with RunFolder(args.out, "--out") if world.is_main else contextlib.nullcontext():
            run(args, world)
    except FolderBusyError as e:
        sys.exit(f"error: {e}")
    except TrainingInterrupted as e:
        if world.is_main:
            command = shlex.join([sys.executable, *sys.argv] + ([] if args.resume else ["--resume"]))
            print(f"\nstopped by {e.signal_name} at iteration {e.iteration}; checkpoint saved to {e.checkpoint}; "
                  f"resume with: {command}", flush=True)
        sys.exit(e.exit_code)


def run(args: argparse.Namespace, world: D.World = D.World()) -> None:
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
    reward = args.reward
    if args.train_reward_model:  # rank 0 trains it; the others wait, then read it from the same folder
        reward = retrain_reward_model(out, sft) if world.is_main else str(out / "reward_model")
        D.barrier()

    train_prompts, prompts = prompt_sets(args, sft)
    judge = None if args.judge is None else judge_fn(args)
    cfg0 = make_config(args, args.seeds[0], reward, train_prompts, judge)
    gold = judge if judge is not None else default_gold(cfg0)
    has_gold = gold is not None
    env_config = cfg0.env  # the training task; evaluate_policy swaps in the held-out prompts
    from textenv.text.loading import load_causal_lm
    from rlcore.device import resolve_device

    reports = world.is_main  # rank 0 evaluates and reports; every rank trains
    if reports:
        before = evaluate_policy(load_causal_lm(sft, resolve_device(args.device)).eval(), env_config, prompts, gold, seed=10_000)
        gold_text = f"gold {np.mean(before['gold_score']):+.3f}, " if has_gold else ""
        print(f"\nSFT model on {len(prompts)} held-out prompts: {gold_text}RM {np.mean(before['rm_score']):+.3f}   "
              f"({time.perf_counter() - start:.0f} s)\n", flush=True)

    histories, runs = {}, []
    for seed in args.seeds:
        t0 = time.perf_counter()
        config = make_config(args, seed, reward, train_prompts, judge, resume=args.resume and resumable(args, seed))
        if reports:
            procs = f" x {world.size} processes" if world.size > 1 else ""
            print(f"--- seed {seed}: a budget of {config.responses} responses: "
                  f"{-(-config.responses // (args.num_envs * world.size))} iterations x {args.num_envs} responses"
                  f"{procs} x <= {args.max_new_tokens} tokens", flush=True)
        result = train_rlhf(config)
        if not reports:
            continue
        after = evaluate_policy(result.agent.policy, env_config, prompts, gold, seed=10_000 + seed)
        histories[seed] = result.history
        final_kl = float(np.mean([h["kl"] for h in result.history[-10:]]))
        agent = result.agent

        def mean_gold(r):
            return float(np.mean(r["gold_score"])) if has_gold else None

        runs.append({
            # responses and generated tokens of all ranks; loop_s: the training loop's wall-clock seconds
            # (ranks run in step, so this is the whole job's loop time, not a sum over processes)
            "seed": seed, "world_size": world.size, "responses": agent.responses,
            "generated_tokens": agent.generated_tokens,
            "loop_s": agent.loop_s, "s_per_response": agent.loop_s / max(agent.responses, 1),
            "gold": mean_gold(after), "rm": float(np.mean(after["rm_score"])),
            "kl": float(np.mean(after["kl"])),
            "gold_before": mean_gold(before), "gold_after": mean_gold(after),
            "rm_before": float(np.mean(before["rm_score"])), "rm_after": float(np.mean(after["rm_score"])),
            "kl_after": float(np.mean(after["kl"])), "train_kl_last10": final_kl,
            "kl_coef_final": result.history[-1]["kl_coef"], "train_s": time.perf_counter() - t0,
        })
        print(f"\nseed {seed}: before vs after on held-out prompts ({runs[-1]['train_s']:.0f} s)")
        print(table([("SFT (reference)", before), (f"PPO seed {seed}", after)], has_gold))
        show_samples(before, after, has_gold)
        print()

    if not reports:
        return
    plot(histories, args.kl_target, out / "curves.png", has_gold)
    kls = np.array([r["kl_after"] for r in runs])
    key = "gold" if has_gold else "rm"
    gains = np.array([r[f"{key}_after"] - r[f"{key}_before"] for r in runs])
    summary = {"runs": runs, "world_size": world.size, "gold_judge": has_gold,
               f"{key}_gain_mean": float(gains.mean()),
               f"{key}_gain_std": float(gains.std(ddof=1)) if len(gains) > 1 else 0.0,
               "kl_mean": float(kls.mean()), "kl_target": args.kl_target, "wall_s": time.perf_counter() - start}
    # atomically: a stopped job never leaves a half-written summary
    atomic_write(out / "summary.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    spread = f" ± {summary[f'{key}_gain_std']:.3f} (std over {len(runs)} seeds)" if len(runs) > 1 else ""
    name = "gold score" if has_gold else "RM score (no gold judge)"
    print(f"{name}: {runs[0][f'{key}_before']:+.3f} (SFT) -> "
          f"{np.mean([r[f'{key}_after'] for r in runs]):+.3f} (PPO); gain {gains.mean():+.3f}{spread}")
    print(f"KL to reference per response: {kls.mean():.2f} nats (target {args.kl_target}); "
          f"per seed {', '.join(f'{k:.2f}' for k in kls)}")
    print(f"curves: {out / 'curves.png'}   summary: {out / 'summary.json'}   total {summary['wall_s']:.0f} s")


if __name__ == "__main__":
    reproducible_cpu_kernels()  # before the first torch operation (figures repeat on machines of one vendor)
    main()
