"""Fuzz TextGen-v0 with seeded random bad inputs, each call checked against an untouched twin env.

Every call on the fuzzed env either raises a clear error (exactly TypeError, ValueError or RuntimeError, with
a message, raised by textenv's own code, so no numpy, torch or Gymnasium error leaking through) and leaves
the env as it was, or completes with a sane result (finite rewards, observations in the observation space).
The twin gets only the calls that completed, and after each one both envs must return the same and hold the
same state: episodes, prompts, generators.
"""

import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest

from test_text_validation import (  # noqa: F401  (parts: the fixture with the shared tiny model)
    BAD_OUTPUTS,
    FlakyPolicy,
    assert_same,
    assert_same_state,
    parts,
    small_kwargs,
    state,
)
from text_fixtures import *  # noqa: F403  (fixtures: lm_dir)
from text_fixtures import PROMPTS
from textenv.text.env import TextGenEnv
from textenv.text.vector import TextGenVectorEnv

N = 3  # rows of the vector env
V = 64  # the tiny model's logits
OURS = tuple(str(Path(__file__).resolve().parents[1] / pkg) for pkg in ("textenv", "rlcore"))  # where our checks live

BAD_SINGLE_ACTIONS = [64, -1, 2**40, np.uint64(2**63 + 5), 5.0, np.float32(5), True, np.bool_(True), "5", None,
                      [5], [[5]], [[1, 2], [3]], np.array([5, 6]), object(), {"a": 1}, 1 + 2j, b"5"]
BAD_ROW_ACTIONS = [[5] * (N - 1), [5] * (N + 1), [[1, 2], [3]] + [5] * (N - 2), [5.0] * N, [True] * N, ["5"] * N,
                   [5] * (N - 1) + [None], [5] * (N - 1) + [V], [-1] + [5] * (N - 1), [[5]] * N, 5, {"a": 1},
                   np.full(N, 5, dtype=np.float32), [5] * (N - 1) + [2**70], np.full(N, 2**63 + 5, dtype=np.uint64)]
BAD_SEEDS = [-1, 1.5, "abc", True, np.float64(2.0), object(), b"1", [1, -1, 2], [1, 2.5, 3], [1] * (N + 1), np.array([[1, 2]])]
BAD_PROMPTS = [b"the movie", [5.0], [True], ["a"], [99], [-3], "", "   ", [], 5, {"a": 1}, [[5, 6]], np.array([1.5]), object()]
BAD_VECTOR_OPTIONS = [{"prompts": "abc"}, {"prompts": ["the movie"]}, {"prompts": ["the movie"] * (N - 1) + [b"x"]},
                      {"reset_mask": np.zeros(N, bool)}, {"reset_mask": [1] * N}, {"reset_mask": "abc"},
                      {"reset_mask": [[True], [False, True]]}, {"prompt": "the movie", "prompts": ["the movie"] * N}]
BAD_KL_COEFS = ["0.1", True, None, -1, float("nan"), float("inf"), 1e300, [0.1]]


def bad_options(rng, vector: bool):
    pick = rng.integers(4)
    if pick == 0:
        return [None, "abc", ["prompt"], 5, {"promt": 1}, {1: 2}][rng.integers(6)]
    if pick == 1 and vector:
        return BAD_VECTOR_OPTIONS[rng.integers(len(BAD_VECTOR_OPTIONS))]
    return {"prompt": BAD_PROMPTS[rng.integers(len(BAD_PROMPTS))]}


def good_prompt(rng):
    if rng.random() < 0.5:
        return PROMPTS[rng.integers(len(PROMPTS))]
    return rng.integers(0, V, rng.integers(1, 9)).tolist()  # up to 8 ids: longer ones are cut to 6, with a warning


def good_reset(rng, vector: bool) -> dict:
    seed = [None, int(rng.integers(1000)), np.int64(rng.integers(1000))][rng.integers(3)]
    if vector and rng.random() < 0.3:
        seed = [None if rng.random() < 0.3 else int(s) for s in rng.integers(1000, size=N)]
    options = [None, {}, {"prompt": good_prompt(rng)}][rng.integers(3)]
    if vector and rng.random() < 0.3:
        options = {"prompts": [good_prompt(rng) for _ in range(N)]}
    if vector and rng.random() < 0.3:
        mask = rng.random(N) < 0.5
        mask[rng.integers(N)] = True
        options = {**(options or {}), "reset_mask": mask}
    return {"seed": seed, "options": options}


def good_action(rng, vector: bool, eos: int):
    actions = rng.integers(0, V, N if vector else 1)
    actions[rng.random(len(actions)) < 0.15] = eos
    return actions if vector else int(actions[0])


def assert_clear(err: BaseException):
    """A clear error: one of the three allowed types exactly, with a message, raised by our own checks."""
    assert type(err) in (TypeError, ValueError, RuntimeError), f"{type(err).__name__} leaked: {err}"
    assert str(err).strip(), f"{type(err).__name__} without a message"
    origin = traceback.extract_tb(err.__traceback__)[-1].filename
    assert origin.startswith(OURS), f"{type(err).__name__}({err}) was raised in {origin}, not by textenv / rlcore"


def assert_sane(env, out, vector: bool):
    if "seed" in out:  # a reset
        obs = out["result"][0]
    else:
        obs, reward, terminated, truncated, info = out["result"]
        assert np.all(np.isfinite(reward)) and np.all(np.isfinite(info.get("ref_logprob", 0.0)))
        assert (terminated.dtype == np.bool_) if vector else isinstance(terminated, bool)
    assert obs in env.observation_space


def ends_a_row(env, actions) -> bool:
    """Whether a valid step ends an episode in some row (only then is the reward function called)."""
    core = env.unwrapped.core
    return bool(np.any((np.asarray(actions) == core.eos_token_id) | (core.gen_len + 1 >= core.max_new_tokens)))


def one_call(rng, env, vector: bool) -> tuple[str, dict, bool]:
    """A random call: (method, keyword arguments, whether it must fail). Flaky parts are armed on ``env``."""
    eos, kind = env.eos_token_id, rng.choice(["step", "step", "step", "bad_step", "bad_reward", "reset", "bad_reset",
                                              "kl_coef", "bad_kl_coef"])
    ended = not vector and env._ended  # the single env refuses steps until reset
    if kind in ("step", "bad_reward"):
        actions = good_action(rng, vector, eos)
        if kind == "step":
            return "step", {"actions": actions}, ended
        env.core.reward_fn.fn.mode = ["raise", *BAD_OUTPUTS][rng.integers(len(BAD_OUTPUTS) + 1)]
        if vector and rng.random() < 0.3:
            env.core.policy_lm.nan = True  # the policy is called at every step
            return "step", {"actions": actions}, True
        return "step", {"actions": actions}, ended or ends_a_row(env, actions)
    if kind == "bad_step":
        bad = BAD_ROW_ACTIONS if vector else BAD_SINGLE_ACTIONS
        return "step", {"actions": bad[rng.integers(len(bad))]}, True
    if kind == "reset":
        return "reset", good_reset(rng, vector), False
    if kind == "bad_reset":
        if rng.random() < 0.5:
            return "reset", {"seed": BAD_SEEDS[rng.integers(len(BAD_SEEDS))], "options": None}, True
        options = bad_options(rng, vector)  # with a valid seed, which must not be applied either
        return "reset", {"seed": good_reset(rng, vector)["seed"], "options": options}, options is not None
    if kind == "kl_coef":
        return "kl_coef", {"value": float(rng.random())}, False
    return "kl_coef", {"value": BAD_KL_COEFS[rng.integers(len(BAD_KL_COEFS))]}, True


def call(env, method: str, kwargs: dict) -> dict:
    if method == "step":
        return {"result": env.step(kwargs["actions"])}
    if method == "reset":
        return {"result": env.reset(**kwargs), "seed": kwargs["seed"]}
    env.kl_coef = kwargs["value"]
    return {"result": env.kl_coef}


def disarm(env):
    env.core.reward_fn.fn.mode = None
    if env.core.policy_lm is not None:
        env.core.policy_lm.nan = False


def fuzz_once(rng, env, twin, vector: bool, t: int) -> bool:
    """One random call on ``env`` (and, when it completed, on ``twin``), checked. Returns whether it raised."""
    before = state(env)
    method, kwargs, must_fail = one_call(rng, env, vector)
    where = f"call {t}: {method}({kwargs})"
    try:
        out = call(env, method, kwargs)
    except Exception as err:  # noqa: BLE001  (judged by assert_clear)
        assert must_fail, f"{where} should have completed, raised {type(err).__name__}: {err}"
        assert_clear(err)
        assert_same_state(state(env), before)
        return True
    finally:
        disarm(env)
    assert not must_fail, f"{where} should have failed"
    if method != "kl_coef":
        assert_sane(env, out, vector)
    # Float values may differ in the last bits: see assert_same. Everything else is exact.
    assert_same(out, call(twin, method, kwargs), where, exact=False)
    assert_same_state(state(env), state(twin))
    return False


@pytest.mark.parametrize("vector", [False, True], ids=["single", "vector"])
def test_fuzz_bad_inputs_against_a_twin(parts, vector):  # noqa: F811  (parts is the shared-model fixture)
    rng = np.random.default_rng(9 + vector)

    def make():  # the vector env acts in mode (a), with a policy that can be told to return NaN; the single env in mode (b)
        if vector:
            return TextGenVectorEnv(N, **small_kwargs(parts, policy=FlakyPolicy(parts[0]), kl_estimator="k3"))
        return TextGenEnv(**small_kwargs(parts, no_eos_penalty=-0.5))

    env, twin = make(), make()
    for e in (env, twin):
        e.reset(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # prompts longer than max_prompt_tokens are cut, with a warning
        raised = sum(fuzz_once(rng, env, twin, vector, t) for t in range(400))
    assert 150 < raised < 250, raised  # plenty of both bad calls and valid ones
