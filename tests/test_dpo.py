"""agents.dpo: DPO on preference pairs, on a tiny model loaded by path."""

import pytest
import torch
from text_fixtures import *  # noqa: F401,F403

from agents.dpo import DPOConfig, encode_pairs, sequence_logprobs, train_dpo
from agents.lm import LMActorCritic

PAIRS = [{"prompt": p, "chosen": " good fun", "rejected": " awful boring"}
         for p in ("the movie was", "this story is", "the acting", "i loved this film")] * 4


def _margin(policy, reference, tokenizer, rows):
    """Mean over pairs of [log pi - log pi_ref](chosen) - [log pi - log pi_ref](rejected)."""
    with torch.no_grad():
        lp = sequence_logprobs(policy, rows, tokenizer.pad_token_id, "cpu").view(2, -1)
        ref = sequence_logprobs(reference, rows, tokenizer.pad_token_id, "cpu").view(2, -1)
    return float(((lp[0] - ref[0]) - (lp[1] - ref[1])).mean())


def test_dpo_learns_the_preferences_and_leaves_the_reference_alone(lm_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(lm_dir))
    result = train_dpo(DPOConfig(model=str(lm_dir), pairs=PAIRS, beta=0.5, learning_rate=3e-3, epochs=3,
                                 batch_size=8, device="cpu"))
    h = result.history
    assert len(h) == 3 * 2 and h[-1]["loss"] < h[0]["loss"]
    reference = LMActorCritic(str(lm_dir), device="cpu")  # the SFT model as saved: DPO never wrote to it
    rows = encode_pairs(tokenizer, PAIRS[:4], reference.model.config.vocab_size, 12, 48)
    assert _margin(reference, reference, tokenizer, rows) == 0.0
    assert _margin(result.policy, reference, tokenizer, rows) > 0.5  # chosen up, rejected down (in nats)


def test_pairs_are_laid_out_as_the_env_lays_out_a_response(lm_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(lm_dir))
    with pytest.warns(UserWarning, match="longer than max_prompt_tokens=2"):  # as the env warns
        (prompt, chosen, rejected), = encode_pairs(tokenizer, PAIRS[:1], 64, max_prompt_tokens=2, max_response_tokens=48)
    assert prompt == tokenizer("the movie was")["input_ids"][-2:]  # cut from the left to the prompt budget
    assert chosen == tokenizer(" good fun", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    (_, cut, _), = encode_pairs(tokenizer, PAIRS[:1], 64, max_prompt_tokens=12, max_response_tokens=1)
    assert cut == chosen[:1]  # a response cut to its budget gets no EOS


@pytest.mark.parametrize("kw,match", [({"beta": 0.0}, "beta must be"), ({"learning_rate": float("nan")}, "learning_rate"),
                                      ({"batch_size": 0}, "batch_size must be")])
def test_bad_settings_are_refused_before_any_work(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        train_dpo(DPOConfig(**kw))


def test_pairs_without_a_rejected_column_are_refused(lm_dir):
    with pytest.raises(ValueError, match="rejected"):
        train_dpo(DPOConfig(model=str(lm_dir), pairs=[{"prompt": "a", "chosen": " b"}], device="cpu"))
