"""TextGenConfig: one frozen dataclass of the task's settings, built by gym.make, filled from the registry."""

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from text_fixtures import *  # noqa: F401,F403
from text_fixtures import PROMPTS, length_reward

import textenv  # noqa: F401  (registers TextGen-v0)
from agents.rlhf import RLHFConfig
from agents.rlhf.config import check_same_settings, run_settings
from textenv import default
from textenv.text.config import TextGenConfig, make_config, registered_config
from textenv.text.core import TextGenCore
from textenv.text.env import TextGenEnv
from textenv.text.vector import TextGenVectorEnv


def tiny(lm_dir, **kw) -> TextGenConfig:
    return TextGenConfig(model=str(lm_dir), reward=length_reward, prompts=list(PROMPTS), max_new_tokens=4,
                         max_prompt_tokens=6, device="cpu", **kw)


def test_the_config_is_frozen_and_derives_the_lengths():
    config = TextGenConfig(max_new_tokens=7, max_prompt_tokens=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_new_tokens = 8
    assert config.seq_len == 12 and config.n_steps == 7


def test_gym_make_builds_the_config_from_its_keywords_on_the_registered_task():
    env = gym.make("TextGen-v0", max_new_tokens=5, kl_coef=0.3)
    config = env.unwrapped.config
    assert (config.max_new_tokens, config.kl_coef) == (5, 0.3)
    assert config.model == str(default.ARTIFACTS_DIR / "sft") and config.reward == str(default.ARTIFACTS_DIR / "reward")
    assert env.observation_space["input_ids"].shape == (config.max_prompt_tokens + 5,)
    assert env.unwrapped.kl_coef == 0.3


def test_gym_make_takes_a_whole_config_and_fills_only_what_it_leaves_none(lm_dir):
    env = gym.make("TextGen-v0", config=tiny(lm_dir))
    assert env.unwrapped.config == tiny(lm_dir)
    obs, _ = env.reset(seed=0)
    assert obs["input_ids"].shape == (10,)
    partial = make_config(TextGenConfig(max_new_tokens=3))  # model, reward, prompts: the registered task's
    assert partial.max_new_tokens == 3
    assert (partial.model, partial.reward, partial.prompts) == (registered_config().model, registered_config().reward,
                                                                registered_config().prompts)


def test_vector_env_takes_num_envs_then_the_config_and_keywords_replace_its_fields(lm_dir):
    envs = TextGenVectorEnv(3, tiny(lm_dir), max_new_tokens=2)
    assert envs.num_envs == 3 and envs.config.max_new_tokens == 2 and envs.config.max_prompt_tokens == 6
    envs.reset(seed=0)
    word = np.full(3, 5)  # a word, never EOS: every episode runs to max_new_tokens
    assert 5 != envs.eos_token_id
    _, _, terminated, truncated, _ = envs.step(word)
    assert not (terminated | truncated).any()
    _, _, terminated, truncated, _ = envs.step(word)
    assert truncated.all() and not terminated.any()  # the config's n_steps steps hold one whole response


def test_an_unknown_setting_is_a_type_error_that_lists_the_fields():
    with pytest.raises(TypeError, match="unknown TextGen-v0 setting.*'max_new_token'.*max_new_tokens"):
        TextGenEnv(max_new_token=3)
    with pytest.raises(TypeError, match="config must be a TextGenConfig"):
        TextGenEnv(config={"max_new_tokens": 3})


def test_the_core_knows_no_default_task():
    with pytest.raises(ValueError, match="config.model is None: the core has no default task"):
        TextGenCore(TextGenConfig())


def test_bad_settings_fail_before_any_model_loads(lm_dir):
    # a path that does not exist would fail at loading: the cheap checks must fire first
    broken = TextGenConfig(model="/nonexistent/model", reward=length_reward, prompts=list(PROMPTS))
    for field, value, match in [("max_new_tokens", 0, "max_new_tokens"), ("kl_estimator", "k9", "unknown kl_estimator"),
                                ("kl_coef", -1.0, "kl_coef"), ("stop_at_eos", "yes", "stop_at_eos")]:
        with pytest.raises((ValueError, TypeError), match=match):
            TextGenEnv(broken, **{field: value})


def test_rlhf_config_takes_the_task_and_beta_starts_at_its_kl_coef():
    config = RLHFConfig(env=TextGenConfig(kl_coef=0.2), num_envs=8)
    assert config.kl.controller(config.env.kl_coef).value == 0.2
    settings = run_settings(config)
    assert settings["env.kl_coef"] == 0.2 and settings["num_envs"] == 8 and "kl.init_coef" not in settings
    with pytest.raises(TypeError, match="env must be a textenv.text.config.TextGenConfig"):
        RLHFConfig(env={"kl_coef": 0.2}).check()


def test_a_checkpoint_with_the_old_setting_names_still_resumes_and_differences_are_named():
    now = run_settings(RLHFConfig(env=TextGenConfig(kl_coef=0.2), num_envs=8))
    old = {("kl.init_coef" if k == "env.kl_coef" else "env.num_envs" if k == "num_envs" else k): v for k, v in now.items()}
    check_same_settings(old, now, "ckpt")  # the same run, recorded under the names before TextGenConfig
    with pytest.raises(ValueError, match=r"env.kl_coef \(checkpoint 0.1, now 0.2\)"):
        check_same_settings({**old, "kl.init_coef": 0.1}, now, "ckpt")
