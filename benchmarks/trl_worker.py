"""TRL 0.11.4's classic ``PPOTrainer`` on our task: the TRL side of benchmarks/bench_vs_trl.py.

Runs inside the benchmark's own virtualenv (trl==0.11.4, transformers==4.44.2), never in ours, so it
imports nothing from this repository. bench_vs_trl.py starts it; by hand (after one run built the venv
and the patched model copies):

    .bench-venvs/trl-0.11.4/bin/python benchmarks/trl_worker.py --model SFT_DIR --reward RM_DIR \\
        --prompts prompts_train.jsonl --iterations 2 --out-json /tmp/trl.json

The loop is the lecture's (TRL's gpt2-sentiment notebook): a batch of prompts from the trainer's
dataloader, ``ppo_trainer.generate``, the reward model's score of prompt + completion, ``ppo_trainer.step``.
What is set to match agents.rlhf (see bench_vs_trl.py's docstring for what still differs):

- reward: ``logits[:, 0]`` of the reward model on ``prompt + completion`` (right padding), normalised
  with the config's ``reward_mean`` / ``reward_std`` exactly as textenv.text.rewards.ModelReward does;
  the completion is decoded as TextGenCore.decode_completion does (special tokens dropped);
- sampling: temperature 1, no top-k (0) and no top-p (1.0), at most ``--max-new-tokens``, stopping at
  EOS (``--fixed-length``: exactly that many tokens, EOS suppressed, for the speed shapes);
- prompts: tokenized with the tokenizer's BOS, cut from the left to ``--max-prompt-tokens`` (keeping BOS);
- PPO: batch, minibatch, epochs, learning rate (optionally decayed linearly over ``--budget`` responses),
  adaptive KL (init / target / horizon), gamma, lambda, clip ranges, vf_coef and max_grad_norm from the
  command line; KL estimator "kl" (k1 = log pi - log pi_ref), as our env's default.
- the tokenizer pads on the right for ``step``: TRL's training forward passes no position ids, so left
  padding would shift every position of a short prompt (``generate`` pads left by itself).

Writes ``--out-json``: the package versions, and per iteration the responses, tokens, the seconds of
generate / reward scoring / step (and TRL's own split of step), the mean score, KL and beta. With
``--save-at`` it saves the policy LM without its value head (``pretrained_model.save_pretrained``) into
``--save-dir/responses{N}`` at the first iteration that reaches N responses.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import os
import time
import warnings
from pathlib import Path

import torch

PACKAGES = ("torch", "trl", "transformers", "accelerate", "datasets", "numpy", "tokenizers", "pyarrow", "pandas")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="SFT causal LM folder (policy start and reference)")
    p.add_argument("--reward", required=True, help="reward model folder (sequence classifier, one label)")
    p.add_argument("--prompts", required=True, help="jsonl file, one {\"prompt\": ...} per line")
    p.add_argument("--out-json", required=True)
    p.add_argument("--iterations", type=int, default=2, help="PPO steps (each one batch of responses)")
    p.add_argument("--batch-size", type=int, default=32, help="responses per PPO step")
    p.add_argument("--mini-batch-size", type=int, default=8)
    p.add_argument("--ppo-epochs", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--max-prompt-tokens", type=int, default=12)
    p.add_argument("--fixed-length", action="store_true", help="exactly max-new-tokens per response (no EOS)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--lr-schedule", choices=("constant", "linear"), default="constant",
                   help="linear: decay to 0 over --budget responses")
    p.add_argument("--budget", type=int, default=0, help="responses the linear schedule decays over")
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--kl-target", type=float, default=4.0)
    p.add_argument("--kl-horizon", type=float, default=2000.0)
    p.add_argument("--gamma", type=float, default=1.0)
    p.add_argument("--lam", type=float, default=0.95)
    p.add_argument("--clip", type=float, default=0.2, help="cliprange and cliprange_value")
    p.add_argument("--vf-coef", type=float, default=0.5)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--save-at", type=int, nargs="*", default=[], help="response counts to save the policy at")
    p.add_argument("--save-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def read_prompts(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["prompt"] for line in f if line.strip()]


def encode_prompt(tokenizer, text: str, max_tokens: int) -> list[int]:
    """Token ids with the tokenizer's BOS, cut from the left like textenv's PromptEncoder."""
    ids = tokenizer(text)["input_ids"]
    if len(ids) <= max_tokens:
        return ids
    keep_bos = tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id and max_tokens > 1
    return ids[:1] + ids[len(ids) - max_tokens + 1:] if keep_bos else ids[-max_tokens:]


def completion_text(tokenizer, prompt_ids: list[int], response_ids: list[int]) -> str:
    """What TextGenCore.decode_completion returns: the decoded whole minus the decoded prompt."""
    prefix = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    full = tokenizer.decode(prompt_ids + response_ids, skip_special_tokens=True)
    return full[len(prefix):] if full.startswith(prefix) else tokenizer.decode(response_ids, skip_special_tokens=True)


class RewardScorer:
    """``(prompts, completions) -> (B,)`` normalised scores, as textenv.text.rewards.ModelReward computes them."""

    def __init__(self, path: str):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "right"
        config = self.model.config
        if config.pad_token_id is None:  # the classifier finds each row's last token through it
            config.pad_token_id = self.tokenizer.pad_token_id
        mean, std = getattr(config, "reward_mean", None), getattr(config, "reward_std", None)
        self.shift, self.scale = (float(mean), float(std)) if mean is not None and std is not None else (0.0, 1.0)
        self.max_length = getattr(config, "max_position_embeddings", None)

    @torch.no_grad()
    def __call__(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        texts = [p + c for p, c in zip(prompts, completions)]
        scores = []
        for start in range(0, len(texts), 64):  # ModelReward's batch size
            enc = self.tokenizer(texts[start:start + 64], padding=True, truncation=self.max_length is not None,
                                 max_length=self.max_length, return_tensors="pt")
            logits = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits  # (b, 1)
            scores.append(logits[:, 0].float())
        return (torch.cat(scores) - self.shift) / self.scale  # (B,)


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)  # PPOConfig's "deprecated, use PPOv2" notice
    torch.set_num_threads(args.threads)
    from datasets import Dataset
    from transformers import AutoTokenizer, set_seed
    from transformers.utils import logging as hf_logging
    from trl import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer, create_reference_model

    hf_logging.set_verbosity_error()

    # 1. models: the policy with TRL's value head, a frozen copy as the reference, the reward model
    set_seed(args.seed)  # before the value head is initialised
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.padding_side = "right"  # step() pads with this side; generate() switches to left itself
    model = AutoModelForCausalLMWithValueHead.from_pretrained(args.model)
    ref_model = create_reference_model(model)
    scorer = RewardScorer(args.reward)

    # 2. prompts as the trainer's dataset (the lecture's collator keeps the ragged lists)
    prompts = read_prompts(args.prompts)
    dataset = Dataset.from_dict({"query": prompts,
                                 "input_ids": [encode_prompt(tokenizer, p, args.max_prompt_tokens) for p in prompts]})

    def collator(rows):
        return {key: [row[key] for row in rows] for key in rows[0]}

    # 3. the trainer, with an Adam like the one PPOTrainer builds itself, so that a scheduler can drive it
    config = PPOConfig(
        learning_rate=args.lr, batch_size=args.batch_size, mini_batch_size=args.mini_batch_size,
        ppo_epochs=args.ppo_epochs, adap_kl_ctrl=True, init_kl_coef=args.kl_coef, target=args.kl_target,
        horizon=args.kl_horizon, gamma=args.gamma, lam=args.lam, cliprange=args.clip, cliprange_value=args.clip,
        vf_coef=args.vf_coef, max_grad_norm=args.max_grad_norm, kl_penalty="kl", seed=args.seed,
    )
    optimizer = torch.optim.Adam(filter(lambda p: p.requires_grad, model.parameters()), lr=args.lr)
    if args.lr_schedule == "linear":
        if args.budget <= 0:
            raise ValueError("--lr-schedule linear needs --budget > 0 (the responses the rate decays over)")
        factor = lambda step: max(0.0, 1.0 - step * args.batch_size / args.budget)  # noqa: E731
    else:
        factor = lambda step: 1.0  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    trainer = PPOTrainer(config, model, ref_model, tokenizer, dataset=dataset, data_collator=collator,
                         optimizer=optimizer, lr_scheduler=scheduler)
    generation_kwargs = {"min_length": -1, "do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
                         "max_new_tokens": args.max_new_tokens, "pad_token_id": tokenizer.pad_token_id,
                         "eos_token_id": tokenizer.eos_token_id}
    if args.fixed_length:
        generation_kwargs["min_new_tokens"] = args.max_new_tokens

    # 4. the loop: generate, score, step; the dataloader is reshuffled at every pass over the prompts
    batches = itertools.chain.from_iterable(trainer.dataloader for _ in itertools.count())
    save_at = sorted(set(args.save_at))
    rows, saved, responses, loop_s = [], [], 0, 0.0
    for iteration in range(1, args.iterations + 1):
        batch = next(batches)
        queries = [torch.tensor(ids) for ids in batch["input_ids"]]
        t0 = time.perf_counter()
        response_tensors = trainer.generate(queries, return_prompt=False, batch_size=len(queries), **generation_kwargs)
        t1 = time.perf_counter()
        completions = [completion_text(tokenizer, q.tolist(), r.tolist()) for q, r in zip(queries, response_tensors)]
        scores = scorer(batch["query"], completions)
        t2 = time.perf_counter()
        stats = trainer.step(queries, response_tensors, list(scores))
        t3 = time.perf_counter()
        responses += len(queries)
        loop_s += t3 - t0
        rows.append({
            "iteration": iteration, "responses": responses, "tokens": int(sum(len(r) for r in response_tensors)),
            "generate_s": t1 - t0, "score_s": t2 - t1, "step_s": t3 - t2, "loop_s": loop_s,
            "step_forward_s": float(stats["time/ppo/forward_pass"]),
            "step_optimize_s": float(stats["time/ppo/optimize_step"]),
            "rm_score": float(scores.mean()), "kl": float(stats["objective/kl"]),
            "kl_coef": float(stats["objective/kl_coef"]), "learning_rate": float(stats["ppo/learning_rate"]),
            "response_length": float(sum(len(r) for r in response_tensors)) / len(response_tensors),
        })
        print(f"trl iter {iteration}/{args.iterations}  responses {responses}  rm {rows[-1]['rm_score']:+.3f}  "
              f"kl {rows[-1]['kl']:.2f}  beta {rows[-1]['kl_coef']:.4f}  generate {t1 - t0:.2f} s  "
              f"score {t2 - t1:.2f} s  step {t3 - t2:.2f} s", flush=True)
        # 5. save the policy LM (no value head) at each response budget, for evaluation in our venv
        while save_at and responses >= save_at[0]:
            folder = Path(args.save_dir) / f"responses{save_at[0]}"
            trainer.accelerator.unwrap_model(trainer.model).pretrained_model.save_pretrained(folder)
            saved.append({"budget": save_at.pop(0), "responses": responses, "loop_s": loop_s,
                          "iteration": iteration, "path": str(folder)})

    versions = {name: importlib.metadata.version(name) for name in PACKAGES}
    Path(args.out_json).write_text(json.dumps({"versions": versions, "args": vars(args), "iterations": rows,
                                               "saved": saved}, indent=1))


if __name__ == "__main__":
    main()
