"""A fingerprint of what a short RLHF run computes, to check that a refactor changed no number.

    python benchmarks/run_fingerprint.py                     # prints one SHA-256 per method
    git worktree add /tmp/before OLD_COMMIT && (cd /tmp/before && PYTHONPATH=. python benchmarks/run_fingerprint.py)

PPO, RLOO and GRPO (KL in the loss) train for 64 responses on the default task, seed 1, one CPU thread. The
fingerprint of a method hashes its per-iteration history (timings left out), its last iteration's samples
and its final weights: equal fingerprints on two trees mean the same run, bit for bit. Only the public
API every tree since issue 10 shares is used (``RLHFConfig`` with its defaults).
"""

from __future__ import annotations

import hashlib
import json

import torch

from agents.rlhf import RLHFConfig, rlhf_ppo_config, train_rlhf

METHODS = {
    "ppo": {},
    "rloo": dict(advantage="rloo", ppo=rlhf_ppo_config(norm_adv=False)),
    "grpo": dict(advantage="grpo", kl_in="loss", ppo=rlhf_ppo_config(norm_adv=False)),
}


def fingerprint(result) -> str:
    history = [{k: v for k, v in row.items() if not k.endswith("_s")} for row in result.history]  # no timings
    digest = hashlib.sha256(json.dumps(history, sort_keys=True, default=str).encode())
    for p in result.agent.policy.parameters():
        digest.update(p.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def main() -> None:
    torch.set_num_threads(1)
    for name, settings in METHODS.items():
        result = train_rlhf(RLHFConfig(responses=64, seed=1, device="cpu", **settings))
        print(f"{name:5s} {fingerprint(result)}  (gold {result.history[-1]['gold_score']:+.4f})", flush=True)


if __name__ == "__main__":
    main()
