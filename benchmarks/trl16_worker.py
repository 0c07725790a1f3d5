"""TRL 1.16's ``GRPOTrainer`` and ``RLOOTrainer`` on our default task: the TRL rows of examples/compare_algorithms.py.

Runs inside its own virtualenv (``.bench-venvs/trl-1.16``: trl==1.16.0 on our pinned torch and transformers),
which compare_algorithms.py builds on first use, and imports nothing from textenv (only its sibling
benchmarks/trl_worker.py's reward scorer). By hand:

    .bench-venvs/trl-1.16/bin/python benchmarks/trl16_worker.py --method rloo --model SFT_DIR --reward RM_DIR \\
        --prompts prompts_train.jsonl --responses 3200 --save-dir /tmp/trl_rloo

What is set to match our runs (everything else is TRL's default, e.g. GRPO's ``loss_type="dapo"``):
- the reward: our reward model's score of prompt + completion, normalised as our env does
  (trl_worker.RewardScorer), passed as a reward function;
- groups of ``--num-generations`` completions per prompt (our ``group_size``), 32 completions per
  generation (8 prompts, ``per_device_train_batch_size=32``) and TRL's default update shape: one optimizer
  step per generation (``--steps-per-generation`` 1) in one pass (``--num-iterations`` 1), so 100 steps for
  3,200 completions. With our shape (4 steps of 8 completions, 4 passes) at the learning rate TRL needs
  here, it over-optimised: KL 8 to 11 at 3,200 responses;
- sampling: temperature 1, no top-k / top-p, at most 24 new tokens (``max_completion_length``), EOS ends;
- the budget: ``--responses`` generated completions (``max_steps`` optimizer steps), the learning rate
  decaying linearly to 0 over it (TRL's default scheduler), gradient clipping at 1.0;
- beta fixed (TRL has no adaptive controller): in the reward for RLOO, as a k3 loss term for GRPO.

Saves the trained policy (``trainer.save_model``) to ``--save-dir`` and writes ``--save-dir``/trl_run.json
with the package versions, the settings and the wall-clock seconds; compare_algorithms.py scores the saved
policy with the same held-out evaluation as ours.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trl_worker import RewardScorer, read_prompts  # noqa: E402

PACKAGES = ("torch", "trl", "transformers", "accelerate", "datasets")
COMPLETIONS_PER_GENERATION = 32


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=("grpo", "rloo"), required=True)
    p.add_argument("--model", required=True, help="SFT causal LM folder (policy start and reference)")
    p.add_argument("--reward", required=True, help="reward model folder (sequence classifier, one label)")
    p.add_argument("--prompts", required=True, help="jsonl file, one {\"prompt\": ...} per line")
    p.add_argument("--save-dir", required=True)
    p.add_argument("--responses", type=int, default=3200, help="budget of generated completions")
    p.add_argument("--num-generations", type=int, default=4, help="completions per prompt (K)")
    p.add_argument("--beta", type=float, default=0.05)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--num-iterations", type=int, default=1, help="passes over each generation (TRL's num_iterations)")
    p.add_argument("--steps-per-generation", type=int, default=1,
                   help="optimizer steps per generation of 32 completions (TRL's steps_per_generation)")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    from datasets import Dataset
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    hf_logging.set_verbosity_error()
    scorer = RewardScorer(args.reward)

    def reward(prompts, completions, **_):  # TRL's reward-function signature
        return scorer(list(prompts), list(completions)).tolist()

    generations = -(-args.responses // COMPLETIONS_PER_GENERATION)  # ceil
    Config, Trainer = (GRPOConfig, GRPOTrainer) if args.method == "grpo" else (RLOOConfig, RLOOTrainer)
    config = Config(
        output_dir=str(Path(args.save_dir) / "trainer"), seed=args.seed, use_cpu=True, bf16=False,
        report_to="none", save_strategy="no", logging_steps=10, disable_tqdm=True,
        learning_rate=args.lr, max_grad_norm=1.0, beta=args.beta,
        num_generations=args.num_generations, max_completion_length=args.max_new_tokens,
        temperature=1.0, top_k=0, top_p=1.0,
        per_device_train_batch_size=COMPLETIONS_PER_GENERATION // args.steps_per_generation,
        steps_per_generation=args.steps_per_generation, num_iterations=args.num_iterations,
        max_steps=generations * args.steps_per_generation * args.num_iterations,
    )
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.padding_side = "left"
    dataset = Dataset.from_dict({"prompt": read_prompts(args.prompts)})
    trainer = Trainer(model=args.model, reward_funcs=reward, args=config, train_dataset=dataset,
                      processing_class=tokenizer)
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    trainer.save_model(args.save_dir)
    tokenizer.save_pretrained(args.save_dir)
    logs = [h for h in trainer.state.log_history if "kl" in h or "reward" in h]
    record = {"versions": {p: importlib.metadata.version(p) for p in PACKAGES}, "args": vars(args),
              "responses": generations * COMPLETIONS_PER_GENERATION, "train_s": train_s, "log": logs}
    (Path(args.save_dir) / "trl_run.json").write_text(json.dumps(record, indent=2))
    print(json.dumps({"train_s": train_s, "responses": record["responses"]}))


if __name__ == "__main__":
    main()
