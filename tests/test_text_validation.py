"""TextGen-v0 bad inputs (issue 9): every reset and step either completes or raises a clear error and
leaves the env exactly as before, which a twin env that only ever sees the valid calls confirms."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from text_fixtures import *  # noqa: F403  (fixtures: lm_dir, rm_dir, env_kwargs)
from text_fixtures import PROMPTS, make_lm, make_tokenizer
from textenv.text.config import TextGenConfig
from textenv.text.env import TextGenEnv
from textenv.text.vector import TextGenVectorEnv

BAD_OUTPUTS = {  # what a misbehaving reward function returns for scores `s` (or does instead)
    "nan": lambda s: [float("nan")] * len(s),
    "inf": lambda s: [float("inf")] * len(s),
    "none": lambda s: None,
    "short": lambda s: s[:-1],
    "long": lambda s: s + [1.0],
    "2d": lambda s: [[x] for x in s],
    "str": lambda s: [str(x) for x in s],
    "complex": lambda s: [x + 1j for x in s],
    "bool": lambda s: [True] * len(s),
    "ragged": lambda s: [[1.0], [1.0, 2.0]] + s,
    "tensor_complex": lambda s: torch.tensor(s, dtype=torch.complex64),
}


class Flaky:
    """A word-count reward that misbehaves in its next call when ``mode`` is set (a key of BAD_OUTPUTS or "raise")."""

    def __init__(self):
        self.mode = None

    def __call__(self, prompts, completions):
        mode, self.mode = self.mode, None
        scores = [float(len(c.split())) for c in completions]
        if mode == "raise":
            raise ZeroDivisionError("boom")
        return scores if mode is None else BAD_OUTPUTS[mode](scores)


class FlakyPolicy:
    """A policy (next_token_logits) that returns NaN logits in its next call when ``nan`` is set."""

    def __init__(self, model):
        from textenv.text.decoding import IncrementalLM

        self.lm, self.nan = IncrementalLM(model), False

    def next_token_logits(self, input_ids, attention_mask):
        logits = self.lm.next_token_logits(input_ids, attention_mask)
        if self.nan:
            self.nan = False
            return torch.full_like(logits, float("nan"))
        return logits


@pytest.fixture(scope="module")
def parts(lm_dir):
    """One copy of the tiny model and tokenizer, shared by every env of a test (the env never trains them)."""
    return AutoModelForCausalLM.from_pretrained(str(lm_dir)).eval(), make_tokenizer()


def small_kwargs(parts, **kw):
    model, tok = parts
    return {**dict(model=model, tokenizer=tok, reward=Flaky(), prompts=list(PROMPTS), max_new_tokens=3, max_prompt_tokens=6,
                   device="cpu", prompt_cache_mb=0.0), **kw}


def state(env) -> dict:
    """Everything a later call depends on: the episodes, the prompts, the generators and their seeds."""
    core = env.unwrapped.core
    rngs = env.unwrapped._rngs if isinstance(env, TextGenVectorEnv) else [env.unwrapped._np_random]
    out = {k: getattr(core, k).copy() for k in ("ids", "mask", "gen_len", "has_eos", "live")}
    out.update(prompt_ids=[list(p) for p in core.prompt_ids], prompt_text=list(core.prompt_text), kl_coef=core.kl_coef,
               rngs=[None if g is None else g.bit_generator.state for g in rngs], ended=getattr(env, "_ended", None),
               seeds=list(env.unwrapped._seeds) if isinstance(env, TextGenVectorEnv) else env.unwrapped._np_random_seed)
    return out


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k


def assert_same(x, y, where="result", exact=True):
    """Equal results of two envs: arrays, dicts (infos, observations), numbers and strings, recursively.

    ``exact=False`` allows float32 rounding (1e-5) in float values. A step that fails after the model forwards
    has shown the reference model's KV cache (IncrementalLM) one input the twin's never saw; after a partial
    reset the next forward may then prefill a row in a different batch than the twin's, or re-prefill a row
    the twin decodes from its cache, which moves the last bits (measured: 2e-6 in a log-probability). The
    envs' own state is still identical; integers, flags and texts must match exactly.
    """
    if isinstance(x, dict):
        assert set(x) == set(y), f"{where}: keys {sorted(x)} != {sorted(y)}"
        for k in x:
            assert_same(x[k], y[k], f"{where}[{k!r}]", exact)
    elif isinstance(x, (tuple, list)) or (isinstance(x, np.ndarray) and x.dtype == object):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            assert_same(u, v, f"{where}[{i}]", exact)
    elif isinstance(x, (float, np.ndarray, np.floating)) and np.asarray(x).dtype.kind == "f" and not exact:
        assert np.asarray(x).shape == np.asarray(y).shape, where
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5, err_msg=where)
    elif isinstance(x, np.ndarray):
        assert x.dtype == y.dtype, where
        np.testing.assert_array_equal(x, y, err_msg=where)
    else:
        assert type(x) is type(y) and (x == y or (x != x and y != y)), f"{where}: {x!r} != {y!r}"


# -- 1, 2. a reward that fails on the step that ends the episode (its messages: test_text_rewards.py) ---


@pytest.mark.parametrize("mode", ["raise", *BAD_OUTPUTS])
def test_failed_final_step_leaves_the_single_env_unchanged(parts, mode):
    env, twin = TextGenEnv(**small_kwargs(parts)), TextGenEnv(**small_kwargs(parts))
    was, the, a = env.tokenizer.convert_tokens_to_ids(["was", "the", "a"])
    for e in (env, twin):
        e.reset(seed=0, options={"prompt": "the movie"})
        for token in (was, the):
            e.step(token)
    before = state(env)
    env.core.reward_fn.fn.mode = mode
    with pytest.raises((TypeError, ValueError, RuntimeError), match="the reward function Flaky"):
        env.step(a)  # the third token ends the episode (max_new_tokens=3): the reward is called and fails
    assert_same_state(state(env), before)
    out, expected = env.step(a), twin.step(a)  # the retry is exactly the step the twin takes
    assert_same(out, expected)
    assert out[3] and out[4]["completion"] == " was the a"  # three tokens, not four
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(a)


@pytest.mark.parametrize("mode", ["raise", "nan", "short", "str"])
def test_failed_final_step_leaves_the_vector_env_unchanged(parts, mode):
    env, twin = TextGenVectorEnv(3, **small_kwargs(parts)), TextGenVectorEnv(3, **small_kwargs(parts))
    eos = env.eos_token_id
    for e in (env, twin):
        e.reset(seed=4)
        e.step(np.array([5, 6, 7]))
    before = state(env)
    env.core.reward_fn.fn.mode = mode
    with pytest.raises((TypeError, ValueError, RuntimeError), match="the reward function Flaky"):
        env.step(np.array([eos, 6, 7]))  # row 0 ends: its reward fails, and no row may have moved
    assert_same_state(state(env), before)
    for actions in ([eos, 6, 7], [8, 9, 10], [11, eos, 12]):
        assert_same(env.step(np.array(actions)), twin.step(np.array(actions)))


# -- 3. settings and models that make the reward non-finite ----------------------------------------------


def test_settings_that_overflow_the_reward_are_refused(parts):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0 and at least 0.0001"):
        TextGenEnv(**small_kwargs(parts, temperature=1e-40))
    with pytest.raises(ValueError, match=r"kl_coef must be a finite number >= 0 and <= 1e\+06"):
        TextGenEnv(**small_kwargs(parts, kl_coef=1e300))
    env = TextGenEnv(**small_kwargs(parts, temperature=1e-4, kl_coef=1e6))  # the documented bounds themselves work
    env.reset(seed=0)
    _, r, *_, info = env.step(5)
    assert np.isfinite(r) and np.isfinite(info["ref_logprob"])


def test_nan_policy_logits_blame_the_policy_and_change_nothing(parts):
    model = parts[0]
    env = TextGenEnv(**small_kwargs(parts, policy=FlakyPolicy(model)))
    twin = TextGenEnv(**small_kwargs(parts, policy=FlakyPolicy(model)))
    for e in (env, twin):
        e.reset(seed=1)
    before = state(env)
    env.core.policy_lm.nan = True
    with pytest.raises(ValueError, match=r"the policy returned unusable next-token logits in row 0 \(NaN"):
        env.step(5)
    assert_same_state(state(env), before)
    assert_same(env.step(5), twin.step(5))


def test_nan_reference_logits_blame_the_reference(parts):
    broken = make_lm()
    with torch.no_grad():
        broken.lm_head.weight[7] = float("nan")  # one token's logit is NaN
    env = TextGenEnv(**small_kwargs(parts, model=broken))
    env.reset(seed=0)
    before = state(env)
    with pytest.raises(ValueError, match=r"the reference model returned unusable next-token logits in row 0"):
        env.step(5)
    assert_same_state(state(env), before)


def test_a_reward_sum_that_overflows_is_an_error(parts):
    env = TextGenEnv(**small_kwargs(parts, no_eos_penalty=1e308))
    env.core.reward_fn.fn = lambda p, c: [1e308] * len(c)
    env.reset(seed=0)
    env.step(5), env.step(6)
    before = state(env)
    with pytest.raises(ValueError, match=r"the reward of row 0 is inf: .* overflowed"):
        env.step(7)
    assert_same_state(state(env), before)


# -- 4. strict types ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt, error, message", [
    (b"the movie", TypeError, "got bytes b'the movie': decode it to str first"),
    ([5.0, 6.0], TypeError, r"list of int token ids in \[0, 64\), got \[5.0, 6.0\], which holds float 5.0"),
    ([True, 5], TypeError, "which holds bool True"),
    (["5", "6"], TypeError, "which holds str '5'"),
    (np.array([5.0]), TypeError, "got a float64 array"),
    ([[5, 6]], TypeError, "which holds list"),
    (5, TypeError, "got int 5"),
    ([5, 64], ValueError, r"prompt token id 64 is outside the vocabulary \[0, 64\)"),
    ("  ", ValueError, "empty prompt"),
])
def test_prompts_are_text_or_int_token_ids(parts, prompt, error, message):
    env = TextGenEnv(**small_kwargs(parts))
    env.reset(seed=0)
    before = state(env)
    with pytest.raises(error, match=message):
        env.reset(seed=3, options={"prompt": prompt})
    assert_same_state(state(env), before)


def test_numpy_token_ids_are_prompts(parts):
    env = TextGenEnv(**small_kwargs(parts))
    for prompt in ([np.int64(5), 6], np.array([5, 6]), (5, 6), torch.tensor([5, 6])):
        obs, info = env.reset(options={"prompt": prompt})
        assert obs["input_ids"][-2:].tolist() == [5, 6] and info["prompt"] == "movie film"


def test_vector_prompts_must_be_a_list_of_one_per_row(parts):
    env = TextGenVectorEnv(3, **small_kwargs(parts))
    env.reset(seed=0)
    before = state(env)
    for prompts, error, message in ((("abc"), TypeError, "options\\['prompts'\\] must be a list of 3 prompts .* got str 'abc'"),
                                    (5, TypeError, "must be a list of 3 prompts"),
                                    (["the movie", "the acting"], ValueError, "needs 3 prompts"),
                                    (["the movie", "the acting", b"x"], TypeError, "bytes")):
        with pytest.raises(error, match=message):
            env.reset(options={"prompts": prompts})
        assert_same_state(state(env), before)
    with pytest.raises(ValueError, match="were both given"):
        env.reset(options={"prompts": ["a"] * 3, "prompt": "the movie"})


@pytest.mark.parametrize("name, value, message", [
    ("stop_at_eos", "False", "stop_at_eos must be True or False, got str 'False'"),
    ("normalize_reward", None, "normalize_reward must be True or False, got NoneType None"),
    ("kl_coef", "0.1", r"kl_coef must be a number \(int or float, not bool or str\), got str '0.1'"),
    ("kl_coef", True, "kl_coef must be a number .* got bool True"),
    ("kl_coef", None, "kl_coef must be a number .* got NoneType None"),
    ("no_eos_penalty", "1", "no_eos_penalty must be a number .* got str '1'"),
    ("max_new_tokens", 2.0, "max_new_tokens must be an int >= 1, got float 2.0"),
    ("tokenizer", 5, r"tokenizer must be a tokenizer \(e.g. AutoTokenizer.from_pretrained.*got int 5"),
    ("model", torch.nn.Linear(2, 2), r"model must be a causal LM .* whose forward takes input_ids .* got Linear"),
    ("ref_model", torch.nn.Linear(2, 2), "ref_model must be a causal LM"),
    ("policy", torch.nn.Linear(2, 2), "policy must be a causal LM"),
    ("temperature", "hot", "temperature must be a number"),
    ("reward_label", 0.5, "reward_label must be None"),
    ("device", 5, 'device must be "auto"'),
])
def test_arguments_of_the_wrong_type_are_type_errors(parts, rm_dir, name, value, message):
    kw = small_kwargs(parts, **({"reward": str(rm_dir)} if name == "reward_label" else {}))
    with pytest.raises(TypeError, match=message):
        TextGenEnv(**{**kw, name: value})


def test_the_kl_coef_setter_checks_like_the_constructor(parts):
    env = TextGenEnv(**small_kwargs(parts))
    for value, error in (("0.1", TypeError), (True, TypeError), (None, TypeError), (-1, ValueError), (float("nan"), ValueError),
                         (1e300, ValueError)):
        with pytest.raises(error, match="kl_coef must be a"):
            env.kl_coef = value
        assert env.kl_coef == TextGenConfig.kl_coef  # unchanged by the refused values
    env.kl_coef = np.float32(0.25)
    assert env.kl_coef == 0.25 and type(env.kl_coef) is float


# -- 5, 6. seeds and options are checked before anything changes ----------------------------------------------


@pytest.mark.parametrize("seed, error, message", [
    ([0, -1, 2], ValueError, r"seed\[1\] must be None or an int >= 0, got -1"),
    ([0, 1.5, 2], TypeError, r"seed\[1\] must be None or an int >= 0, got float 1.5"),
    ([0, True, 2], TypeError, r"seed\[1\] .* got bool True"),
    ([0, 1], ValueError, "needs 3 seeds"),
    (1.5, TypeError, "seed must be None, an int >= 0 or a list of 3 per-row seeds .* got float 1.5"),
    ("abc", TypeError, "got str 'abc'"),
    (-2, ValueError, "seed must be None or an int >= 0, got -2"),
])
def test_vector_seeds_are_checked_before_any_row_is_reseeded(parts, seed, error, message):
    env = TextGenVectorEnv(3, **small_kwargs(parts))
    env.reset(seed=10)
    before = state(env)
    with pytest.raises(error, match=message):
        env.reset(seed=seed)
    assert_same_state(state(env), before)


def test_numpy_integer_seeds_are_ints(parts):
    vec, vec_twin = TextGenVectorEnv(3, **small_kwargs(parts)), TextGenVectorEnv(3, **small_kwargs(parts))
    assert_same(vec.reset(seed=np.int64(3)), vec_twin.reset(seed=3))
    assert_same(vec.reset(seed=np.array([1, 2, 3])), vec_twin.reset(seed=[1, 2, np.int32(3)]))
    single, single_twin = TextGenEnv(**small_kwargs(parts)), TextGenEnv(**small_kwargs(parts))
    assert_same(single.reset(seed=np.int64(3)), single_twin.reset(seed=3))
    assert single.np_random_seed == 3


def test_single_env_seed_and_options_are_checked_first(parts):
    env = TextGenEnv(**small_kwargs(parts))
    env.reset(seed=0)
    env.step(5)
    before = state(env)
    for kw, error, message in (
        ({"seed": "abcd"}, TypeError, "seed must be None or an int >= 0, got str 'abcd'"),
        ({"seed": -1}, ValueError, "got -1"),
        ({"seed": 1, "options": "abc"}, TypeError, r"options must be None or a dict with keys from \['prompt', 'kl_coef'\], got str"),
        ({"seed": 1, "options": ["prompt"]}, TypeError, "options must be None or a dict"),
        ({"seed": 1, "options": {"promt": "x"}}, ValueError, r"unknown reset option 'promt'; the known options are \['prompt', 'kl_coef'\]"),
    ):
        with pytest.raises(error, match=message):
            env.reset(**kw)
        assert_same_state(state(env), before)


def test_vector_options_are_checked_first(parts):
    env = TextGenVectorEnv(2, **small_kwargs(parts))
    env.reset(seed=0)
    before = state(env)
    for options, error, message in (("abc", TypeError, "options must be None or a dict"),
                                    ({"reset_mask": [[True], [False, True]]}, ValueError, "reset_mask"),
                                    ({"reset_mask": [1, 0]}, ValueError, "reset_mask"),
                                    ({"prompts": ["the movie", 5.5]}, TypeError, "got float 5.5"),
                                    ({"seed": 3}, ValueError, r"the known options are \['prompt', 'prompts', 'reset_mask', 'kl_coef', 'group_size'\]")):
        with pytest.raises(error, match=message):
            env.reset(seed=5, options=options)
        assert_same_state(state(env), before)


# -- 7, 8. sizes and actions ------------------------------------------------------------------------------


def test_num_envs_is_a_bounded_positive_int(parts):
    with pytest.raises(ValueError, match=r"num_envs must be an int in \[1, 65536\]"):
        TextGenVectorEnv(10**12, **small_kwargs(parts))
    with pytest.raises(TypeError, match="num_envs must be an int >= 1, got bool True"):
        TextGenVectorEnv(True, **small_kwargs(parts))
    with pytest.raises(ValueError, match="num_envs must be an int >= 1, got 0"):
        TextGenVectorEnv(0, **small_kwargs(parts))
    with pytest.raises(ValueError, match="GiB for the token and mask arrays alone"):
        TextGenVectorEnv(60_000, **{**small_kwargs(parts), "max_new_tokens": 3000})


def test_vector_actions_of_the_wrong_shape_say_what_is_expected(parts):
    env = TextGenVectorEnv(2, **small_kwargs(parts))
    env.reset(seed=0)
    before = state(env)
    for actions, error, message in (
        ([[1, 2], [3]], ValueError, r"actions must be an array of shape \(2,\) of int token ids in \[0, 64\)"),
        ([5], ValueError, r"expected 2 actions .* got shape \(1,\)"),
        ([5.0, 6.0], TypeError, "integer token ids"),
        ([True, False], TypeError, "integer token ids"),
        (["5", "6"], TypeError, "integer token ids"),
        ([5, None], TypeError, "integer token ids"),
        ([5, 2**70], TypeError, "integer token ids"),
        ([5, -1], ValueError, r"action -1 \(row 1\) is not a token id"),
        (np.array([5, 2**63 + 5], dtype=np.uint64), ValueError, r"action 9223372036854775813 \(row 1\) is not a token id"),
    ):
        with pytest.raises(error, match=message):
            env.step(actions)
        assert_same_state(state(env), before)


def test_single_actions_of_the_wrong_shape(parts):
    env = TextGenEnv(**small_kwargs(parts))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must be a single token id \(an int in \[0, 64\)\), got shape \(2,\)"):
        env.step([5, 6])
    with pytest.raises(ValueError, match="action must be a single token id"):
        env.step([[5], [6, 7]])
    with pytest.raises(TypeError, match="integer token ids"):
        env.step(None)
