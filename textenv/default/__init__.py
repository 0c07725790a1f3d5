"""The embedded default task: synthetic movie reviews, where the reward is positive sentiment.

Everything ships in ``artifacts/`` and is made offline by our own code (``python -m textenv.default.build``):
a word-level tokenizer, a tiny GPT-2 SFT model (PPO's starting policy and reference), preference pairs
ranked by a gold judge, and a reward model trained on them.

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from textenv import default

    policy = AutoModelForCausalLM.from_pretrained(default.sft_path())
    tokenizer = AutoTokenizer.from_pretrained(default.sft_path())   # prepends <|bos|> itself; pads left
    prompts = default.prompts("train")["prompt"]                    # "The thriller about a lonely detective was"
    default.gold_score(["The movie was"], [" great."])              # array([0.462])

Conventions: completions keep their leading space (" great."), so ``prompt + completion`` is the text;
the reward model reads it with right padding and its config carries ``reward_mean`` / ``reward_std``
(apply ``(raw - reward_mean) / reward_std``; see ``textenv.reward_model``). The gold judge
(``judge.py``) is the ground truth PPO should raise; the reward model is its learned proxy.

Importing this module is cheap: torch, transformers and datasets are imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path

from textenv.default.judge import gold_score

ARTIFACTS_DIR: Path = Path(__file__).resolve().parent / "artifacts"
"""Where the built default task lives (replaced as a whole by ``python -m textenv.default.build``)."""
SPLITS = ("train", "test")

__all__ = ["ARTIFACTS_DIR", "env_config", "sft_path", "reward_path", "prompts", "prompts_path", "gold_score", "preferences"]


def _artifact(name: str) -> Path:
    path = ARTIFACTS_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"the default task's artifact {path} is missing; expected it to ship with the "
                                f"package. Rebuild it with: python -m textenv.default.build")
    return path


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return split


def sft_path() -> Path:
    """Directory of the SFT model, loadable by ``AutoModelForCausalLM`` and ``AutoTokenizer``."""
    return _artifact("sft")


def reward_path() -> Path:
    """Directory of the reward model, loadable by ``AutoModelForSequenceClassification`` and ``AutoTokenizer``."""
    return _artifact("reward")


def prompts_path(split: str = "train") -> Path:
    """The jsonl file of the task's prompts (one ``{"prompt": ...}`` per line); any env's ``prompts=`` takes it.

    ``TextGen-v0`` reads this file rather than ``prompts()``: importing ``datasets`` would add ~0.5-1.4 s
    to ``gym.make`` (benchmarks/bench_make.py).
    """
    return _artifact(f"prompts_{_check_split(split)}.jsonl")


def env_config():
    """The TextGen-v0 task on the embedded artifacts: the ``TextGenConfig`` TextGen-v0 is registered with.

    Its other settings are TextGenConfig's defaults. The paths are not checked here (``import textenv`` calls
    this): a missing artifact is reported when an env loads it.
    """
    from textenv.text.config import TextGenConfig

    return TextGenConfig(model=str(ARTIFACTS_DIR / "sft"), reward=str(ARTIFACTS_DIR / "reward"),
                         prompts=str(ARTIFACTS_DIR / "prompts_train.jsonl"))


def prompts(split: str = "train"):
    """The task's prompts (review openings) as a ``datasets.Dataset`` with one column, "prompt" (str).

    The train and test splits share no prompt.
    """
    import json

    from datasets import Dataset

    with open(prompts_path(split), encoding="utf-8") as f:
        rows = [json.loads(line)["prompt"] for line in f if line.strip()]
    return Dataset.from_dict({"prompt": rows})


def preferences(split: str = "train"):
    """The shipped preference pairs: a ``datasets.Dataset`` with prompt, chosen, rejected, margin."""
    from textenv.preferences import load_preferences

    return load_preferences(_artifact(f"preferences_{_check_split(split)}.parquet"))
