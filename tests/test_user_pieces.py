"""The user's own pieces: prompts from any source and column, a held-out split, the reward label, a judge, and
the main job's lecture recipe end to end on offline stand-ins of gpt2, lvwerra/distilbert-imdb and IMDB."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset, DatasetDict

import standins
from text_fixtures import *  # noqa: F401,F403  (fixtures: lm_dir, rm_dir)
from text_fixtures import PROMPTS
from textenv.text.config import TextGenConfig
from textenv.text.prompts import load_prompts, prompt_prefixes, split_prompts
from textenv.text.vector import TextGenVectorEnv

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "rlhf_ppo.py"


def python_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("rlhf_ppo_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def standin_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    return {"gpt2": standins.save_gpt2(root / "gpt2"), "distilbert": standins.save_distilbert(root / "distilbert-imdb"),
            "imdb": standins.save_imdb(root / "imdb")}


# ---------------------------------------------------------------------------------------------- prompt sources
def test_prompts_from_every_format_and_the_default_columns(tmp_path):
    texts = ["the movie was", "i loved this film", "the acting"]
    for column in ("prompt", "query", "text"):
        (tmp_path / f"{column}.jsonl").write_text("".join(json.dumps({column: t, "id": i}) + "\n" for i, t in enumerate(texts)))
        pd.DataFrame({"id": range(3), column: texts}).to_csv(tmp_path / f"{column}.csv", index=False)
        pd.DataFrame({column: texts}).to_parquet(tmp_path / f"{column}.parquet")
        Dataset.from_dict({column: texts, "label": [0, 1, 0]}).save_to_disk(str(tmp_path / f"{column}_ds"))
        for suffix in (".jsonl", ".csv", ".parquet", "_ds"):
            assert load_prompts(tmp_path / f"{column}{suffix}") == texts, (column, suffix)
    (tmp_path / "p.txt").write_text("\n".join(texts) + "\n\n")
    (tmp_path / "p.json").write_text(json.dumps([{"query": t} for t in texts]))
    assert load_prompts(str(tmp_path / "p.txt")) == load_prompts(tmp_path / "p.json") == texts
    # "prompt" wins over "query", and "query" over "text"
    both = Dataset.from_dict({"text": ["x"] * 3, "query": texts})
    assert load_prompts(both) == texts and load_prompts(both, column="text") == ["x"] * 3


def test_a_named_column_and_split(tmp_path):
    DatasetDict({"train": Dataset.from_dict({"review": ["a good one", "a bad one"]}),
                 "test": Dataset.from_dict({"review": ["held out"]})}).save_to_disk(str(tmp_path / "dd"))
    assert load_prompts(tmp_path / "dd", column="review") == ["a good one", "a bad one"]
    assert load_prompts(tmp_path / "dd", column="review", split="test") == ["held out"]
    with pytest.raises(ValueError, match=r"has none of the columns 'prompt', 'query', 'text' .*\['review'\].*--prompt-column"):
        load_prompts(tmp_path / "dd")
    with pytest.raises(ValueError, match=r"has no split 'valid'; its splits are \['train', 'test'\]"):
        load_prompts(tmp_path / "dd", column="review", split="valid")
    with pytest.raises(ValueError, match="has no column 'title'"):
        load_prompts(tmp_path / "dd", column="title")
    (tmp_path / "p.txt").write_text("one\ntwo\n")
    with pytest.raises(ValueError, match="is a .txt file: one prompt per line"):
        load_prompts(tmp_path / "p.txt", column="review")


def test_a_hub_dataset_offline_is_a_clear_error():
    code = "from textenv.text.prompts import load_prompts; load_prompts('stanfordnlp/imdb:train')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**python_env(), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ConnectionError: could not load the prompts from the Hugging Face Hub dataset "
                           "'stanfordnlp/imdb' (split 'train'; there is no local file or folder of that name)"), proc.stderr
    assert "save_to_disk(FOLDER)) and pass that folder" in last
    # a missing local file is still a missing file, not a Hub name
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prompts("no/such/prompts.jsonl")
    with pytest.raises(ValueError, match="name the split 'train' but prompt_split='test'"):
        load_prompts("stanfordnlp/imdb:train", split="test")


def test_held_out_split_is_fixed_and_disjoint():
    prompts = [f"prompt {i}" for i in range(50)] + ["prompt 3"] * 5  # a repeated prompt is on one side only
    train, held = split_prompts(prompts, 10, seed=0)
    assert len(held) == 10 and not set(train) & set(held) and set(train) | set(held) == set(prompts)
    assert split_prompts(prompts, 10, seed=0) == (train, held)
    assert split_prompts(prompts, 10, seed=1)[1] != held
    with pytest.raises(ValueError, match="cannot hold out 50 of 50 distinct prompts"):
        split_prompts(prompts, 50)


def test_prompt_prefixes_are_2_to_7_tokens_like_trls_length_sampler(standin_dirs):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(standin_dirs["gpt2"])
    texts = standins.reviews(200)
    cut = prompt_prefixes(texts, tok, 2, 8, seed=0)
    lengths = [len(tok(p)["input_ids"]) for p in cut]
    assert set(lengths) == set(range(2, 8))  # LengthSampler(2, 8): range(2, 8)
    assert all(t.startswith(p) for p, t in zip(cut, texts))
    assert prompt_prefixes(texts, tok, 2, 8, seed=0) == cut


# ---------------------------------------------------------------------------------------------- the config
def test_text_gen_config_takes_the_reward_label_and_a_prompt_column(tmp_path, lm_dir):
    rm_dir = standins.save_distilbert(tmp_path / "rm")
    pd.DataFrame({"question": PROMPTS}).to_csv(tmp_path / "q.csv", index=False)
    cfg = TextGenConfig(model=str(lm_dir), reward=str(rm_dir), reward_label="POSITIVE", prompts=tmp_path / "q.csv",
                        prompt_column="question", max_new_tokens=3, max_prompt_tokens=6, device="cpu")
    env = TextGenVectorEnv(2, cfg)
    assert env.reward_fn.fn.label == 1 and env.core.prompts == PROMPTS
    with pytest.raises(ValueError, match="has 2 labels; pass label="):
        TextGenVectorEnv(2, cfg, reward_label=None)
    with pytest.raises(ValueError, match="question"):  # the column must exist
        TextGenVectorEnv(2, cfg, prompt_column="answer")


# ---------------------------------------------------------------------------------------------- the main job
def test_user_prompts_hold_an_evaluation_split_out_of_training(example, tmp_path, lm_dir, rm_dir):
    prompts = [f"the movie was {w}" for w in ("good", "bad", "fine", "great", "awful", "boring", "dull", "fun",
                                                "lovely", "not good")]
    (tmp_path / "p.txt").write_text("\n".join(prompts))
    args = example.parse_args(["--model", str(lm_dir), "--reward", str(rm_dir), "--prompts", str(tmp_path / "p.txt")])
    train, held = example.prompt_sets(args, args.model)
    assert len(held) == 2 and len(train) == 8 and not set(train) & set(held)  # a fifth held out
    assert example.prompt_sets(args, args.model) == (train, held)  # the same split every time
    env_prompts = example.make_config(args, 0, args.reward, train).env.prompts
    assert env_prompts == train  # what the training env draws from: never a held-out prompt

    # an evaluation file: all prompts train; evaluation prompts that are also training prompts are dropped
    (tmp_path / "e.txt").write_text("the movie was good\nthe acting was fun\n")
    args = example.parse_args(["--model", str(lm_dir), "--prompts", str(tmp_path / "p.txt"),
                               "--eval-prompts-file", str(tmp_path / "e.txt")])
    assert example.prompt_sets(args, args.model) == (prompts, ["the acting was fun"])


def test_the_table_omits_a_missing_gold_column(example):
    row = {"gold_score": np.full(3, np.nan), "rm_score": np.array([0.1, 0.2, 0.3]), "kl": np.zeros(3),
           "tokens": np.ones(3)}
    text = example.table([("SFT (reference)", row)], gold=False)
    assert "nan" not in text and "gold score" not in text
    assert "no gold judge: gold column omitted" in text
    assert "gold score" in example.table([("SFT", {**row, "gold_score": np.zeros(3)})], gold=True)


def test_main_job_with_a_judge_function(example, tmp_path, lm_dir, rm_dir, capsys):
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"query": p + " " + w}) + "\n"
                                              for p in PROMPTS for w in ("good", "bad")))
    example.main(["--model", str(lm_dir), "--reward", str(rm_dir), "--prompts", str(tmp_path / "p.jsonl"),
                  "--judge", "text_fixtures:length_reward", "--num-envs", "2", "--max-new-tokens", "3",
                  "--max-prompt-tokens", "6", "--responses", "4", "--epochs", "1", "--minibatches", "1",
                  "--log-every", "1", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "gold score" in out and "nan" not in out and "no gold judge" not in out
    run = json.loads((tmp_path / "out" / "summary.json").read_text())["runs"][0]
    assert run["gold_after"] == pytest.approx(run["gold"]) and run["responses"] == 4


@pytest.mark.timeout(600)
def test_lecture_recipe_end_to_end_on_standins(standin_dirs, tmp_path):
    """``--recipe lecture`` with its Hub names overridden by local stand-ins of the same architectures and
    tokenizers (GPT-2 BPE, a 2-label DistilBERT with WordPiece, an IMDB-shaped DatasetDict with a text column)."""
    out = tmp_path / "out"
    args = [sys.executable, str(EXAMPLE), "--recipe", "lecture", "--model", str(standin_dirs["gpt2"]),
            "--reward", str(standin_dirs["distilbert"]), "--prompts", str(standin_dirs["imdb"]),
            "--num-envs", "2", "--max-new-tokens", "4", "--responses", "4", "--eval-prompts", "3",
            "--log-every", "1", "--out", str(out)]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=python_env(), timeout=540)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no gold judge: gold column omitted" in proc.stdout
    report = proc.stdout[proc.stdout.index("SFT model on"):]
    report = "\n".join(line for line in report.splitlines() if not line.startswith("iter"))  # (the loop's own lines)
    assert "nan" not in report.lower(), report
    assert "3 of the" in proc.stdout and "held out of training" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    run = summary["runs"][0]
    assert summary["gold_judge"] is False and run["gold"] is None and np.isfinite(run["rm"])
    assert run["responses"] == 4 and (out / "seed0" / "progress.csv").exists()
    # the recipe's settings that were not overridden: TRL's PPO, the positive logit, 8-token prompts
    from agents.checkpoint import load_checkpoint
    from agents.rlhf import CHECKPOINT_FORMAT

    settings = load_checkpoint(out / "seed0" / "checkpoint.pt", CHECKPOINT_FORMAT)["settings"]
    assert settings["env.reward_label"] == 1 and settings["env.max_prompt_tokens"] == 8
    assert settings["ppo.learning_rate"] == 1.41e-5 and settings["env.kl_coef"] == 0.2
    assert settings["ppo.n_minibatches"] == 1 and settings["kl.target"] == 6.0
