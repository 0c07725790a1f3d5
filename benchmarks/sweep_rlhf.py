"""A sweep over RLHF settings on the embedded default task: held-out gold at equal responses, over seeds.

    python benchmarks/sweep_rlhf.py                                        # preset 'default', seeds 0-2, 1600 responses
    python benchmarks/sweep_rlhf.py --set ppo.learning_rate=1e-4,3e-4,1e-3 ppo.n_epochs=2,4
    python benchmarks/sweep_rlhf.py --mode grid --set ppo.learning_rate=1e-4,3e-4 num_envs=32,64
    python benchmarks/sweep_rlhf.py --grid lr update --resume               # named presets; skips the runs done
    python benchmarks/sweep_rlhf.py --base env.kl_coef=0.2 --set ppo.vf_coef=0.1,0.5   # around another base
    python benchmarks/sweep_rlhf.py --responses 64 --seeds 0 --eval-prompts 8 --set ppo.learning_rate=1e-4,3e-4  # tiny

The base config is ``RLHFConfig`` with its defaults on the default task (``env=TextGenConfig(device="cpu")``),
changed by ``--base``.
A setting changes fields named by their dotted path (``ppo.learning_rate``, ``num_envs``, ``env.kl_coef``, ``critic``,
...), each value read as the type of the field it replaces ("none" for None), from ``--set PATH=V1,V2``
and the presets of ``--grid`` (PRESETS). ``--mode one-at-a-time`` (the default) runs the base and each
value changed alone, ``--mode grid`` every combination; a value equal to the base's is the base run.
Every setting gets the same budget, ``--responses`` (``env.num_envs`` changes the responses per
iteration, not the total): they are compared at equal responses.

Each setting runs once per seed: ``train_rlhf``, then ``agents.rlhf.evaluate_policy`` on the first ``--eval-prompts``
test prompts with the gold judge (evaluation seed 10_000 + seed). Settings are ranked by mean gold over
the seeds among those whose mean held-out KL per response is at most ``--kl-max``; the others follow,
unranked. Printed: a markdown table (gold mean ± std over seeds, RM, KL, loop seconds), the SFT model below.

Output: ``--out`` (default outputs/sweep_rlhf/results.json) gets each run as it finishes (settings, scores,
loop seconds, the per-iteration history), so a stopped sweep keeps its runs; ``--resume`` skips the runs
it holds with the same settings, budget and evaluation.
Runs use one torch thread and the AVX2-pinned kernels (agents.utils.reproducible_cpu_kernels); the pins
hide native bf16 from torch, so ``mixed_precision=true`` changes nothing here.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from agents.rlhf import KLConfig, RLHFConfig, default_gold, evaluate_policy, run_settings, train_rlhf
from agents.utils import reproducible_cpu_kernels
from textenv.text.config import TextGenConfig

PRESETS = {
    "default": ["ppo.learning_rate=1e-4,3e-4", "ppo.n_epochs=2,4", "num_envs=32,64",
                "ppo.norm_adv_over=minibatch,batch", "ppo.vf_coef=0.1,0.5"],
    "lr": ["ppo.learning_rate=1e-4,2e-4,3e-4,5e-4,1e-3", "ppo.anneal_lr=true,false"],
    "update": ["ppo.n_epochs=1,2,4,8", "ppo.n_minibatches=1,2,4,8", "ppo.clip_coef=0.1,0.2,0.3"],
    "shape": ["num_envs=16,32,64,128"],
    "value": ["ppo.vf_coef=0.1,0.25,0.5,1.0", "ppo.clip_vloss=true,false", "critic=shared,separate"],
    "kl": ["env.kl_coef=0.02,0.05,0.1,0.2", "kl.horizon=1000,2000,4000"],
}
NOT_SWEPT = {"seed": "use --seeds", "responses": "use --responses (settings are compared at equal responses)",
             "out_dir": "runs write no checkpoints", "resume": "use --resume"}


# ---------------------------------------------------------------------------------------------- settings
def field_value(config, path: str):
    """The value at dotted ``path`` of a config; SystemExit naming the fields when there is none."""
    obj = config
    for part in path.split("."):
        names = [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []
        if part not in names:
            sys.exit(f"error: {path!r} is not a setting of RLHFConfig (at {part!r}; fields there: {', '.join(names)})")
        obj = getattr(obj, part)
    return obj


def parse_value(text: str, current):
    """``text`` read as the type of the value it replaces: bool, int, float, str, or a guess where that is None."""
    low = text.strip().lower()
    if low == "none":
        return None
    if isinstance(current, bool):
        if low not in ("true", "false"):
            sys.exit(f"error: {text!r} is not true / false")
        return low == "true"
    casts = [type(current)] if isinstance(current, (int, float, str)) else [int, float, str]
    for cast in casts:
        try:
            return cast(text)
        except ValueError:
            pass
    sys.exit(f"error: {text!r} is not of type {casts[0].__name__}")


def parse_spec(items: list[str], base: RLHFConfig) -> dict[str, list]:
    """``["ppo.lr=1e-4,3e-4", ...]`` -> ``{"ppo.lr": [1e-4, 3e-4]}``, checked against the base config."""
    spec = {}
    for item in items:
        path, sep, values = item.partition("=")
        if not sep or not values:
            sys.exit(f"error: {item!r} is not PATH=V1,V2,...")
        if path.split(".")[0] in NOT_SWEPT:
            sys.exit(f"error: {path} cannot be swept: {NOT_SWEPT[path.split('.')[0]]}")
        current = field_value(base, path)
        if dataclasses.is_dataclass(current):
            sys.exit(f"error: {path} is a group of settings; name one of its fields ({path}.NAME)")
        spec[path] = [parse_value(v, current) for v in values.split(",")]
    return spec


def with_overrides(obj, overrides: dict):
    """A copy of a config with dotted-path overrides, rebuilt by dataclasses.replace so each level's checks run."""
    direct, nested = {}, {}
    for path, value in overrides.items():
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    direct.update({head: with_overrides(getattr(obj, head), sub) for head, sub in nested.items()})
    return dataclasses.replace(obj, **direct)


def show(value) -> str:
    bare = isinstance(value, bool) or value is None
    return str(value).lower() if bare else f"{value:g}" if isinstance(value, float) else str(value)


def plan_settings(base: RLHFConfig, spec: dict[str, list], mode: str) -> dict[str, dict]:
    """Setting name -> its overrides of the base: the base and each value alone, or every combination."""
    if mode == "grid":
        combos = [dict(zip(spec, values)) for values in itertools.product(*spec.values())]
    else:
        combos = [{}] + [{path: v} for path, values in spec.items() for v in values]
    settings = {}
    for combo in combos:
        changed = {k: v for k, v in combo.items() if v != field_value(base, k)}  # the base's value is the base run
        name = " ".join(f"{k}={show(v)}" for k, v in sorted(changed.items())) or "base"
        settings.setdefault(name, changed)
    return settings


# ---------------------------------------------------------------------------------------------- runs
def base_config(args) -> RLHFConfig:
    config = RLHFConfig(env=TextGenConfig(device="cpu"),
                        kl=KLConfig(), responses=args.responses, device="cpu",
                        log_every=args.log_every)
    changes = parse_spec(args.base, config)
    if any(len(values) > 1 for values in changes.values()):
        sys.exit("error: --base takes one value per setting (PATH=V); sweep values go in --set")
    return with_overrides(config, {path: values[0] for path, values in changes.items()})


def run_key(config: RLHFConfig, args) -> str:
    """What makes two runs the same: every setting that shapes the numbers, the budget and the evaluation."""
    return json.dumps({"settings": run_settings(config), "responses": config.responses,
                       "eval_prompts": args.eval_prompts}, sort_keys=True, default=str)


def scores(out: dict) -> dict:
    return {k: float(np.mean(out[src])) for k, src in (("gold", "gold_score"), ("rm", "rm_score"), ("kl", "kl"),
                                                       ("length", "tokens"))}


def run_one(config: RLHFConfig, prompts: list[str]) -> dict:
    start = time.perf_counter()
    result = train_rlhf(config)
    agent = result.agent
    out = evaluate_policy(agent.policy, config.env, prompts, default_gold(config), seed=10_000 + config.seed)
    history = [{k: v for k, v in row.items() if k != "samples"} for row in result.history]
    return {**scores(out), "responses": agent.responses, "iterations": agent.iteration, "loop_s": agent.loop_s,
            "wall_s": time.perf_counter() - start, "final_kl_coef": history[-1]["kl_coef"], "history": history}


def save(path: Path, data: dict) -> None:
    """Write atomically: a sweep killed while writing keeps the previous file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- the table
def rank(settings: dict, runs: dict[str, list[dict]], kl_max: float) -> list[dict]:
    """Settings with their means over seeds: those within kl_max by gold, best first, then the others."""
    rows = []
    for name in settings:
        done = runs.get(name, [])
        if not done:
            continue
        row = {"setting": name, "seeds": len(done)}
        for key in ("gold", "rm", "kl", "loop_s"):
            values = [r[key] for r in done]
            row[key], row[key + "_std"] = float(np.mean(values)), float(np.std(values, ddof=min(1, len(values) - 1)))
        row["within_kl"] = row["kl"] <= kl_max
        rows.append(row)
    rows.sort(key=lambda r: (not r["within_kl"], -r["gold"]))
    for i, row in enumerate(rows):
        row["rank"] = i + 1 if row["within_kl"] else None
    return rows


def markdown(rows: list[dict], sft: dict, args) -> str:
    base_gold = next((r["gold"] for r in rows if r["setting"] == "base"), None)
    lines = [f"gold / RM / KL on {args.eval_prompts} held-out prompts after {args.responses} responses; mean ± std "
             f"over seeds; ranked among mean KL <= {args.kl_max}", "",
             "| rank | setting | seeds | gold | Δ gold vs base | RM | KL | loop s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        delta = f"{r['gold'] - base_gold:+.3f}" if base_gold is not None else "n/a"
        lines.append(f"| {r['rank'] or f'— (KL > {args.kl_max:g})'} | {r['setting']} | {r['seeds']} | "
                     f"{r['gold']:+.3f} ± {r['gold_std']:.3f} | {delta} | {r['rm']:+.3f} ± {r['rm_std']:.3f} | "
                     f"{r['kl']:.2f} ± {r['kl_std']:.2f} | {r['loop_s']:.0f} |")
    lines.append(f"| | SFT model (no training) | | {sft['gold']:+.3f} | | {sft['rm']:+.3f} | {sft['kl']:.2f} | |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", nargs="+", default=[], metavar="PATH=V1,V2", help="values to sweep, per setting")
    p.add_argument("--grid", nargs="+", default=[], choices=sorted(PRESETS), help="named presets (PRESETS)")
    p.add_argument("--mode", choices=("one-at-a-time", "grid"), default="one-at-a-time")
    p.add_argument("--base", nargs="+", default=[], metavar="PATH=V", help="changes to the base config")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--responses", type=int, default=1600, help="the response budget of every run")
    p.add_argument("--eval-prompts", type=int, default=128, help="held-out prompts (test split) per evaluation")
    p.add_argument("--kl-max", type=float, default=4.5, help="rank only settings whose mean held-out KL is within")
    p.add_argument("--out", default="outputs/sweep_rlhf/results.json")
    p.add_argument("--resume", action="store_true", help="keep the runs in --out and skip those already done")
    p.add_argument("--log-every", type=int, default=0, help="print a metrics line every N iterations of a run")
    args = p.parse_args()
    if not args.set and not args.grid:
        args.grid = ["default"]
    return args


def main() -> None:
    args = parse_args()
    from transformers.utils import logging as hf_logging

    from textenv.text.loading import load_causal_lm
    from textenv.default import prompts as default_prompts, sft_path
    from textenv.text.prompts import load_prompts

    hf_logging.disable_progress_bar()
    base = base_config(args)
    spec = {}
    for name in args.grid:
        spec.update(parse_spec(PRESETS[name], base))
    spec.update(parse_spec(args.set, base))  # --set wins over a preset's values for the same setting
    settings = plan_settings(base, spec, args.mode)
    out = Path(args.out)
    if out.exists() and not args.resume:
        sys.exit(f"error: {out} exists: pass --resume to continue that sweep, or choose another --out")
    data = json.loads(out.read_text()) if out.exists() else {"runs": []}
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {r["key"]: r for r in data["runs"]}
    todo, configs = [(name, seed) for name in settings for seed in args.seeds], {}
    for name, seed in todo:  # every setting checked before the first run: a bad one fails now, not hours in
        try:
            configs[name, seed] = config = with_overrides(base, {**settings[name], "seed": seed})
            config.check()
        except (ValueError, TypeError) as e:
            sys.exit(f"error: setting {name!r}: {e}")
    print(f"{len(settings)} settings x {len(args.seeds)} seeds, {args.responses} responses each; "
          f"{sum(run_key(c, args) in done for c in configs.values())} already in {out}", flush=True)

    prompts = load_prompts(default_prompts("test"))[: args.eval_prompts]
    sft = scores(evaluate_policy(load_causal_lm(sft_path(), torch.device("cpu")).eval(), base.env, prompts,
                          default_gold(base), seed=10_000))
    data.update(sft=sft, base={k: v for k, v in run_settings(base).items() if k != "seed"})
    runs, interrupted = {}, False  # setting name -> its runs (done now or before, with --resume)
    try:
        for i, (name, seed) in enumerate(todo, 1):
            config = configs[name, seed]
            key = run_key(config, args)
            if key not in done:
                record = {"setting": name, "overrides": {k: show(v) for k, v in settings[name].items()},
                          "seed": seed, "eval_prompts": args.eval_prompts, "eval_seed": 10_000 + seed, "key": key,
                          **run_one(config, prompts)}
                data["runs"].append(record)
                done[key] = record
                save(out, data)
                print(f"[{i}/{len(todo)}] {name}, seed {seed}: gold {record['gold']:+.3f}, RM {record['rm']:+.3f}, "
                      f"KL {record['kl']:.2f}, loop {record['loop_s']:.0f} s (wall {record['wall_s']:.0f} s)",
                      flush=True)
            runs.setdefault(name, []).append(done[key])
    except KeyboardInterrupt:
        interrupted = True
        print(f"\nstopped: {len(data['runs'])} runs kept in {out}; --resume continues the sweep", flush=True)
    rows = rank(settings, runs, args.kl_max)
    data["ranking"] = rows
    save(out, data)
    print("\n" + markdown(rows, sft, args))
    print(f"\n{out}")
    if interrupted:
        sys.exit(130)


if __name__ == "__main__":
    reproducible_cpu_kernels()  # before the first torch operation (figures repeat on machines of one vendor)
    torch.set_num_threads(1)  # the models are tiny: thread hand-offs would cost more than they give
    main()
