"""What scoring left-padded responses without position ids costs: the SFT model's own samples, scored twice.

    python benchmarks/position_ids.py                 # 256 held-out prompts of the default task

A batch of prompts of different lengths is left-padded. GPT-2 learns absolute positions, so a row must be
scored at the positions it was generated at: position ids counted from its first real token
(``attention_mask.cumsum(-1) - 1``), which is what ``LMActorCritic.score_responses`` passes. A forward that
passes no position ids numbers the columns 0, 1, 2, ... whatever the padding, so a short prompt's tokens sit
at shifted positions (TRL 1.16's GRPOTrainer and RLOOTrainer score this way). The script samples one
response per prompt from the SFT model (temperature 1, the env's own sampling through ``agents.rlhf.evaluate_policy``'s
rollout), then sums each response's log-probability both ways and prints the mean gap per response, next to
the log-probability the rollout itself measured (which the correct scoring must reproduce).
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from agents.lm import LMActorCritic
    from agents.rlhf.responses import collect_responses
    from textenv.default import prompts, sft_path
    from textenv.text.prompts import load_prompts
    from textenv.text.vector import TextGenVectorEnv

    policy = LMActorCritic(sft_path(), device="cpu").eval()
    held_out = load_prompts(prompts("test"))[: args.prompts]
    env = TextGenVectorEnv(len(held_out), policy=policy, prompts=held_out)  # the default task's settings
    batch = collect_responses(env, policy, 0.0, 0, torch.Generator().manual_seed(0), torch.device("cpu"),
                              prompts=held_out)
    mask = batch.response_mask
    with torch.no_grad():
        ours, _, _ = policy.score_responses(batch.ids, batch.mask, batch.prompt_cols)  # position ids from the mask
        logits = policy.model(input_ids=batch.ids, attention_mask=batch.mask).logits  # no position ids
        logp = torch.log_softmax(logits[:, batch.prompt_cols - 1:-1].float(), -1)
        naive = logp.gather(-1, batch.actions[..., None])[..., 0]
    per_response = lambda x: (x * mask).sum(1)  # noqa: E731
    rollout, ours, naive = per_response(batch.logprobs), per_response(ours), per_response(naive)
    padded = (batch.mask[:, : batch.prompt_cols] == 0).any(1)
    print(f"{len(held_out)} SFT responses, {int(padded.sum())} of them in left-padded rows; mean log pi per response:")
    print(f"  as sampled (the rollout)            {rollout.mean():9.3f}")
    print(f"  position ids from the mask (ours)   {ours.mean():9.3f}   |gap to the rollout| {(ours - rollout).abs().mean():.2e}")
    print(f"  no position ids                     {naive.mean():9.3f}   gap {(naive - rollout).mean():+.3f} nats "
          f"(padded rows {(naive - rollout)[padded].mean():+.3f})")


if __name__ == "__main__":
    main()
