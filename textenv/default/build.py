"""The deterministic recipe behind ``textenv/default/artifacts``.

    python -m textenv.default.build                 # the shipped default, into textenv/default/artifacts
    python -m textenv.default.build --tiny --out /tmp/tiny   # the same recipe at toy scale (seconds)

corpus -> tokenizer -> SFT model -> N samples per prompt -> gold-judge rankings -> N-choose-2 preference
pairs -> reward model (initialised from the SFT trunk) -> held-out evaluation -> normalisation
(``reward_mean`` / ``reward_std`` over fresh SFT samples) -> artifacts, written atomically.

Written under the output directory:

    sft/          GPT2LMHeadModel + tokenizer (AutoModelForCausalLM / AutoTokenizer .from_pretrained)
    reward/       GPT2ForSequenceClassification + tokenizer (AutoModelForSequenceClassification)
    prompts_{train,test}.jsonl           {"prompt": ...} per line
    preferences_{train,test}.parquet     prompt, chosen, rejected, margin
    build_summary.json                   the config and every figure the summary prints
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from textenv.default.corpus import CorpusConfig, generate_prompts, generate_reviews
from textenv.default.judge import judge_details
from textenv.default.sft import SFTConfig
from textenv.reward_model import RewardTrainConfig


@dataclass
class BuildConfig:
    """Everything the default task's artifacts depend on; the same config gives the same artifacts."""

    seed: int = 0
    """Seeds the corpus, the weights, the data order and every sample."""
    n_reviews: int = 20000
    """Reviews in the SFT corpus (the prompts are their openings)."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    """How reviews are drawn."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """SFT model size and training."""
    pref_prompts: dict[str, int] = field(default_factory=lambda: {"train": 2000, "test": 400})
    """Prompt draws per split for preference data (cycling through the split's prompts)."""
    samples_per_prompt: int = 4
    """N completions ranked per prompt: up to N*(N-1)/2 pairs each."""
    max_new_tokens: int = 48
    """Longest sampled completion, in tokens."""
    temperature: float = 1.0
    """Sampling temperature for every SFT sample (1.0: the model's own distribution)."""
    tie_tolerance: float = 1e-6
    """Gold scores closer than this are a tie, and the pair is dropped."""
    reward: RewardTrainConfig = field(default_factory=RewardTrainConfig)
    """Reward-model training."""
    n_eval_samples: int = 1000
    """Fresh samples on test prompts to measure the reward model's agreement with the gold judge."""
    n_norm_samples: int = 2000
    """Fresh samples on train prompts whose raw reward gives reward_mean / reward_std."""
    num_threads: int = 1
    """torch CPU threads. One thread gives the same numbers on any machine and does not fight other
    processes for cores (oversubscribed threads made training ~10x slower in our measurements)."""

    @classmethod
    def tiny(cls) -> "BuildConfig":
        """The whole recipe at toy scale, for tests: seconds, and quality is not the point."""
        return cls(
            n_reviews=400,
            sft=SFTConfig(n_layer=1, n_embd=32, n_head=2, steps=80, batch_size=16, lr=1e-2, warmup_steps=5),
            pref_prompts={"train": 24, "test": 8},
            max_new_tokens=24,
            reward=RewardTrainConfig(epochs=1, batch_size=16),
            n_eval_samples=32,
            n_norm_samples=32,
        )


def _draw(prompts: list[str], n: int, seed: int) -> list[str]:
    """``n`` prompts cycling through a seeded shuffle of ``prompts``: every prompt before any repeats."""
    if not prompts:
        raise ValueError("no prompts in this split; expected the corpus to yield at least one")
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        order = list(prompts)
        rng.shuffle(order)
        out += order
    return out[:n]


def _size(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _sample_and_judge(model, tok, prompts, cfg: BuildConfig, n: int, seed: int):
    """``n`` SFT samples per prompt and the gold judge's details of each.

    Returns:
        ``(groups, flat_prompts, flat_completions, details)``: the completions per prompt, the same
        flattened (one prompt per completion), and ``judge_details`` of the flat lists.
    """
    from textenv.default.sft import generate_completions

    groups = generate_completions(model, tok, prompts, n_per_prompt=n, max_new_tokens=cfg.max_new_tokens,
                                  temperature=cfg.temperature, seed=seed)
    flat_p = [p for p, g in zip(prompts, groups) for _ in g]
    flat_c = [c for g in groups for c in g]
    return groups, flat_p, flat_c, judge_details(flat_p, flat_c)


def build(config: BuildConfig, out_dir: str | Path, verbose: bool = True) -> dict:
    """Run the recipe and write the artifacts to ``out_dir`` (replaced atomically).

    Args:
        config: the recipe's settings; the same config gives the same artifacts.
        out_dir: where the artifacts go; an existing directory there is replaced as a whole.
        verbose: print each stage's figures and the final summary.

    Returns:
        The summary written to ``build_summary.json``: the config and every figure the summary prints.
    """
    say = print if verbose else (lambda *a, **k: None)
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_and_single_threaded(config.num_threads):
        t0 = time.perf_counter()
        summary: dict = {"config": dataclasses.asdict(config), "seconds": {}}
        with _staging_dir(out_dir) as tmp:
            # 1. corpus, prompts and tokenizer
            reviews, split_prompts, tok = _corpus_and_tokenizer(config, tmp, say)
            # 2. SFT
            sft = _train_sft_model(config, tok, reviews["text"], tmp, summary, say)
            # 3. preference pairs: N samples per prompt, ranked by the gold judge
            pairs = _preference_pairs(config, sft, tok, split_prompts, tmp, summary, say)
            # 4. reward model: trained, evaluated on held-out pairs and fresh samples, normalised
            fresh_prompts, fresh_completions = _reward_model(config, sft, tok, split_prompts, pairs, tmp, summary)
            summary["seconds"]["total"] = time.perf_counter() - t0
            # 5. the summary, then the swap into out_dir
            _write_summary(summary, tmp, fresh_prompts, fresh_completions)
            _publish(tmp, out_dir)
    _print_summary(summary, out_dir, say)
    return summary


@contextmanager
def _quiet_and_single_threaded(num_threads: int):
    """Run the block on ``num_threads`` torch threads without progress bars; restore both afterwards."""
    import torch
    from datasets.utils import logging as ds_logging
    from transformers.utils import logging as hf_logging

    threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    hf_logging.disable_progress_bar()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        hf_logging.enable_progress_bar()
        ds_logging.enable_progress_bar()


@contextmanager
def _staging_dir(out_dir: Path):
    """A fresh private directory next to ``out_dir`` to build in; removed if the block fails."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-building-", dir=out_dir.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _corpus_and_tokenizer(config: BuildConfig, tmp: Path, say) -> tuple:
    """Generate the reviews and the split prompts, write ``prompts_{split}.jsonl``, train the tokenizer.

    Returns:
        ``(reviews, split_prompts, tokenizer)``: the review dataset, ``{"train": [...], "test": [...]}``
        prompts, and the word-level tokenizer trained on the reviews.
    """
    from textenv.default.tokenizer import train_tokenizer

    reviews = generate_reviews(config.n_reviews, config.seed, config.corpus)
    split_prompts = generate_prompts(config.n_reviews, config.seed, config.corpus)
    for split, rows in split_prompts.items():
        with open(tmp / f"prompts_{split}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"prompt": p}) + "\n" for p in rows)
    tok = train_tokenizer(reviews["text"])
    say(f"corpus: {len(reviews)} reviews, {len(tok)} tokens in the vocabulary, "
        f"{len(split_prompts['train'])} train / {len(split_prompts['test'])} test prompts")
    return reviews, split_prompts, tok


def _train_sft_model(config: BuildConfig, tok, texts: list[str], tmp: Path, summary: dict, say):
    """Train the SFT model on ``texts`` and save it with the tokenizer under ``tmp/sft``.

    Records the training figures in ``summary["sft"]`` and the time in ``summary["seconds"]["sft"]``.

    Returns:
        The trained ``GPT2LMHeadModel``.
    """
    from textenv.default.sft import make_model, train_sft

    t = time.perf_counter()
    sft = make_model(config.sft, tok)
    summary["sft"] = train_sft(sft, tok, texts, config.sft)
    summary["sft"]["parameters"] = sum(p.numel() for p in sft.parameters())
    summary["seconds"]["sft"] = time.perf_counter() - t
    sft.generation_config.pad_token_id = tok.pad_token_id
    sft.save_pretrained(tmp / "sft")
    tok.save_pretrained(tmp / "sft")
    say(f"sft: {summary['sft']['parameters']:,} parameters, loss {summary['sft']['loss_first']:.3f} -> "
        f"{summary['sft']['loss_last']:.3f} in {summary['seconds']['sft']:.0f} s")
    return sft


def _preference_pairs(config: BuildConfig, sft, tok, split_prompts: dict, tmp: Path, summary: dict, say) -> dict:
    """Rank ``config.samples_per_prompt`` SFT samples per drawn prompt by the gold judge, per split.

    Writes ``preferences_{split}.parquet``; records the mean judge details of the samples in
    ``summary["samples"]``, the pair counts in ``summary["pairs"]`` and the time.

    Returns:
        ``{"train": pairs, "test": pairs}``, the preference datasets.
    """
    from textenv.preferences import build_preferences

    t = time.perf_counter()
    pairs, sample_stats = {}, {}
    for k, split in enumerate(("train", "test")):
        drawn = _draw(split_prompts[split], config.pref_prompts[split], config.seed + k)
        groups, _, _, det = _sample_and_judge(sft, tok, drawn, config, config.samples_per_prompt,
                                              config.seed + 100 + k)
        gold = det["gold"].reshape(len(drawn), config.samples_per_prompt)
        pairs[split] = build_preferences(drawn, groups, gold.tolist(), config.tie_tolerance)
        pairs[split].to_parquet(str(tmp / f"preferences_{split}.parquet"))
        sample_stats[split] = {name: float(values.mean()) for name, values in det.items()}
    summary["samples"] = sample_stats
    summary["pairs"] = {s: len(p) for s, p in pairs.items()}
    summary["seconds"]["preferences"] = time.perf_counter() - t
    say(f"preferences: {summary['pairs']} pairs; SFT samples (train prompts): mean gold "
        f"{sample_stats['train']['gold']:.3f}, fluency {sample_stats['train']['fluency']:.3f}, "
        f"sentiment {sample_stats['train']['sentiment']:.3f}")
    return pairs


def _reward_model(config: BuildConfig, sft, tok, split_prompts: dict, pairs: dict, tmp: Path,
                  summary: dict) -> tuple[list[str], list[str]]:
    """Train the reward model, evaluate it, normalise it, and save it under ``tmp/reward``.

    The recipe is ``textenv.reward_model.build_reward_model`` (the example's ``--train-reward-model`` runs
    it too): evaluated on the held-out pairs and on fresh samples of test prompts, then normalised on fresh
    samples of train prompts. Records its figures in ``summary["reward"]`` and the training and evaluation
    times in ``summary["seconds"]``.

    Returns:
        ``(prompts, completions)`` of the fresh test-prompt samples the evaluation drew.
    """
    from textenv.reward_model import build_reward_model, evaluate_reward_model, save_reward_model

    t = time.perf_counter()
    fresh: dict = {}

    def held_out(rm) -> dict:
        now = time.perf_counter()
        summary["seconds"]["reward"] = now - t
        fresh["t"] = now
        drawn = _draw(split_prompts["test"], config.n_eval_samples, config.seed + 2)
        _, fresh["p"], fresh["c"], det = _sample_and_judge(sft, tok, drawn, config, 1, config.seed + 200)
        return evaluate_reward_model(rm, tok, pairs["test"], fresh["p"], fresh["c"], det["gold"])

    norm_prompts = _draw(split_prompts["train"], config.n_norm_samples, config.seed + 3)
    rm, summary["reward"] = build_reward_model(
        sft, tok, pairs["train"], norm_prompts, config.reward, seed=config.seed, norm_seed=config.seed + 300,
        max_new_tokens=config.max_new_tokens, temperature=config.temperature, evaluate_fn=held_out)
    save_reward_model(rm, tok, tmp / "reward")
    summary["seconds"]["evaluation"] = time.perf_counter() - fresh["t"]
    return fresh["p"], fresh["c"]


def _write_summary(summary: dict, tmp: Path, fresh_prompts: list[str], fresh_completions: list[str]) -> None:
    """Add the artifacts' sizes and a few SFT samples to ``summary`` and write ``tmp/build_summary.json``."""
    summary["sizes_bytes"] = {p.name: _size(p) if p.is_dir() else p.stat().st_size for p in sorted(tmp.iterdir())}
    summary["sft_examples"] = [fresh_prompts[i] + fresh_completions[i] for i in range(min(8, len(fresh_prompts)))]
    with open(tmp / "build_summary.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, default=float)


def _publish(tmp: Path, out_dir: Path) -> None:
    """Make ``tmp`` readable by all and swap it in as ``out_dir``, atomically.

    A reader sees the old artifacts or the new, never half of each.
    """
    # mkdtemp makes a private (0700) directory and safetensors files are 0600; the package ships these
    for path in [tmp, *tmp.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-old-", dir=out_dir.parent))
        os.replace(out_dir, old / out_dir.name)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old)


def _print_summary(s: dict, out_dir: Path, say) -> None:
    r = s["reward"]
    say("\n== default task build summary ==")
    say(f"SFT model:     {s['sft']['parameters']:,} parameters, final train loss {s['sft']['loss_last']:.3f}")
    say(f"reward model:  {r['parameters']:,} parameters, train loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}")
    say(f"held-out pairwise accuracy:  {r['pairwise_accuracy']:.3f}  ({s['pairs']['test']} test pairs, "
        f"{s['pairs']['train']} train pairs)")
    say(f"agreement with the gold judge on fresh samples: spearman {r['spearman']:.3f}, "
        f"sign agreement {r['sign_agreement']:.3f}")
    say(f"normalisation: reward_mean {r['reward_mean']:.4f}, reward_std {r['reward_std']:.4f}")
    sizes = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in s["sizes_bytes"].items())
    say(f"on disk ({out_dir}): {sum(s['sizes_bytes'].values()) / 1e6:.2f} MB: {sizes}")
    say("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in s["seconds"].items()))
    say("SFT samples:\n  " + "\n  ".join(s["sft_examples"]))


def main(argv: list[str] | None = None) -> None:
    from textenv.default import ARTIFACTS_DIR

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ARTIFACTS_DIR, help="output directory (replaced)")
    parser.add_argument("--tiny", action="store_true", help="the toy-scale preset (for tests)")
    args = parser.parse_args(argv)
    build(BuildConfig.tiny() if args.tiny else BuildConfig(), args.out)


if __name__ == "__main__":
    main()
