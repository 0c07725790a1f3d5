"""Reward hacking, measured: PPO against the learned reward model with and without the KL penalty.

    python examples/reward_hacking.py                    # two runs of the default task, same seed
    python examples/reward_hacking.py --responses 6400 --seed 1

Lecture slides, "Reward hacking": the policy may learn to output whatever the reward model wants to see.
The default task makes that visible: the reward model (the proxy PPO optimises) was learnt from preference
pairs labelled by a gold judge (sentiment + fluency under the review grammar), and the judge keeps scoring
every training batch. Two runs share everything but the penalty:

- ``beta = 0``: nothing keeps the policy near the SFT model;
- the default: an adaptive beta that holds the KL per response near ``--kl-target``.

The plot shows the proxy (RM score), the gold score, the judge's fluency and the KL over training; the
script prints what happened: whether the proxy kept rising while the gold score fell without the penalty,
and what the penalty did. Outputs: outputs/reward_hacking/{reward_hacking.png, summary.json}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--responses", type=int, default=3840, help="budget of generated responses per run")
    p.add_argument("--num-envs", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--kl-coef", type=float, default=0.05, help="initial beta of the penalised run")
    p.add_argument("--kl-target", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default="outputs/reward_hacking")
    p.add_argument("--log-every", type=int, default=25)
    return p.parse_args()


class RecordingJudge:
    """The gold judge as a RewardFn that also keeps the mean of each of its parts per call (one per iteration)."""

    def __init__(self):
        from textenv.default.judge import judge_details

        self.details, self.calls = judge_details, []

    def __call__(self, prompts, completions):
        d = self.details(prompts, completions)
        self.calls.append({k: float(np.mean(v)) for k, v in d.items()})
        return d["gold"]


def run(args, kl_coef: float, target: float | None) -> dict:
    from agents.rlhf import KLConfig, RLHFConfig, rlhf_ppo_config, train_rlhf
    from textenv.text.config import TextGenConfig

    judge = RecordingJudge()
    cfg = RLHFConfig(
        env=TextGenConfig(max_new_tokens=args.max_new_tokens, kl_coef=kl_coef, device=args.device),
        num_envs=args.num_envs,
        kl=KLConfig(target=target),
        ppo=rlhf_ppo_config(learning_rate=args.lr),
        responses=args.responses, seed=args.seed, device=args.device, gold=judge, log_every=args.log_every,
    )
    start = time.perf_counter()
    history = train_rlhf(cfg).history
    for h, parts in zip(history, judge.calls):
        h["fluency"], h["sentiment"] = parts["fluency"], parts["sentiment"]
    return {"history": history, "wall_s": time.perf_counter() - start}


def smooth(x, k: int = 10) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return np.array([x[max(0, i - k + 1): i + 1].mean() for i in range(len(x))])


def describe(name: str, history: list[dict]) -> dict:
    """Where the proxy and the gold score peaked and ended (10-iteration moving averages)."""
    rm, gold, flu = (smooth([h[k] for h in history]) for k in ("rm_score", "gold_score", "fluency"))
    kl = smooth([h["kl"] for h in history])
    g_peak = int(np.argmax(gold))
    out = {
        "rm_start": rm[0], "rm_end": rm[-1], "rm_at_gold_peak": rm[g_peak],
        "gold_start": gold[0], "gold_peak": gold[g_peak], "gold_peak_iteration": g_peak + 1, "gold_end": gold[-1],
        "fluency_start": flu[0], "fluency_end": flu[-1], "kl_end": kl[-1],
        "beta_end": history[-1]["kl_coef"],
    }
    print(f"{name}: RM {out['rm_start']:+.2f} -> {out['rm_end']:+.2f}; gold {out['gold_start']:+.2f} -> "
          f"peak {out['gold_peak']:+.2f} (iteration {g_peak + 1}) -> {out['gold_end']:+.2f}; fluency "
          f"{out['fluency_start']:.2f} -> {out['fluency_end']:.2f}; KL per response {out['kl_end']:.1f} nats; "
          f"final beta {out['beta_end']:.3f}")
    for s in history[-1]["samples"][:3]:
        print(f"    {s['prompt']!r} -> {s['completion']!r}  (RM {s['rm_score']:+.2f})")
    return {k: float(v) for k, v in out.items()}


def plot(runs: dict, target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("rm_score", "RM score (proxy, optimised)"), ("gold_score", "gold score (true objective)"),
            ("fluency", "judge's fluency"), ("kl", "KL to reference per response (nats)")]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    for name, r in runs.items():
        h = r["history"]
        x = [e["iteration"] for e in h]
        for ax, (key, title) in zip(axes, keys):
            ax.plot(x, [e[key] for e in h], alpha=0.3)
            ax.plot(x, smooth([e[key] for e in h]), label=name, color=ax.lines[-1].get_color())
            ax.set_title(title)
            ax.set_xlabel("PPO iteration")
    axes[3].axhline(target, color="k", ls="--", lw=1, label="KL target")
    axes[3].set_yscale("symlog")
    axes[3].legend()
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("--- no KL penalty (beta = 0)", flush=True)
    free = run(args, 0.0, None)
    print(f"--- KL penalty (adaptive beta, target {args.kl_target} nats per response)", flush=True)
    held = run(args, args.kl_coef, args.kl_target)
    print()
    a = describe("beta = 0      ", free["history"])
    b = describe("adaptive beta ", held["history"])

    proxy_up = a["rm_end"] > a["rm_at_gold_peak"] + 0.05
    gold_down = a["gold_end"] < a["gold_peak"] - 0.05
    print()
    if proxy_up and gold_down:
        print(f"Without the penalty the proxy kept rising after the gold score peaked at iteration "
              f"{int(a['gold_peak_iteration'])} (RM {a['rm_at_gold_peak']:+.2f} -> {a['rm_end']:+.2f}) while the gold "
              f"score fell ({a['gold_peak']:+.2f} -> {a['gold_end']:+.2f}): reward hacking.")
    else:
        print(f"Without the penalty the proxy {'rose' if proxy_up else 'did not keep rising'} after the gold peak and "
              f"the gold score {'fell' if gold_down else 'did not fall'} from it within {args.responses} responses: "
              f"no clear reward hacking in this run.")
    print(f"With the penalty: gold {b['gold_start']:+.2f} -> {b['gold_end']:+.2f} at a KL of {b['kl_end']:.1f} nats "
          f"(vs {a['kl_end']:.1f} without); fluency {b['fluency_end']:.2f} (vs {a['fluency_end']:.2f}).")
    plot({"beta = 0": free, f"adaptive beta (target {args.kl_target})": held}, args.kl_target, out / "reward_hacking.png")
    (out / "summary.json").write_text(json.dumps({"args": vars(args), "no_penalty": a, "penalty": b,
                                                  "proxy_kept_rising": proxy_up, "gold_fell": gold_down}, indent=2))
    print(f"plot: {out / 'reward_hacking.png'}   summary: {out / 'summary.json'}")


if __name__ == "__main__":
    from agents.utils import reproducible_cpu_kernels

    reproducible_cpu_kernels()  # before the first torch operation (figures repeat on machines of one vendor)
    main()
