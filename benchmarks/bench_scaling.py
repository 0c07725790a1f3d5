"""Scale-out: responses per second and gold score of the main job on 1 and on 2 processes, in one run.

    python benchmarks/bench_scaling.py                      # 3 seeds x 3,200 responses per setting
    python benchmarks/bench_scaling.py --seeds 0 --responses 320 --eval-prompts 64   # a quick look

Runs ``examples/rlhf_ppo.py`` one setting after another (never two at once: they would share the cores),
each process with one thread, at an equal global budget of responses:

- 1 process, ``--num-envs 32``: the baseline;
- 2 processes (``torchrun --standalone --nproc_per_node=2``), ``--num-envs 16`` each: the same global batch
  of 32 responses per iteration, so the same algorithm on two cores;
- 2 processes, ``--num-envs 32`` each: a global batch of 64, half the iterations (CleanRL's multi-GPU PPO and
  TRL scale this way: the per-process batch stays, the global one grows);
- the machine's ceiling, ``2 independent x 32``: two unrelated 1-process jobs at once (seeds s and s + 100),
  their responses per second added: what two processes can get from these cores with no communication.

Speed is responses per second of the training loop (rollouts and updates; the slowest rank's time),
relative to 1 process; the learning figure is the held-out gold score after training, mean and spread
over the seeds, with the KL to the reference. Writes ``--out``/scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {  # name: (processes, responses per iteration per process)
    "1 process x 32": (1, 32),
    "2 processes x 16": (2, 16),
    "2 processes x 32": (2, 32),
    "2 independent x 32": (2, 32),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--responses", type=int, default=3200, help="global budget of responses per seed")
    p.add_argument("--eval-prompts", type=int, default=256, help="held-out prompts for the gold score")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS)[:3], choices=list(SETTINGS),
                   help="default: the first three (the ceiling doubles the jobs: ask for it by name)")
    p.add_argument("--out", default="outputs/bench_scaling")
    return p.parse_args()


def command(procs: int, num_envs: int, args: argparse.Namespace, out: Path) -> list[str]:
    job = [str(ROOT / "examples" / "rlhf_ppo.py"), "--seeds", *map(str, args.seeds), "--responses",
           str(args.responses), "--num-envs", str(num_envs), "--eval-prompts", str(args.eval_prompts),
           "--threads", "1", "--log-every", "0", "--out", str(out)]
    if procs == 1:
        return [sys.executable, *job]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", *job]


def run_setting(name: str, args: argparse.Namespace, out: Path) -> dict:
    procs, num_envs = SETTINGS[name]
    folder = out / name.replace(" ", "_")
    independent = name.startswith("2 independent")
    if independent:  # two 1-process jobs side by side, the second on other seeds
        jobs = [(folder / "a", args), (folder / "b", argparse.Namespace(**{**vars(args),
                                                                          "seeds": [s + 100 for s in args.seeds]}))]
        cmds = [command(1, num_envs, a, f) for f, a in jobs]
    else:
        cmds = [command(procs, num_envs, args, folder)]
    for cmd in cmds:
        print(f"--- {name}: {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL) for cmd in cmds]
    if any(p.wait() != 0 for p in running):
        raise RuntimeError(f"{name}: a job failed (see its output above)")
    summaries = [json.loads((f / "summary.json").read_text()) for f in ([folder / "a", folder / "b"] if independent
                                                                        else [folder])]
    runs = [r for s in summaries for r in s["runs"]]
    responses = sum(r["responses"] for r in runs)
    # responses per second: of each job over its own loop time, added over the jobs that ran at once
    per_job = [sum(r["responses"] for r in s["runs"]) / sum(r["loop_s"] for r in s["runs"]) for s in summaries]
    loop_s = responses / sum(per_job)
    gold = np.array([r["gold_after"] for r in runs])
    return {"processes": procs, "num_envs_per_process": num_envs, "world_size": summaries[0].get("world_size"),
            "responses": responses, "loop_s": loop_s, "responses_per_s": sum(per_job),
            "gold": gold.tolist(), "gold_mean": float(gold.mean()),
            "gold_std": float(gold.std(ddof=1)) if len(gold) > 1 else 0.0,
            "kl": [r["kl_after"] for r in runs], "wall_s": time.perf_counter() - start}


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {name: run_setting(name, args, out) for name in args.settings}
    base = results.get("1 process x 32")
    print(f"\n{'setting':20s} {'responses/s':>12s} {'vs 1 process':>13s} {'gold (mean ± std)':>20s} {'KL':>6s}")
    for name, r in results.items():
        ratio = r["responses_per_s"] / base["responses_per_s"] if base else float("nan")
        r["speed_vs_1_process"] = ratio
        print(f"{name:20s} {r['responses_per_s']:12.1f} {ratio:12.2f}x {r['gold_mean']:+12.3f} ± {r['gold_std']:.3f} "
              f"{np.mean(r['kl']):6.2f}")
    if base and len(args.seeds) > 1:
        lo, hi = min(base["gold"]), max(base["gold"])
        for name, r in results.items():
            if r is not base:
                where = "inside" if lo <= r["gold_mean"] <= hi else ("above" if r["gold_mean"] > hi else "below")
                print(f"{name}: gold mean {r['gold_mean']:+.3f} {where} the 1-process seeds' range "
                      f"[{lo:+.3f}, {hi:+.3f}]")
    (out / "scaling.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    print(f"figures: {out / 'scaling.json'}")


if __name__ == "__main__":
    main()
