"""The embedded default task: corpus, tokenizer, gold judge, the shipped artifacts and the build recipe."""

import json
import subprocess
import sys

import numpy as np
import pytest

from textenv import default
from textenv.default.corpus import (NEGATIVE_WORDS, POSITIVE_WORDS, generate_prompts, generate_reviews,
                                    sentiment_of)
from textenv.default.judge import fluency, judge_details
from textenv.default.tokenizer import train_tokenizer


# ---- corpus --------------------------------------------------------------------------------------------


def test_corpus_is_deterministic_and_seeded():
    a, b = generate_reviews(200, seed=3), generate_reviews(200, seed=3)
    assert a["text"] == b["text"] and a["label"] == b["label"]
    assert generate_reviews(200, seed=4)["text"] != a["text"]
    assert generate_prompts(500, seed=3) == generate_prompts(500, seed=3)


def test_reviews_are_short_well_formed_and_varied():
    reviews = generate_reviews(500, seed=0)
    assert reviews.column_names == ["text", "label", "sentiment"]
    for text, label, score in zip(reviews["text"], reviews["label"], reviews["sentiment"]):
        assert text.endswith(".") and 1 <= text.count(".") <= 3
        assert fluency(text) == 1.0  # the judge's grammar is the generator's grammar
        assert score == sentiment_of(text)
        assert label == ("positive" if score > 0 else "negative" if score < 0 else "neutral")
    counts = {k: reviews["label"].count(k) for k in ("positive", "negative", "neutral")}
    assert min(counts.values()) > 50, counts


def test_prompts_split_cleanly_and_leave_the_sentiment_open():
    splits = generate_prompts(2000, seed=0)
    assert len(splits["train"]) > 2 * len(splits["test"]) > 0  # about 80% / 20%
    assert not set(splits["train"]) & set(splits["test"])
    for prompt in splits["train"] + splits["test"]:
        words = set(prompt.lower().split())
        assert prompt and not words & (POSITIVE_WORDS | NEGATIVE_WORDS) and not prompt.endswith(".")


# ---- tokenizer -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(generate_reviews(1000, seed=0)["text"])


def test_tokenizer_special_tokens(tokenizer):
    ids = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id}
    assert len(ids) == 4 and None not in ids
    assert len(tokenizer) < 400  # word level: a small vocabulary
    enc = tokenizer("The movie was great.")["input_ids"]
    assert enc[0] == tokenizer.bos_token_id and tokenizer.unk_token_id not in enc
    assert tokenizer.padding_side == "left"


def test_tokenizer_round_trip(tokenizer):
    for text in generate_reviews(100, seed=7)["text"]:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    # A completion decodes with its leading space, so prompt + completion is the text.
    prompt_ids = tokenizer("The movie was")["input_ids"]
    full = tokenizer("The movie was great. I loved it.")["input_ids"]
    completion = tokenizer.decode(full[len(prompt_ids):], skip_special_tokens=True)
    assert completion == " great. I loved it."
    assert tokenizer("The movie was" + " " + completion)["input_ids"] == full


# ---- gold judge ----------------------------------------------------------------------------------------


def test_judge_prefers_positive_fluent_reviews():
    prompts = ["The movie was"] * 4
    completions = [" great. I loved it.", " great.", " quiet.", " awful. I hated it."]
    gold = default.gold_score(prompts, completions)
    assert gold.dtype == np.float64 and gold.shape == (4,)
    assert gold[0] > gold[1] > gold[2] > gold[3]
    assert gold[1] == pytest.approx(np.tanh(0.5))  # one positive word, fully fluent
    assert gold[2] == 0.0


def test_judge_punishes_degenerate_text():
    prompts = ["The movie was"] * 5
    completions = [" great great great great", " great. great. great.",
                   " great. The movie was great. The movie was great.", " great. The acting was", ""]
    details = judge_details(prompts, completions)
    assert details["fluency"][0] == 0.0  # repetition is not a sentence of the grammar
    assert details["fluency"][1] < 0.5 and details["fluency"][2] < 0.5  # repeated sentences
    assert details["fluency"][3] == 0.5  # an unfinished second sentence
    assert details["fluency"][4] == 0.0  # "The movie was" is no sentence
    # Every degenerate "positive" text scores below a plain fluent negative review.
    fluent_negative = default.gold_score(["The movie was"], [" awful."])[0]
    assert (details["gold"] < fluent_negative).all()


def test_judge_checks_lengths():
    with pytest.raises(ValueError, match="one completion per prompt"):
        default.gold_score(["a", "b"], ["c"])


# ---- the shipped artifacts ------------------------------------------------------------------------------


def test_import_is_cheap():
    code = "import sys, textenv.default; print(any(m in sys.modules for m in ('torch', 'transformers')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_shipped_artifacts_load_through_the_api():
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    policy = AutoModelForCausalLM.from_pretrained(default.sft_path())
    tok = AutoTokenizer.from_pretrained(default.sft_path())
    rm = AutoModelForSequenceClassification.from_pretrained(default.reward_path())
    rm_tok = AutoTokenizer.from_pretrained(default.reward_path())
    train, test = default.prompts("train"), default.prompts("test")
    pairs = default.preferences("train")
    assert policy.config.vocab_size == len(tok) and rm.config.num_labels == 1
    assert rm.config.pad_token_id == rm_tok.pad_token_id != rm_tok.eos_token_id
    assert rm_tok.padding_side == "right" and tok.padding_side == "left"
    assert isinstance(rm.config.reward_mean, float) and rm.config.reward_std > 0
    assert train.column_names == ["prompt"] and len(train) > 500 and len(test) > 100
    assert not set(train["prompt"]) & set(test["prompt"])
    assert {"prompt", "chosen", "rejected", "margin"} <= set(pairs.column_names) and len(pairs) > 1000
    assert min(pairs["margin"]) > 0
    with pytest.raises(ValueError, match="expected one of train, test"):
        default.prompts("valid")
    sizes = sum(f.stat().st_size for f in default.ARTIFACTS_DIR.rglob("*") if f.is_file())
    assert sizes < 20e6


def test_shipped_sft_samples_are_fluent_and_varied():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from textenv.default.sft import generate_completions

    policy = AutoModelForCausalLM.from_pretrained(default.sft_path())
    tok = AutoTokenizer.from_pretrained(default.sft_path())
    prompts = default.prompts("test")["prompt"][:64]
    completions = [c for (c,) in generate_completions(policy, tok, prompts, 1, seed=1)]
    details = judge_details(prompts, completions)
    assert details["fluency"].mean() > 0.9
    # Room to improve: the SFT model writes negative reviews as often as glowing ones.
    assert (details["sentiment"] > 0).mean() > 0.25 and (details["sentiment"] < 0).mean() > 0.25


def test_shipped_reward_model_ranks_the_shipped_test_pairs_as_the_summary_says():
    """The shipped reward model, scored afresh on every shipped test pair (about 7 s on one CPU core)."""
    from textenv.reward_model import load_reward_model, pairwise_accuracy

    rm, rm_tok = load_reward_model(default.reward_path())
    pairs = default.preferences("test")
    accuracy = pairwise_accuracy(rm, rm_tok, pairs)
    assert accuracy >= 0.9
    summary = json.loads((default.ARTIFACTS_DIR / "build_summary.json").read_text())
    assert summary["pairs"]["test"] == len(pairs)
    # Within one pair: another machine's float rounding may flip a near-tie.
    assert accuracy == pytest.approx(summary["reward"]["pairwise_accuracy"], abs=1 / len(pairs))


# ---- the recipe ----------------------------------------------------------------------------------------


def test_tiny_build_writes_loadable_artifacts(tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from textenv.default.build import BuildConfig, build
    from textenv.preferences import load_preferences
    from textenv.reward_model import pairwise_accuracy

    out = tmp_path / "artifacts"
    out.mkdir()
    (out / "stale.txt").write_text("replaced as a whole")
    summary = build(BuildConfig.tiny(), out, verbose=False)
    assert not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["artifacts"]  # no temporary directories left over
    AutoModelForCausalLM.from_pretrained(out / "sft")
    AutoTokenizer.from_pretrained(out / "sft")
    rm = AutoModelForSequenceClassification.from_pretrained(out / "reward").eval()
    rm_tok = AutoTokenizer.from_pretrained(out / "reward")
    assert rm.config.reward_mean == pytest.approx(summary["reward"]["reward_mean"])
    for name in ("prompts_train.jsonl", "prompts_test.jsonl", "preferences_train.parquet",
                 "preferences_test.parquet", "build_summary.json"):
        assert (out / name).is_file()
    assert json.loads((out / "build_summary.json").read_text())["pairs"] == summary["pairs"]
    # The figures describe what was saved: the saved model, scored on the saved test pairs, gives the
    # recorded accuracy. (The tiny build's reward model barely trains, so its accuracy itself proves nothing.)
    test_pairs = load_preferences(out / "preferences_test.parquet")
    assert len(test_pairs) == summary["pairs"]["test"] > 0
    assert pairwise_accuracy(rm, rm_tok, test_pairs) == pytest.approx(summary["reward"]["pairwise_accuracy"])
