"""Fuzzing GridWorld-v0's boundary: random bad calls mixed with valid ones.

Every bad call must raise TypeError, ValueError or RuntimeError with a message that names what was
wrong (no IndexError, KeyError, OverflowError or numpy's own messages leaking out), and must leave no
trace: a twin env built identically, which gets only the valid calls, answers each of them exactly
as the fuzzed env does. Valid answers must be sane (observations in the space, finite rewards).
"""

import math

import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence

from textenv.gridworld import GridWorldEnv, GridWorldVectorEnv

SMALL_MAP = "C.B\n.T.\n..M"  # short episodes: terminations and autoresets are frequent
N = 5
CALLS = 400
ALLOWED = (TypeError, ValueError, RuntimeError)


class Bad:
    """A call that must be refused: the argument, and words one of which its error message must contain."""

    def __init__(self, method, kwargs, *words):
        self.method, self.kwargs, self.words = method, kwargs, words


def pick(rng, options):
    return options[int(rng.integers(len(options)))]


# Bad values, each made from the fuzz generator so the run is reproducible. BAD_SCALARS are wrong
# wherever an int is expected (None is not among them: it is a valid seed).

BAD_SCALARS = [
    lambda r: float(r.integers(4)),
    lambda r: np.float32(r.integers(4)),
    lambda r: bool(r.integers(2)),
    lambda r: np.bool_(r.integers(2)),
    lambda r: str(r.integers(4)),
    lambda r: bytes([48 + int(r.integers(4))]),
    lambda r: complex(r.integers(4), 1),
    lambda r: object(),
    lambda r: {"a": 1},
    lambda r: float("nan"),
    lambda r: -(2 ** int(r.integers(0, 80))),
]


def bad_single_action(rng):
    makers = BAD_SCALARS + [
        lambda r: None,
        lambda r: int(r.integers(4, 2**62)) * pick(r, [1, -1]),
        lambda r: 2**70,
        lambda r: np.uint64(2**63),
        lambda r: [int(r.integers(4))],
        lambda r: np.zeros(int(r.integers(2, 5)), dtype=np.int64),
        lambda r: np.zeros((1, 1), dtype=np.int64),
        lambda r: np.array([r.random()]),
        lambda r: np.array(True),
    ]
    return pick(rng, makers)(rng)


def bad_vector_actions(rng):
    good = lambda r: r.integers(0, 4, size=N)  # noqa: E731
    makers = [
        lambda r: r.integers(0, 4, size=int(pick(r, [0, 1, N - 1, N + 1, 2 * N]))),
        lambda r: r.integers(0, 4, size=(N, 1)),
        lambda r: r.integers(0, 4, size=(1, N)),
        lambda r: good(r).astype(np.float64),
        lambda r: good(r).astype(np.float32).tolist(),
        lambda r: good(r).astype(bool),
        lambda r: good(r).astype(str),
        lambda r: [str(a) for a in good(r)],
        lambda r: "".join(str(a) for a in good(r)),
        lambda r: [[0, 1], [2]] + [0] * (N - 2),
        lambda r: [0] * (N - 1) + [[1, 2]],
        lambda r: [0] * (N - 1) + [None],
        lambda r: [0] * (N - 1) + [2**70],
        lambda r: [-1] + [0] * (N - 2) + [2**63],
        lambda r: np.where(np.arange(N) == r.integers(N), pick(r, [4, -1, 100]), good(r)),
        lambda r: good(r).astype(np.uint8) + np.uint8(4),
        lambda r: good(r).astype(object),
        lambda r: int(r.integers(4)),
        lambda r: None,
        lambda r: {"actions": good(r)},
        lambda r: tuple(float(a) for a in good(r)),
    ]
    return pick(rng, makers)(rng)


def bad_seed(rng, num_envs):
    makers = list(BAD_SCALARS)
    if num_envs:  # a vector env also takes sequences: of the wrong length, or with one bad entry
        makers += [
            lambda r: [0] * int(pick(r, [0, 1, num_envs - 1, num_envs + 1])),
            lambda r: "abcdefgh"[:num_envs],
            lambda r: np.zeros((num_envs, 1), dtype=np.int64),
            lambda r: np.arange(num_envs, dtype=np.float64),
            lambda r: spoil(r, [int(s) for s in r.integers(0, 100, size=num_envs)]),
        ]
    return pick(rng, makers)(rng)


def spoil(rng, seeds):
    seeds[int(rng.integers(len(seeds)))] = pick(rng, BAD_SCALARS)(rng)
    return seeds


def bad_options(rng, num_envs):
    makers = [
        lambda r: "abc",
        lambda r: ["prompt"],
        lambda r: int(r.integers(5)),
        lambda r: ("reset_mask",),
        lambda r: {"prompt": "hi"},
        lambda r: {1: 2},
        lambda r: {"reset_mask": np.ones(num_envs or 1, dtype=bool), "extra": 0},
    ]
    if num_envs:
        makers += [lambda r: {"reset_mask": bad_mask(r, num_envs)}] * 6
    else:
        makers += [lambda r: {"reset_mask": np.ones(1, dtype=bool)}]
    return pick(rng, makers)(rng)


def bad_mask(rng, num_envs):
    makers = [
        lambda r: r.random(num_envs) < 0.5,
        lambda r: (r.random(num_envs) < 0.5).tolist(),
        lambda r: (r.random(num_envs) < 0.5).astype(np.int64),
        lambda r: r.random(num_envs),
        lambda r: np.ones(int(pick(r, [1, num_envs + 1])), dtype=bool),
        lambda r: np.ones((num_envs, 1), dtype=bool),
        lambda r: np.zeros(num_envs, dtype=bool),
        lambda r: np.bool_(True),
        lambda r: None,
    ]
    mask = pick(rng, makers)(rng)
    if isinstance(mask, np.ndarray) and mask.dtype == bool and mask.shape == (num_envs,) and mask.any():
        mask = mask.tolist()  # the first maker is valid as an array: make it a (refused) list
    return mask


def bad_call(rng, num_envs):
    kind = pick(rng, ["step"] * 4 + ["seed"] * 2 + ["options"] * 2)
    if kind == "step":
        actions = bad_vector_actions(rng) if num_envs else bad_single_action(rng)
        return Bad("step", {"actions" if num_envs else "action": actions}, "action")
    if kind == "seed":
        return Bad("reset", {"seed": bad_seed(rng, num_envs)}, "seed")
    return Bad("reset", {"seed": pick(rng, [None, 3]), "options": bad_options(rng, num_envs)}, "options")


# Valid calls, in the many spellings the envs accept.


def valid_single_action(rng):
    a = int(rng.integers(4))
    return pick(rng, [a, np.int64(a), np.uint8(a), np.array(a), np.array([a], dtype=np.int32)])


def valid_vector_actions(rng):
    a = rng.integers(0, 4, size=N)
    return pick(rng, [a, a.astype(np.int8), a.astype(np.uint64), a.tolist(), [np.int32(x) for x in a]])


def valid_reset(rng, num_envs):
    seed = pick(rng, [None, None, int(rng.integers(2**40)), np.int64(rng.integers(1000))])
    if num_envs and rng.random() < 0.3:
        seed = [pick(rng, [None, int(s), np.uint32(s)]) for s in rng.integers(0, 1000, size=num_envs)]
    options = pick(rng, [None, {}])
    if num_envs and rng.random() < 0.4:
        mask = rng.random(num_envs) < 0.5
        mask[rng.integers(num_envs)] = True
        options = {"reset_mask": mask}
    return {"seed": seed, "options": options}


def call(env, method, kwargs):
    if method == "step":
        return env.step(*kwargs.values())
    return env.reset(**kwargs)


def assert_sane(env, result, vector):
    obs = result[0]
    assert obs in env.observation_space
    if len(result) == 5:
        rewards = np.asarray(result[1], dtype=float)
        assert np.isfinite(rewards).all()
        if not vector:
            assert isinstance(result[2], bool) and isinstance(result[3], bool) and math.isfinite(result[1])


def fuzz(env, twin, rng, num_envs):
    """Alternate random bad and valid calls on env; the twin gets only the valid ones."""
    vector = bool(num_envs)
    must_reset = first_reset = True  # must_reset: before the first reset, and (single env) after an episode ends
    bad_calls = 0
    for t in range(CALLS):
        if must_reset and rng.random() < 0.2:  # a well-typed step at the wrong time
            bad = Bad("step", {"a": valid_vector_actions(rng) if vector else valid_single_action(rng)}, "reset")
        elif rng.random() < 0.6:
            bad = bad_call(rng, num_envs)
            if must_reset and bad.method == "step":
                bad.words += ("reset",)  # the env may object to the timing before the action
        else:
            bad = None
        if bad is not None:
            bad_calls += 1
            try:
                call(env, bad.method, bad.kwargs)
            except Exception as err:  # noqa: BLE001  (which exception it is, is what the test checks)
                where = f"call {t}: {bad.method}({bad.kwargs!r}) raised {err!r}"
                assert type(err) in ALLOWED, where  # exactly: not a subclass such as numpy's AxisError
                assert any(word in str(err) for word in bad.words), where
            else:
                pytest.fail(f"call {t}: {bad.method}({bad.kwargs!r}) was accepted")
            continue
        if must_reset or rng.random() < 0.1:
            method, kwargs = "reset", valid_reset(rng, num_envs)
            if first_reset:
                # Unseeded, the two envs would draw different slip streams; and a partial reset_mask
                # is refused before the first full reset.
                kwargs = {"seed": int(rng.integers(2**40)), "options": None}
                first_reset = False
        else:
            method, kwargs = "step", {"a": valid_vector_actions(rng) if vector else valid_single_action(rng)}
        got, want = call(env, method, kwargs), call(twin, method, kwargs)
        assert data_equivalence(got, want, exact=True), f"call {t}: {method}({kwargs!r}): {got} != {want}"
        assert_sane(env, got, vector)
        must_reset = method == "step" and not vector and (got[2] or got[3])
    return bad_calls


@pytest.mark.parametrize("fuzz_seed", [0, 1, 2])
def test_fuzz_single_env(fuzz_seed):
    kwargs = {"layout": SMALL_MAP, "slip_prob": 0.3}
    env, twin = GridWorldEnv(**kwargs), GridWorldEnv(**kwargs)
    assert fuzz(env, twin, np.random.default_rng(fuzz_seed), num_envs=0) > CALLS // 3


@pytest.mark.parametrize("fuzz_seed", [0, 1, 2])
def test_fuzz_vector_env(fuzz_seed):
    kwargs = {"num_envs": N, "layout": SMALL_MAP, "slip_prob": 0.3, "max_episode_steps": 4}
    env, twin = GridWorldVectorEnv(**kwargs), GridWorldVectorEnv(**kwargs)
    assert fuzz(env, twin, np.random.default_rng(fuzz_seed), num_envs=N) > CALLS // 3
