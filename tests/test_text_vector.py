"""TextGenVectorEnv: same results as N single envs (SyncVectorEnv, same-step autoreset), seeding, options."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from text_fixtures import *  # noqa: F403
from text_fixtures import PROMPTS, length_reward, make_lm
from textenv.text.env import TextGenEnv
from textenv.text.vector import TextGenVectorEnv

N = 4


def actions_for(step, n, eos, seed=0):
    """Mostly real words, sometimes EOS, so episodes end at different steps."""
    gen = np.random.default_rng([seed, step])
    acts = gen.integers(3, 38, n)
    acts[gen.random(n) < 0.2] = eos
    return acts


def assert_info_equal(a: dict, b: dict, path="info"):
    assert set(a) == set(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
    for key in a:
        x, y = a[key], b[key]
        where = f"{path}[{key!r}]"
        if isinstance(x, dict):
            assert_info_equal(x, y, where)
        elif key == "final_obs":
            for xo, yo in zip(x, y):
                assert (xo is None) == (yo is None), where
                if xo is not None:
                    for k in xo:
                        np.testing.assert_array_equal(xo[k], yo[k], err_msg=where)
        elif x.dtype == object:
            assert x.tolist() == y.tolist(), where
        else:
            assert x.dtype == y.dtype, f"{where}: {x.dtype} != {y.dtype}"
            np.testing.assert_allclose(x, y, atol=1e-4, rtol=1e-5, err_msg=where)


@pytest.mark.parametrize("with_policy", [False, True])
def test_vector_env_matches_sync_vector_env_of_single_envs(env_kwargs, with_policy):
    kw = dict(env_kwargs, no_eos_penalty=-0.5, kl_coef=0.1)
    if with_policy:
        kw.update(policy=make_lm(seed=11), kl_estimator="k3")
    vec = TextGenVectorEnv(N, **kw)
    ref = SyncVectorEnv([lambda: TextGenEnv(**kw) for _ in range(N)], autoreset_mode=AutoresetMode.SAME_STEP)
    assert vec.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert vec.single_observation_space == ref.single_observation_space
    assert vec.action_space == ref.action_space

    obs_v, info_v = vec.reset(seed=5)
    obs_r, info_r = ref.reset(seed=5)
    for k in obs_v:
        np.testing.assert_array_equal(obs_v[k], obs_r[k])
    assert_info_equal(info_v, info_r)
    ended = 0
    for t in range(20):
        acts = actions_for(t, N, vec.eos_token_id)
        out_v, out_r = vec.step(acts), ref.step(acts)
        for k in out_v[0]:
            np.testing.assert_array_equal(out_v[0][k], out_r[0][k], err_msg=f"obs at step {t}")
        # One batched forward vs N single-row forwards: equal up to float32 rounding.
        np.testing.assert_allclose(out_v[1], out_r[1], atol=1e-4, rtol=1e-5, err_msg=f"rewards at step {t}")
        np.testing.assert_array_equal(out_v[2], out_r[2])
        np.testing.assert_array_equal(out_v[3], out_r[3])
        assert_info_equal(out_v[4], out_r[4])
        ended += int((out_v[2] | out_v[3]).sum())
    assert ended >= N  # autoreset happened, at different steps
    assert out_v[1].dtype == np.float64 and out_v[2].dtype == np.bool_


def test_prompt_cache_saves_forwards_and_changes_no_result(env_kwargs):
    """The reference's remembered prompt prefills give the same rewards and infos as prefilling each time."""
    runs = {}
    for mb in (0.0, 64.0):
        vec = TextGenVectorEnv(N, **dict(env_kwargs, prompt_cache_mb=mb))
        vec.reset(seed=3)
        steps = [vec.step(actions_for(t, N, vec.eos_token_id, seed=1)) for t in range(15)]
        runs[mb] = steps, vec.core.ref_lm.stats
    (plain, plain_stats), (cached, cached_stats) = runs[0.0], runs[64.0]
    for t, (a, b) in enumerate(zip(plain, cached)):
        np.testing.assert_allclose(a[1], b[1], atol=1e-4, rtol=1e-5, err_msg=f"rewards at step {t}")
        assert_info_equal(a[4], b[4])
    assert plain_stats["prompt_hits"] == 0 and cached_stats["prompt_hits"] > 0
    assert cached_stats["forwards"] < plain_stats["forwards"]


def test_make_vec_vector_entry_point(env_kwargs):
    envs = gym.make_vec("TextGen-v0", num_envs=3, vectorization_mode="vector_entry_point", **env_kwargs)
    assert isinstance(envs.unwrapped, TextGenVectorEnv) and envs.num_envs == 3
    obs, info = envs.reset(seed=0)
    assert obs["input_ids"].shape == (3, 12) and obs in envs.observation_space
    obs, r, term, trunc, info = envs.step(np.array([5, 6, 7]))
    assert r.shape == (3,) and info["_ref_logprob"].all()


def test_rows_are_seeded_like_single_envs(env_kwargs):
    vec = TextGenVectorEnv(3, **env_kwargs)
    _, info = vec.reset(seed=10)
    singles = [TextGenEnv(**env_kwargs).reset(seed=10 + i)[1]["prompt"] for i in range(3)]
    assert info["prompt"].tolist() == singles
    _, again = vec.reset(seed=10)
    assert again["prompt"].tolist() == singles
    _, info = vec.reset(seed=[12, None, 10])
    assert info["prompt"][0] == singles[2] and info["prompt"][2] == singles[0]


def test_reset_options_prompts_and_reset_mask(env_kwargs):
    vec = TextGenVectorEnv(3, **env_kwargs)
    obs, info = vec.reset(options={"prompt": "the acting"})
    assert info["prompt"].tolist() == ["the acting"] * 3
    obs, info = vec.reset(options={"prompts": ["the movie", "the acting", [5, 6, 7]]})
    assert info["prompt"][:2].tolist() == ["the movie", "the acting"] and obs["attention_mask"].sum(1).tolist() == [2, 2, 3]
    vec.step(np.array([5, 5, 5]))
    obs, info = vec.reset(options={"reset_mask": np.array([False, True, False]), "prompt": "this story is"})
    assert info["_prompt"].tolist() == [False, True, False]
    assert obs["attention_mask"].sum(1).tolist() == [3, 3, 4]  # rows 0 and 2 kept their episode
    with pytest.raises(ValueError, match="needs 3 prompts"):
        vec.reset(options={"prompts": ["a"]})
    with pytest.raises(ValueError, match="reset_mask"):
        vec.reset(options={"reset_mask": np.array([True])})


def test_final_obs_and_final_info_on_autoreset(env_kwargs):
    vec = TextGenVectorEnv(2, **{**env_kwargs, "reward": length_reward})
    vec.reset(options={"prompt": "the movie"})
    eos = vec.eos_token_id
    obs, r, term, trunc, info = vec.step(np.array([5, eos]))
    assert term.tolist() == [False, True]
    assert info["_final_obs"].tolist() == [False, True] and info["final_obs"][0] is None
    final = info["final_obs"][1]
    assert final["input_ids"][-3:].tolist()[-1] == eos and final["attention_mask"].sum() == 3
    new_prompt = vec.tokenizer(info["prompt"][1])["input_ids"]  # row 1 already restarted from a sampled prompt
    assert info["prompt"][1] in PROMPTS and obs["attention_mask"][1].sum() == len(new_prompt)
    assert obs["input_ids"][1, -len(new_prompt):].tolist() == new_prompt
    fi = info["final_info"]
    assert fi["_rm_score"].tolist() == [False, True] and fi["rm_score"][1] == 0.0 and fi["completion"][1] == ""
    assert info["_ref_logprob"].tolist() == [True, False] and info["_prompt"].tolist() == [False, True]


def test_vector_bad_inputs(env_kwargs):
    vec = TextGenVectorEnv(2, **env_kwargs)
    with pytest.raises(RuntimeError, match="call reset"):
        vec.step(np.array([5, 5]))
    vec.reset(seed=0)
    with pytest.raises(ValueError, match=r"action 64 \(row 1\) is not a token id"):
        vec.step(np.array([5, 64]))
    with pytest.raises(ValueError, match=r"expected 2 actions"):
        vec.step(np.array([5]))


def test_render_ansi(env_kwargs):
    vec = TextGenVectorEnv(2, **env_kwargs, render_mode="ansi")
    vec.reset(options={"prompts": ["the movie", "the acting"]})
    assert vec.render() == ("the movie[]", "the acting[]")
