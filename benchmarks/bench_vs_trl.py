"""Our RLHF PPO (agents.rlhf.train_rlhf) against TRL 0.11.4's classic PPOTrainer, on the same models and data.

    python benchmarks/bench_vs_trl.py --mode speed                      # s / iteration, 5 interleaved rounds
    python benchmarks/bench_vs_trl.py --mode speed --shapes b --rounds 3 --iterations 5
    python benchmarks/bench_vs_trl.py --mode learn                      # gold at 1600 / 3200 responses, seeds 0-2
    python benchmarks/bench_vs_trl.py --mode learn --responses 1600 3200 --seeds 0 1 2 --gold 0.73 --eval-every 800
    python benchmarks/bench_vs_trl.py --mode speed --mixed-precision    # bf16 autocast in our update (TRL: fp32)
    python benchmarks/bench_vs_trl.py --mode speed --rounds 1 --iterations 1 --warmup 0   # tiny: both sides run
    python benchmarks/bench_vs_trl.py --mode learn --responses 64 --seeds 0 --eval-every 32 --eval-prompts 32

TRL runs in its own virtualenv (``--venv``, default .bench-venvs/trl-0.11.4, built on first use with
``pip install torch==2.13.0`` then trl==0.11.4 transformers==4.44.2 "numpy<2" pyarrow==18.1.0
datasets==3.0.1 pandas==2.2.3 rich accelerate, reused after) as a subprocess, benchmarks/trl_worker.py,
with HF_HUB_OFFLINE=1. It reads patched copies of the models (transformers 4.44 needs
``"tokenizer_class": "PreTrainedTokenizerFast"`` in tokenizer_config.json; the shipped artifacts are never
touched). Our side runs here, in this venv. Both use one torch thread, the CPU and AVX2-pinned kernels
(agents.utils.reproducible_cpu_kernels), except with ``--mixed-precision``: the pins hide AMX and
AVX512-BF16 from oneDNN, which would switch our bf16 autocast off, so both sides then run native kernels.

Both sides train on whole responses: an iteration generates ``batch`` responses (TRL's batch_size, our
env.num_envs), waits for the longest, and runs ``epochs`` passes of minibatches of ``minibatch`` whole
responses (our n_minibatches = batch / minibatch), so iterations = responses / batch on both.

--mode speed: seconds per PPO iteration at two identical shapes, in interleaved rounds (TRL, ours, TRL,
ours, ...; the median over ``--rounds``), after ``--warmup`` untimed iterations per round:
  (a) a random GPT-2 (4 layers x 256 wide, vocabulary 2048: the shipped word-level tokenizer padded with
      dummy words) as policy / reference and a random GPT-2 classifier of that size as the reward model;
      64 responses x (8 prompt + 16 new tokens), 4 epochs, minibatch 16;
  (b) the shipped default task: 32 responses x (<= 12 prompt + 24 new tokens), 4 epochs, minibatch 8.
  Responses are fixed-length here (ours: ``stop_at_eos=False``, a sampled EOS is one more token; TRL:
  ``min_new_tokens``, EOS is masked out), so both sides generate and train on exactly B x T tokens per
  iteration. Printed: s / iteration of each and ours / TRL, split in two halves that sum to it: the
  update (ours: train_rlhf's ``update_s``, GAE and the PPO epochs; TRL: step's PPO epochs,
  ``time/ppo/optimize_step``) and the rollout, everything else (ours: ``rollout_s``, collect_responses
  sampling with the env's reference forward, KL and reward model; TRL: generate, the reward model, and
  step's re-scoring forward of policy and reference, rewards, advantages and stats, each also printed).
--mode learn: both sides trained on the default task (stopping at EOS) for the same response budget (ours:
  ``RLHFConfig(responses=max(--responses))``), with the main job's settings (32 x 24 tokens, 4 epochs x 4
  minibatches, lr 3e-4, beta 0.05 adaptive to 4 nats over 2000 responses). The policy is saved every
  ``--eval-every`` responses and at each ``--responses``; afterwards every saved policy (TRL's loaded as a
  causal LM, value head stripped) is scored HERE with agents.rlhf.evaluate_policy on the held-out prompts and the
  gold judge: gold (mean +/- std over seeds) at equal responses, KL per response to the SFT model, loop
  seconds and ours / TRL, and the responses and seconds each side took to first reach ``--gold`` (with
  their ours / TRL ratios). The learning rate decays linearly to 0 over the largest budget on both sides,
  the same rate at every iteration (``--lr-schedule constant`` keeps it flat).

Output: a table on stdout and outputs/bench_vs_trl/{speed,learn}.json (plus the saved policies of learn).

What still differs between the two sides (a reader comparing the numbers must know):
- Prompts: TRL's dataloader shuffles the prompts and walks through them; our env draws each row's prompt
  uniformly, with replacement, from its own seeded generator.
- Early-finished rows: TRL's generate pads them until the longest row ends; our env keeps stepping them
  (same-step autoreset starts their next prompt) and the rollout drops those partial responses. Both
  pay the same forwards; ours counts those tokens in ``generated_tokens``, not in the kept responses.
- Log-probabilities: TRL re-scores every response with a full forward of policy and reference after
  generating; ours takes them from the KV-cached forward that sampled the token (the env's KL shares it).
  TRL's generate is called with the whole batch at once (``batch_size`` of ``PPOTrainer.generate``,
  whose default is 4 per call), padded left; its step pads right and passes no position ids, ours scores
  the prompt left-padded and the response right-padded with position ids from the mask (``score_responses``).
- Advantages: TRL whitens them once over the whole batch; ours per minibatch by default
  (``--norm-adv-over batch`` matches TRL). TRL's value head starts random (nn.Linear's default init),
  ours at zero. TRL's Adam has eps 1e-8, ours 1e-5. TRL skips a minibatch whose mean ratio exceeds 10
  (ratio_threshold).
- Precision: with ``--mixed-precision`` our update's forward runs under bf16 autocast (rollout and
  evaluation stay fp32); TRL stays fp32 throughout.
- Same: responses per iteration, epochs, minibatch size, the learning rate at every iteration; the reward
  -beta * (log pi - log pi_ref) per token (k1) plus the score on the last token, and beta moved by the
  same proportional controller fed the mean KL per response of each batch and its size; gamma 1, lambda
  0.95, clip 0.2 for the ratio and the value, vf_coef 0.5 on 1/2 (V - R)^2, gradient norm clipped at 1,
  no entropy bonus, temperature 1, no top-k / top-p, the end of a response is terminal.
- Evaluation runs the same code for both: our TextGen env samples one completion per held-out prompt with
  the policy, the same seed, and the shipped SFT model as the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from agents.rlhf import KLConfig, RLHFConfig, rlhf_ppo_config
from agents.utils import reproducible_cpu_kernels
from textenv import default
from trl_setup import LEARN_SHAPE, SHAPES, default_task, policy_scorer, prepare_sides, random_task, run_trl, train_ours

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------- speed mode
def speed(args, python: Path, tmp: Path) -> dict:
    tasks = {s: (random_task if s == "a" else default_task)(tmp) for s in args.shapes}
    n = args.warmup + args.iterations
    runs = {s: {"trl": [], "ours": []} for s in args.shapes}
    for r in range(args.rounds):  # interleaved: TRL, ours, TRL, ours, ... so drifts in machine load hit both
        for s in args.shapes:
            shape = SHAPES[s][1]
            print(f"round {r + 1}/{args.rounds}, shape ({s}): TRL, then ours ...", flush=True)
            trl = run_trl(python, tasks[s], shape, args, n, r, tmp / f"trl-{s}-{r}.json", fixed_length=True)
            ours = train_ours(tasks[s], shape, args, r, fixed_length=True, responses=n * shape.batch)
            runs[s]["trl"].append(trl_parts(trl["iterations"][args.warmup:]))
            runs[s]["ours"].append(ours_parts(ours["iterations"][args.warmup:]))
    summary = {}
    for s in args.shapes:
        med = {side: {k: statistics.median(run[k] for run in runs[s][side]) for k in runs[s][side][0]}
               for side in ("trl", "ours")}
        summary[s] = {"description": SHAPES[s][0], "shape": asdict(SHAPES[s][1]), "timed_iterations": args.iterations,
                      "median": med, "ratio_ours_over_trl": med["ours"]["total_s"] / med["trl"]["total_s"],
                      "rounds": runs[s]}
        print_speed(s, summary[s])
    return summary


def mean_of(rows: list[dict], key: str) -> float:
    return float(np.mean([row[key] for row in rows]))


def trl_parts(rows: list[dict]) -> dict:
    """Mean seconds per TRL iteration: its parts, and the two halves comparable with ours. "rollout" is everything
    but the PPO epochs: generate, reward model, step's re-scoring forward of policy and reference, rewards,
    advantages and stats; "update" is step's optimisation loop."""
    keys = ("generate_s", "score_s", "step_s", "step_forward_s", "step_optimize_s", "tokens")
    out = {k: mean_of(rows, k) for k in keys}
    out["total_s"] = out["generate_s"] + out["score_s"] + out["step_s"]
    out["update_s"] = out["step_optimize_s"]
    out["rollout_s"] = out["total_s"] - out["update_s"]
    return out


def ours_parts(rows: list[dict]) -> dict:
    """Mean seconds per iteration of ours: train_rlhf's rollout_s (generation with the env's reference forward,
    KL and reward model) and update_s (GAE and the PPO epochs)."""
    out = {k: mean_of(rows, k) for k in ("rollout_s", "update_s", "tokens")}
    out["total_s"] = out["rollout_s"] + out["update_s"]
    return out


def print_speed(s: str, result: dict) -> None:
    shape, med = SHAPES[s][1], result["median"]
    trl, ours = med["trl"], med["ours"]
    print(f"\nshape ({s}) {result['description']}: {shape.batch} x (<= {shape.max_prompt_tokens} prompt + "
          f"{shape.max_new_tokens} new tokens), {shape.epochs} epochs, minibatch {shape.minibatch}; median of "
          f"{len(result['rounds']['trl'])} rounds x {result['timed_iterations']} iterations")
    print("  (ours / TRL < 1: ours is faster)")
    print(f"  {'':30s} {'TRL 0.11.4':>11s} {'ours':>9s} {'ours / TRL':>11s}")
    for key, label in (("total_s", "s / iteration"), ("rollout_s", "  rollout (sample, score)"),
                       ("update_s", "  update (PPO epochs)")):
        print(f"  {label:30s} {trl[key]:11.3f} {ours[key]:9.3f} {ours[key] / trl[key]:11.2f}")
    print(f"  {'generated tokens / iteration':30s} {trl['tokens']:11.0f} {ours['tokens']:9.0f}")
    rest = trl["step_s"] - trl["step_forward_s"] - trl["step_optimize_s"]
    print(f"  TRL's rollout: generate {trl['generate_s']:.3f} s, reward model {trl['score_s']:.3f} s, step's forward "
          f"of policy + reference {trl['step_forward_s']:.3f} s, rewards / advantages / stats {rest:.3f} s")


# ---------------------------------------------------------------------------------------------- learn mode
def learn(args, python: Path, tmp: Path) -> dict:
    task, shape = default_task(tmp), LEARN_SHAPE
    budget = max(args.responses)
    points = sorted(set(range(args.eval_every, budget + 1, args.eval_every)) | set(args.responses))
    if any(point % shape.batch for point in points):  # else a budget would end mid-iteration on both sides
        raise SystemExit(f"--responses and --eval-every must be multiples of the batch ({shape.batch}): {points}")
    root = Path(args.out) / "learn"
    runs = {"trl": {}, "ours": {}}
    # 1. train both sides, each saving its policy at every evaluation point
    for seed in args.seeds:
        print(f"--- seed {seed}: TRL, {budget} responses ...", flush=True)
        runs["trl"][seed] = run_trl(python, task, shape, args, budget // shape.batch, seed,
                                    tmp / f"trl-learn-{seed}.json", fixed_length=False, budget=budget,
                                    save_at=points, save_dir=root / "trl" / f"seed{seed}")
        print(f"--- seed {seed}: ours, {budget} responses ...", flush=True)
        runs["ours"][seed] = train_ours(task, shape, args, seed, fixed_length=False, responses=budget, save_at=points,
                                        save_dir=root / "ours" / f"seed{seed}")

    # 2. score every saved policy with our evaluation: same env, reference, prompts, judge and seed
    score, n_prompts = policy_scorer(task, shape, args)
    sft = score(default.sft_path(), 0)
    print(f"\nSFT on {n_prompts} held-out prompts: gold {sft['gold']:+.3f}, RM {sft['rm']:+.3f}", flush=True)
    for side in runs:
        for seed, run in runs[side].items():
            for point in run["saved"]:
                point.update(score(point["path"], seed))
    summary = summarize(args, runs, points)
    print_learn(args, summary, n_prompts)
    return {"sft": sft, "eval_points": points, "summary": summary, "runs": runs}


def summarize(args, runs: dict, points: list[int]) -> dict:
    out = {"budgets": {}, "threshold": {}}
    for side in runs:
        for budget in points:
            rows = [next(p for p in run["saved"] if p["budget"] == budget) for run in runs[side].values()]
            gold = [r["gold"] for r in rows]
            out["budgets"].setdefault(budget, {})[side] = {
                "gold_mean": float(np.mean(gold)), "gold_std": float(np.std(gold, ddof=1)) if len(gold) > 1 else 0.0,
                "kl": float(np.mean([r["kl"] for r in rows])), "loop_s": float(np.mean([r["loop_s"] for r in rows])),
                "responses": float(np.mean([r["responses"] for r in rows])), "per_seed_gold": gold}
        first = {}
        for seed, run in runs[side].items():
            hit = next((p for p in run["saved"] if p["gold"] >= args.gold), None)
            first[seed] = None if hit is None else {"responses": hit["responses"], "loop_s": hit["loop_s"]}
        out["threshold"][side] = first
    return out


def print_learn(args, summary: dict, n_prompts: int) -> None:
    print(f"\ngold on {n_prompts} held-out prompts (mean ± std over seeds {args.seeds}); KL per response to the SFT "
          f"model; loop s = generation + scoring + PPO update, summed")
    print(f"  {'responses':>9s}  {'side':5s} {'gold':>16s} {'KL':>6s} {'loop s':>8s} {'responses used':>15s}")
    for budget in sorted(summary["budgets"]):
        if budget not in args.responses:
            continue
        row = summary["budgets"][budget]
        for side in ("trl", "ours"):
            r = row[side]
            print(f"  {budget:9d}  {side:5s} {r['gold_mean']:+8.3f} ± {r['gold_std']:.3f} {r['kl']:6.2f} "
                  f"{r['loop_s']:8.1f} {r['responses']:15.0f}")
        print(f"  {'':9s}  ours - TRL gold {row['ours']['gold_mean'] - row['trl']['gold_mean']:+.3f}, ours / TRL "
              f"loop seconds {row['ours']['loop_s'] / row['trl']['loop_s']:.2f}")
    print(f"\nfirst evaluation point (every {args.eval_every} responses) with gold >= {args.gold}:")
    for side in ("trl", "ours"):
        hits = summary["threshold"][side]
        text = ", ".join(f"seed {s}: " + ("not reached" if h is None else
                                          f"{h['responses']} responses, {h['loop_s']:.1f} s") for s, h in hits.items())
        print(f"  {side:5s} {text}")
    reached = {side: [h for h in summary["threshold"][side].values() if h is not None] for side in ("trl", "ours")}
    if all(reached.values()):
        mean = {side: {k: float(np.mean([h[k] for h in reached[side]])) for k in ("responses", "loop_s")}
                for side in reached}
        ratio = {k: mean["ours"][k] / mean["trl"][k] for k in ("responses", "loop_s")}
        print(f"  ours / TRL (means over the seeds that reached it): responses {ratio['responses']:.2f}, "
              f"seconds {ratio['loop_s']:.2f}")


# ---------------------------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("speed", "learn"), required=True)
    p.add_argument("--shapes", nargs="+", choices=tuple(SHAPES), default=list(SHAPES), help="speed: which shapes")
    p.add_argument("--rounds", type=int, default=5, help="speed: interleaved rounds (median)")
    p.add_argument("--iterations", type=int, default=3, help="speed: timed iterations per round and side")
    p.add_argument("--warmup", type=int, default=1, help="speed: untimed iterations first, per round and side")
    p.add_argument("--responses", type=int, nargs="+", default=[1600, 3200], help="learn: response budgets reported")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="learn: one run per side and seed")
    p.add_argument("--gold", type=float, default=0.73, help="learn: gold threshold to reach")
    p.add_argument("--eval-every", type=int, default=800, help="learn: responses between evaluation points")
    p.add_argument("--eval-prompts", type=int, default=234, help="learn: held-out prompts scored (234: all)")
    p.add_argument("--lr", type=float, default=rlhf_ppo_config().learning_rate, help="Adam learning rate (ours' default)")
    p.add_argument("--trl-lr", type=float, default=None, help="TRL's learning rate, when not --lr (6.5e-5: tuned for it)")
    p.add_argument("--lr-schedule", choices=("linear", "constant"), default="linear",
                   help="learn: linear decays to 0 over the largest budget, counted in responses, on both sides")
    p.add_argument("--kl-coef", type=float, default=RLHFConfig().env.kl_coef, help="initial beta (ours' default)")
    p.add_argument("--trl-kl-coef", type=float, default=None, help="TRL's initial beta, when not --kl-coef")
    p.add_argument("--kl-target", type=float, default=KLConfig().target, help="KL per response (nats) the controllers hold")
    p.add_argument("--kl-horizon", type=float, default=KLConfig().horizon, help="controller horizon (responses)")
    p.add_argument("--norm-adv-over", choices=("minibatch", "batch"), default=rlhf_ppo_config().norm_adv_over,
                   help="ours: what the advantages are whitened over (TRL: batch)")
    p.add_argument("--mixed-precision", action="store_true",
                   help="ours: bf16 autocast in the update (TRL stays fp32); both sides then run native kernels")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads, both sides")
    p.add_argument("--venv", default=str(REPO / ".bench-venvs" / "trl-0.11.4"),
                   help="TRL's virtualenv (built if missing, reused if present)")
    p.add_argument("--out", default=str(REPO / "outputs" / "bench_vs_trl"))
    p.add_argument("--quiet", action="store_true", help="hide the per-iteration lines of both sides")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if not args.mixed_precision:  # before the first torch operation; the TRL worker inherits the same pins
        reproducible_cpu_kernels()
    torch.set_num_threads(args.threads)
    python, trl_versions, ours_versions = prepare_sides(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_vs_trl-") as tmp:
        result = (speed if args.mode == "speed" else learn)(args, python, Path(tmp))
    report = {"mode": args.mode, "args": vars(args), "versions": {"trl_venv": trl_versions, "ours": ours_versions},
              "kernels": {k: os.environ.get(k) for k in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")},
              "wall_s": time.perf_counter() - start, **result}
    path = out / f"{args.mode}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    print(f"\n{path}   total {report['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
