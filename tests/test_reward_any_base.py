"""Reward models on any sequence-classification base, read by one scoring function in training, evaluation and
the env: a Llama trunk without a pad token, a DistilBERT classifier whose tokenizer truncates at 12 tokens,
the normalisation of any reward model, and the default task's numbers kept."""

import json
import shutil

import numpy as np
import pytest
import torch
from datasets import Dataset

import standins
from text_fixtures import save_lm
from textenv import default, reward_model as rmod
from textenv.text.rewards import make_reward_fn
from textenv.text.vector import TextGenVectorEnv

PAIRS = Dataset.from_dict({
    "prompt": ["The movie was", "I watched this film", "The acting was", "The plot"] * 4,
    "chosen": [" great and lovely.", " and loved it.", " superb.", " was brilliant fun."] * 4,
    "rejected": [" awful.", " and hated it, it was dull and painful.", " weak.", " was boring."] * 4,
})


@pytest.fixture(scope="module")
def llama():
    tok = standins.llama_tokenizer()
    return standins.make_llama(tok), tok


def test_init_reward_model_takes_a_llama_trunk_without_a_pad_token(llama):
    lm, tok = llama
    assert tok.pad_token_id is None
    rm = rmod.init_reward_model(lm, tok)
    assert type(rm).__name__ == "LlamaForSequenceClassification"
    assert rm.config.num_labels == 1 and rm.config.pad_token_id == tok.eos_token_id  # padded with eos, on the right
    torch.testing.assert_close(rm.model.embed_tokens.weight, lm.model.embed_tokens.weight)
    assert tok.pad_token_id is None  # the caller's tokenizer is left as it was


def test_a_llama_reward_model_trains_and_reads_the_last_real_token(llama, tmp_path):
    lm, tok = llama
    torch.manual_seed(0)
    rm = rmod.init_reward_model(lm, tok)
    stats = rmod.train_reward_model(rm, tok, PAIRS, rmod.RewardTrainConfig(epochs=12, batch_size=4, lr=3e-3))
    assert stats["loss_last"] < stats["loss_first"]
    prompts, completions = list(PAIRS["prompt"][:4]), list(PAIRS["rejected"][:4])  # of different lengths
    batched = rmod.score_texts(rm, tok, prompts, completions)  # right-padded with eos
    alone = [rmod.score_texts(rm, tok, [p], [c])[0] for p, c in zip(prompts, completions)]
    np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-5)
    assert np.ptp(batched) > 1e-2  # the texts score differently: reading a wrong token would show
    ids, mask = rmod.reward_inputs(rm, tok, prompts, completions)
    assert (ids[mask == 0] == tok.eos_token_id).all() and (mask[:, 0] == 1).all()  # right-padded with eos

    # saved, loaded by path and served by the env's reward: the same scores
    rmod.set_normalization(rm, rmod.score_texts(rm, tok, PAIRS["prompt"], PAIRS["chosen"]))
    rmod.save_reward_model(rm, tok, tmp_path / "rm")
    served = make_reward_fn(tmp_path / "rm")(prompts, completions)
    np.testing.assert_allclose(served, rmod.normalize_scores(batched, rm.config), rtol=1e-5, atol=1e-5)


def test_env_score_equals_reward_model_scoring_when_the_tokenizer_truncates(tmp_path):
    """A DistilBERT classifier whose tokenizer stops at 12 tokens (its model reads 64): the env's rm_score of each
    finished response is score_texts of the same (prompt, completion), which keeps the END of a long text."""
    rm_dir = standins.save_distilbert(tmp_path / "rm", model_max_length=12)
    lm_dir = standins.save_gpt2(tmp_path / "lm")
    prompts = ["I watched this movie yesterday. The film was wonderful and superb.",
               "The ending was awful and painful, the plot weak and the acting dull."]
    env = TextGenVectorEnv(4, model=str(lm_dir), reward=str(rm_dir), reward_label="POSITIVE", prompts=prompts,
                           max_new_tokens=6, max_prompt_tokens=24, stop_at_eos=False, device="cpu")
    env.reset(seed=0)
    gen = np.random.default_rng(0)
    info = None
    for _ in range(6):
        _, _, _, _, info = env.step(gen.integers(0, 300, size=4))
    fin = info["final_info"]
    got_p, got_c, env_scores = list(fin["prompt"]), list(fin["completion"]), fin["rm_score"]

    model, tok = rmod.load_reward_model(rm_dir)
    assert all(len(tok(p + c)["input_ids"]) > 12 for p, c in zip(got_p, got_c))  # every text is cut
    expected = rmod.score_texts(model, tok, got_p, got_c, label=1)
    np.testing.assert_allclose(env_scores, expected, rtol=1e-5, atol=1e-5)
    # and the cut keeps the end: the first 12 tokens (the tokenizer's own default side) score otherwise
    head = tok([p + c for p, c in zip(got_p, got_c)], truncation=True, max_length=12, padding=True, return_tensors="pt")
    with torch.no_grad():
        head_scores = model(**head).logits[:, 1].double().numpy()
    assert np.ptp(expected) > 1e-2 and np.abs(head_scores - expected).max() > 1e-2


def test_the_join_is_verbatim_so_a_continued_word_stays_one_word(tmp_path):
    """TextGen-v0 hands the reward the exact continuation of the prompt's text: a policy that finishes a word the
    prompt cut ("CUR" + "IOUSLY") must be read as "CURIOUSLY", not "CUR IOUSLY"."""
    assert rmod.reward_text("I AM CUR", "IOUSLY") == "I AM CURIOUSLY"
    assert rmod.reward_text("The movie was", " great.\n\nReally.") == "The movie was great.\n\nReally."
    model, tok = standins.make_distilbert(standins.wordpiece_tokenizer()), standins.wordpiece_tokenizer()
    whole = rmod.score_texts(model, tok, ["I watched this"], [" CURIOUSLY."])
    np.testing.assert_allclose(rmod.score_texts(model, tok, ["I watched this CURIOUS"], ["LY."]), whole, atol=1e-6)


def test_normalize_any_reward_model_from_the_command_line(tmp_path):
    """``python -m textenv.reward_model normalize``: over the SFT model's own samples, as TextGen-v0 makes them,
    the reward (label 1 of a 2-label classifier) then has mean 0 and std 1, and the env uses that label."""
    rm_dir = standins.save_distilbert(tmp_path / "rm")
    lm_dir = standins.save_gpt2(tmp_path / "lm")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"query": t[:60]}) + "\n" for t in standins.reviews(12)))
    weights = (rm_dir / "model.safetensors").read_bytes()
    rmod.main(["normalize", "--reward", str(rm_dir), "--model", str(lm_dir), "--prompts", str(prompts),
               "--label", "POSITIVE", "--samples", "10", "--max-new-tokens", "5", "--max-prompt-tokens", "24",
               "--seed", "4", "--device", "cpu"])
    config = json.loads((rm_dir / "config.json").read_text())
    assert config["reward_label"] == 1 and config["reward_std"] > 0
    assert (rm_dir / "model.safetensors").read_bytes() == weights  # only config.json changed

    p, c = rmod.sample_completions(str(lm_dir), [json.loads(line)["query"] for line in prompts.read_text().splitlines()],
                                   10, max_new_tokens=5, max_prompt_tokens=24, seed=4, device="cpu")
    scores = make_reward_fn(rm_dir)(p, c)  # no label given: the one it was normalised for
    assert abs(scores.mean()) < 1e-4 and abs(scores.std() - 1.0) < 1e-4
    with pytest.raises(ValueError, match="describe label 1, not label 0"):
        make_reward_fn(rm_dir, label=0)
    assert np.isfinite(make_reward_fn(rm_dir, label=0, normalize=False)(p, c)).all()


def test_normalize_a_one_label_reward_model_in_python(tmp_path):
    from text_fixtures import PROMPTS, save_rm

    rm_dir, lm_dir = save_rm(tmp_path / "rm"), save_lm(tmp_path / "lm")
    out = tmp_path / "normalised"
    stats = rmod.normalize_reward_model(str(rm_dir), str(lm_dir), PROMPTS, n_samples=6, max_new_tokens=4,
                                        max_prompt_tokens=6, device="cpu", out=out)
    assert set(stats) == {"reward_mean", "reward_std"}  # a one-label model: no reward_label
    assert json.loads((out / "config.json").read_text())["reward_mean"] == stats["reward_mean"]
    assert "reward_mean" not in json.loads((rm_dir / "config.json").read_text())  # out= leaves the source alone


def test_default_reward_model_scores_are_the_same_in_the_env_and_in_training():
    """The embedded task keeps its numbers: the env's reward and score_texts agree on env rollouts and on the
    shipped pairs (the default tokenizer, 64 positions and 64 tokens: nothing is cut)."""
    rm, tok = rmod.load_reward_model(default.reward_path())
    env = TextGenVectorEnv(8, device="cpu", max_new_tokens=8)
    env.reset(seed=3)
    gen = np.random.default_rng(1)
    prompts, completions, env_scores = [], [], []
    for _ in range(8):
        _, _, term, trunc, info = env.step(gen.integers(3, 190, size=8))
        if "final_info" in info:
            rows = np.flatnonzero(info["_final_info"])
            prompts += [info["final_info"]["prompt"][i] for i in rows]
            completions += [info["final_info"]["completion"][i] for i in rows]
            env_scores += list(info["final_info"]["rm_score"][rows])
    assert len(env_scores) >= 8
    expected = rmod.normalize_scores(rmod.score_texts(rm, tok, prompts, completions), rm.config)
    np.testing.assert_allclose(env_scores, expected, rtol=1e-5, atol=1e-5)
    test = default.preferences("test").select(range(64))
    served = make_reward_fn(default.reward_path())(test["prompt"], test["chosen"])
    trained = rmod.normalize_scores(rmod.score_texts(rm, tok, test["prompt"], test["chosen"]), rm.config)
    np.testing.assert_allclose(served, trained, rtol=1e-6, atol=1e-6)


def test_training_on_shorter_texts_than_the_model_reads_is_served_that_way(llama):
    lm, tok = llama
    rm = rmod.init_reward_model(lm, tok)
    assert rmod.max_reward_tokens(rm, tok) == 64  # the model's positions (the tokenizer sets no limit)
    rmod.train_reward_model(rm, tok, PAIRS.select(range(4)), rmod.RewardTrainConfig(epochs=1, batch_size=4, max_length=6))
    assert rm.config.reward_max_length == 6 and rmod.max_reward_tokens(rm, tok) == 6
    ids, _ = rmod.reward_inputs(rm, tok, ["I watched this film and"], [" loved it, it was great."])
    assert ids.shape[1] == 6 and tok.decode(ids[0]).endswith("great.")  # the end is kept, and the bos


def test_recipe_reward_model_is_the_builds(tmp_path):
    """build_reward_model is what ``python -m textenv.default.build`` runs (the tiny build writes loadable,
    normalised artifacts with it; tests/test_default_task.py checks them) and what the example retrains with."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm, tok = AutoModelForCausalLM.from_pretrained(default.sft_path()), AutoTokenizer.from_pretrained(default.sft_path())
    pairs = default.preferences("train").select(range(64))
    prompts = list(default.prompts("train")["prompt"])[:16]
    rm, stats = rmod.build_reward_model(lm, tok, pairs, prompts, rmod.RewardTrainConfig(epochs=1, batch_size=16),
                                        seed=0, norm_seed=3, max_new_tokens=8,
                                        evaluate_fn=lambda m: {"accuracy": 0.5})
    assert list(stats) == ["loss_first", "loss_last", "accuracy_last", "parameters", "accuracy", "reward_mean",
                           "reward_std"]
    torch.manual_seed(0)
    again, _ = rmod.build_reward_model(lm, tok, pairs, prompts, rmod.RewardTrainConfig(epochs=1, batch_size=16),
                                       seed=0, norm_seed=3, max_new_tokens=8)
    torch.testing.assert_close(again.score.weight, rm.score.weight)  # seeded: the same model
    assert again.config.reward_mean == rm.config.reward_mean
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_pairs_whose_completions_lack_the_leading_space_are_flagged(llama):
    lm, tok = llama
    rm = rmod.init_reward_model(lm, tok)
    pairs = Dataset.from_dict({"prompt": ["The movie was", "The plot was"], "chosen": ["great.", "fun."],
                               "rejected": ["awful.", "dull."]})
    with pytest.warns(UserWarning, match=r"'The movie wasgreat\.'.*give completions their leading space"):
        rmod.train_reward_model(rm, tok, pairs, rmod.RewardTrainConfig(epochs=1, batch_size=2))
