"""Reward specs -> RewardFn: callables, one-label and multi-label classifiers, paths, checks."""

import numpy as np
import pytest
import torch

from text_fixtures import make_rm, make_tokenizer, save_rm
from textenv.text.rewards import make_reward_fn

PROMPTS = ["the movie was", "i loved this film", "the acting"]
COMPLETIONS = [" good", " very very bad", " fun"]


def manual_scores(model, tokenizer, texts, label=0):
    out = []
    with torch.no_grad():
        for text in texts:  # one at a time: no padding involved
            enc = tokenizer(text, return_tensors="pt")
            out.append(model(**enc).logits[0, label].item())
    return np.array(out)


def test_callable_spec_returns_float_array():
    fn = make_reward_fn(lambda p, c: [len(x) for x in c])
    scores = fn(PROMPTS, COMPLETIONS)
    assert scores.dtype == np.float64 and scores.tolist() == [5.0, 14.0, 4.0]
    assert make_reward_fn(lambda p, c: torch.ones(len(c)))(PROMPTS, COMPLETIONS).tolist() == [1.0, 1.0, 1.0]


def test_one_label_model_scores_prompt_plus_completion_batched():
    model, tok = make_rm(), make_tokenizer()
    fn = make_reward_fn(model, tokenizer=tok, batch_size=2)
    expected = manual_scores(model, tok, [p + c for p, c in zip(PROMPTS, COMPLETIONS)])
    np.testing.assert_allclose(fn(PROMPTS, COMPLETIONS), expected, rtol=1e-5, atol=1e-5)


def test_multi_label_classifier_needs_a_label_and_uses_that_logit():
    model, tok = make_rm(num_labels=3), make_tokenizer()
    with pytest.raises(ValueError, match="has 3 labels; pass label="):
        make_reward_fn(model, tokenizer=tok)
    texts = [p + c for p, c in zip(PROMPTS, COMPLETIONS)]
    fn = make_reward_fn(model, tokenizer=tok, label=2)
    np.testing.assert_allclose(fn(PROMPTS, COMPLETIONS), manual_scores(model, tok, texts, label=2), rtol=1e-5, atol=1e-5)
    by_name = make_reward_fn(model, tokenizer=tok, label="LABEL_1")
    np.testing.assert_allclose(by_name(PROMPTS, COMPLETIONS), manual_scores(model, tok, texts, label=1), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        make_reward_fn(model, tokenizer=tok, label=3)
    with pytest.raises(ValueError, match="not one of the reward model's labels"):
        make_reward_fn(model, tokenizer=tok, label="positive")


def test_path_spec_loads_model_and_tokenizer_and_normalises(tmp_path):
    raw_dir = save_rm(tmp_path / "raw")
    norm_dir = save_rm(tmp_path / "norm", reward_mean=0.5, reward_std=2.0)
    raw = make_reward_fn(str(raw_dir))(PROMPTS, COMPLETIONS)
    norm = make_reward_fn(norm_dir)(PROMPTS, COMPLETIONS)  # a Path works too
    np.testing.assert_allclose(norm, (raw - 0.5) / 2.0, rtol=1e-6)
    np.testing.assert_allclose(make_reward_fn(norm_dir, normalize=False)(PROMPTS, COMPLETIONS), raw, rtol=1e-6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_scores_name_the_sample(bad):
    fn = make_reward_fn(lambda p, c: [1.0, bad, 2.0])
    with pytest.raises(ValueError, match=r"sample 1 \(prompt='i loved this film', completion=' very very bad'\)"):
        fn(PROMPTS, COMPLETIONS)


def test_wrong_shape_says_what_was_expected():
    with pytest.raises(ValueError, match=r"returned shape \(2,\); expected \(3,\)"):
        make_reward_fn(lambda p, c: [1.0, 2.0])(PROMPTS, COMPLETIONS)
    with pytest.raises(ValueError, match=r"returned shape \(3, 1\); expected \(3,\)"):
        make_reward_fn(lambda p, c: np.zeros((3, 1)))(PROMPTS, COMPLETIONS)


def test_bad_spec_type():
    with pytest.raises(TypeError, match="reward spec must be a callable"):
        make_reward_fn(42)


def scores_returning(value):
    """A reward function that returns ``value`` (a reward gone wrong)."""

    def bad_reward(prompts, completions):
        return value

    return bad_reward


def test_an_exception_of_the_reward_function_names_the_function():
    def my_reward(prompts, completions):
        raise KeyError("score")

    with pytest.raises(RuntimeError, match=r"the reward function .*my_reward raised KeyError: 'score'") as err:
        make_reward_fn(my_reward)(PROMPTS, COMPLETIONS)
    assert isinstance(err.value.__cause__, KeyError)


@pytest.mark.parametrize("value, error, message", [
    (["1.0", "2.0", "3.0"], TypeError, r"returned \['1.0', '2.0', '3.0'\] \(of dtype <U3\); expected 3 real numbers \(int or float\)"),
    ([1 + 1j, 2.0, 3.0], TypeError, r"returned \[\(1\+1j\), 2.0, 3.0\] \(of dtype complex128\)"),
    (torch.ones(3, dtype=torch.complex64), TypeError, "returned a torch.complex64 tensor"),
    (None, TypeError, r"returned None \(holding NoneType None\)"),
    ([1.0, None, 2.0], TypeError, r"returned \[1.0, None, 2.0\] \(holding NoneType None\)"),
    ([True, False, True], TypeError, r"returned \[True, False, True\] \(of dtype bool\)"),
    ([[1.0], [1.0, 2.0], 3.0], ValueError, r"returned \[\[1.0\], \[1.0, 2.0\], 3.0\], not an array \(setting an array"),
    ([float("nan")] * 3, ValueError, r"returned nan for sample 0 \(prompt='the movie was', completion=' good'\)"),
])
def test_what_a_bad_reward_function_returned_is_named(value, error, message):
    with pytest.raises(error, match="the reward function .*bad_reward " + message):
        make_reward_fn(scores_returning(value))(PROMPTS, COMPLETIONS)


def test_real_numbers_of_any_kind_are_scores():
    for value in ([1, 2, 3], np.array([1, 2, 3], dtype=np.float32), [np.float32(1), 2, np.int64(3)], torch.arange(1, 4)):
        assert make_reward_fn(scores_returning(value))(PROMPTS, COMPLETIONS).tolist() == [1.0, 2.0, 3.0]
