"""Reward model: the pairwise loss on hand-worked numbers, reading the last token, normalisation,
save/load, and training on the shipped preference pairs."""

import math

import numpy as np
import pytest
import torch

from textenv import default
from textenv.reward_model import (RewardTrainConfig, evaluate_reward_model, gold_agreement, init_reward_model,
                                  load_reward_model, normalize_scores, pairwise_accuracy, pairwise_loss,
                                  save_reward_model, score_texts, set_normalization, train_reward_model)


@pytest.fixture(scope="module")
def sft():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(default.sft_path()), AutoTokenizer.from_pretrained(default.sft_path())


# ---- the loss ------------------------------------------------------------------------------------------


def test_pairwise_loss_hand_worked():
    one, zero = torch.tensor([1.0]), torch.tensor([0.0])
    # -log sigmoid(1) = log(1 + e^-1)
    assert pairwise_loss(one, zero).item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    assert pairwise_loss(one, zero).item() == pytest.approx(0.3133, abs=1e-4)
    # With margin 0.5: -log sigmoid(1 - 0 - 0.5) = log(1 + e^-0.5) = 0.4741
    assert pairwise_loss(one, zero, margin=0.5).item() == pytest.approx(0.4741, abs=1e-4)
    # Wrong order costs more: -log sigmoid(-1) = log(1 + e) = 1.3133
    assert pairwise_loss(zero, one).item() == pytest.approx(1.3133, abs=1e-4)
    # A batch is averaged; per-pair margins broadcast: (log 2 + log(1 + e^-2)) / 2
    chosen, rejected, margin = torch.tensor([0.0, 3.0]), torch.tensor([0.0, 0.0]), torch.tensor([0.0, 1.0])
    expected = (math.log(2) + math.log(1 + math.exp(-2))) / 2
    assert pairwise_loss(chosen, rejected, margin).item() == pytest.approx(expected, abs=1e-6)


def test_pairwise_loss_is_finite_for_huge_gaps_and_checks_shapes():
    assert pairwise_loss(torch.tensor([-200.0]), torch.tensor([200.0])).item() == pytest.approx(400.0)
    with pytest.raises(ValueError, match="same shape"):
        pairwise_loss(torch.zeros(2), torch.zeros(3))


def test_pairwise_loss_gradient_pushes_chosen_up():
    chosen, rejected = torch.tensor([0.2], requires_grad=True), torch.tensor([0.4], requires_grad=True)
    pairwise_loss(chosen, rejected).backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()  # descent raises chosen, lowers rejected


# ---- the model -----------------------------------------------------------------------------------------


def test_reward_is_read_at_the_last_non_pad_token(sft):
    lm, tok = sft
    rm = init_reward_model(lm, tok)
    assert rm.config.num_labels == 1 and rm.config.pad_token_id == tok.pad_token_id
    prompts, completions = ["The movie was", "I"], [" great.", " loved this film. The acting was superb."]
    batched = score_texts(rm, tok, prompts, completions)  # right-padded together
    alone = [score_texts(rm, tok, [p], [c])[0] for p, c in zip(prompts, completions)]
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    # The trunk is the SFT model's.
    torch.testing.assert_close(rm.transformer.wte.weight, lm.transformer.wte.weight)


def test_normalisation_is_saved_in_the_config(sft, tmp_path):
    lm, tok = sft
    rm = init_reward_model(lm, tok)
    raw = np.array([1.0, 2.0, 3.0, 4.0])
    stats = set_normalization(rm, raw)
    assert stats == {"reward_mean": 2.5, "reward_std": pytest.approx(np.sqrt(1.25))}
    np.testing.assert_allclose(normalize_scores(raw, rm.config).mean(), 0.0, atol=1e-12)
    np.testing.assert_allclose(normalize_scores(raw, rm.config).std(), 1.0)
    save_reward_model(rm, tok, tmp_path / "rm")
    loaded, loaded_tok = load_reward_model(tmp_path / "rm")
    assert loaded.config.reward_mean == 2.5 and loaded_tok.padding_side == "right"
    np.testing.assert_allclose(score_texts(loaded, loaded_tok, ["I"], [" loved it."]),
                               score_texts(rm, tok, ["I"], [" loved it."]), atol=1e-6)
    assert tok.padding_side == "left"  # saving did not change the caller's tokenizer


def test_normalize_without_statistics_is_identity():
    class Config:
        pass

    raw = np.array([0.5, -1.0])
    assert normalize_scores(raw, Config()) is raw


def test_gold_agreement_hand_worked():
    # Gold orders 4 samples 1 < 2 < 3 < 4; the scores swap the last two: 5 of 6 pairs agree.
    out = gold_agreement(np.array([0.1, 0.2, 0.4, 0.3]), np.array([1.0, 2.0, 3.0, 4.0]))
    assert out["sign_agreement"] == pytest.approx(5 / 6)
    assert out["spearman"] == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    # Gold ties are not counted; a score tie counts half.
    out = gold_agreement(np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0]))
    assert out["sign_agreement"] == pytest.approx((0.5 + 1.0) / 2)


# ---- training on the shipped preference data ------------------------------------------------------------


def test_training_on_shipped_pairs_reaches_high_held_out_accuracy(sft):
    lm, tok = sft
    torch.manual_seed(0)
    rm = init_reward_model(lm, tok)
    train = default.preferences("train").select(range(2000))  # a fifth of the shipped pairs, one pass
    test = default.preferences("test").select(range(400))
    before = pairwise_accuracy(rm, tok, test)
    metrics = train_reward_model(rm, tok, train, RewardTrainConfig(epochs=1, batch_size=16, lr=2e-3))
    after = evaluate_reward_model(rm, tok, test)["pairwise_accuracy"]
    assert metrics["loss_last"] < metrics["loss_first"]
    # Measured 0.885 (the full build reaches 0.98); an untrained head scored 0.545.
    assert after >= 0.8, (before, after)


def test_shipped_reward_model_ranks_held_out_pairs():
    rm, tok = load_reward_model(default.reward_path())
    test = default.preferences("test").select(range(500))
    assert pairwise_accuracy(rm, tok, test) >= 0.8
    scores = normalize_scores(score_texts(rm, tok, ["The movie was"] * 2, [" wonderful. I loved it.",
                                                                           " awful. I hated it."]), rm.config)
    assert scores[0] > 0 > scores[1]
