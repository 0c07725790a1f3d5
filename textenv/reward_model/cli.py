"""The command line, ``python -m textenv.reward_model normalize ...`` (see ``textenv.reward_model.normalize``)."""

from __future__ import annotations

import argparse

import torch

from textenv.reward_model.normalize import normalize_reward_model


def _label_arg(text: str | None) -> int | str | None:
    """``--label`` as an index when it is an integer, else as a label name (None when not given)."""
    return None if text is None else int(text) if text.lstrip("-").isdigit() else text


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` (None: ``sys.argv[1:]``) and run the sub-command; ``normalize`` prints what it wrote."""
    parser = argparse.ArgumentParser(prog="python -m textenv.reward_model",
                                     description="Reward-model tools (see the textenv.reward_model docstring).")
    sub = parser.add_subparsers(dest="command", required=True)
    n = sub.add_parser("normalize", help="compute and save reward_mean / reward_std over the SFT model's samples")
    n.add_argument("--reward", required=True, help="the reward model's directory or Hub name")
    n.add_argument("--model", required=True, help="the SFT causal LM (directory or Hub name) PPO starts from")
    n.add_argument("--prompts", required=True,
                   help="training prompts: a .txt/.json/.jsonl/.csv/.parquet file, a save_to_disk folder or a Hub "
                        "dataset NAME[:SPLIT]")
    n.add_argument("--prompt-column", default=None, help="the prompts' column (default: prompt, query or text)")
    n.add_argument("--prompt-split", default=None, help="the split of a Hub dataset or a saved DatasetDict")
    n.add_argument("--label", default=None, help="the classifier logit that is the reward: an index or a label name")
    n.add_argument("--samples", type=int, default=1000, help="SFT completions to score")
    n.add_argument("--max-new-tokens", type=int, default=24, help="the env's response length limit")
    n.add_argument("--max-prompt-tokens", type=int, default=12,
                   help="the env's prompt budget: longer prompts keep their last tokens, as in the env")
    n.add_argument("--temperature", type=float, default=1.0)
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--device", default="auto")
    n.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (0: torch's default); 1 is fastest for small models on a busy CPU")
    n.add_argument("--out", default=None, help="where to write (default: the reward model's directory, config.json only)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from textenv.text.prompts import load_prompts

    prompts = load_prompts(args.prompts, column=args.prompt_column, split=args.prompt_split)
    stats = normalize_reward_model(args.reward, args.model, prompts, label=_label_arg(args.label),
                                   n_samples=args.samples, max_new_tokens=args.max_new_tokens,
                                   max_prompt_tokens=args.max_prompt_tokens, temperature=args.temperature,
                                   seed=args.seed, device=args.device, out=args.out)
    where = args.out or args.reward
    print(f"reward_mean {stats['reward_mean']:.6g}, reward_std {stats['reward_std']:.6g}"
          + (f" (label {stats['reward_label']})" if "reward_label" in stats else "")
          + f" over {args.samples} samples of {args.model}; written to {where}/config.json")
