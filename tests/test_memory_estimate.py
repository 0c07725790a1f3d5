"""agents.rlhf.memory: the memory estimate printed at the start, checked on hand-counted numbers of a tiny GPT-2."""

import pytest
from text_fixtures import *  # noqa: F401,F403
from text_fixtures import PROMPTS, length_reward, make_lm, make_tokenizer

from agents.lm import LMActorCritic
from agents.rlhf import RLHFConfig, make_env, make_policy, rlhf_ppo_config, train_rlhf
from agents.rlhf.memory import format_memory_estimate, memory_estimate
from textenv.text.config import TextGenConfig
from textenv.text.sampling import SamplingConfig
from textenv.text.vector import TextGenVectorEnv

# The fixtures' GPT-2: vocabulary 64, 64 positions, 32 wide, 2 layers; the LM head is tied to the embedding.
H, V, P, LAYERS = 32, 64, 64, 2
PER_LAYER = 2 * H + (H * 3 * H + 3 * H) + (H * H + H) + 2 * H + (H * 4 * H + 4 * H) + (4 * H * H + H)
LM_PARAMS = V * H + P * H + LAYERS * PER_LAYER + 2 * H  # 29568: the tied head is not counted twice
VALUE_HEAD = H + 1
ROWS, PROMPT, NEW = 4, 6, 5
KV = ROWS * (PROMPT + NEW) * LAYERS * 2 * H * 4  # float32 keys and values


def config(lm_dir, rm_dir=None, **kw):
    env = TextGenConfig(model=str(lm_dir), reward=str(rm_dir) if rm_dir else length_reward, prompts=list(PROMPTS),
                        max_new_tokens=NEW, max_prompt_tokens=PROMPT, device="cpu")
    return RLHFConfig(env=env, num_envs=ROWS, device="cpu", responses=ROWS, ppo=rlhf_ppo_config(n_epochs=1, n_minibatches=1), **kw)


def test_full_fine_tune_counts_four_models_gradients_adam_and_two_caches(lm_dir, rm_dir):
    assert LM_PARAMS == 29568
    cfg = config(lm_dir, rm_dir)
    policy = make_policy(cfg, SamplingConfig())
    est = memory_estimate(policy, make_env(cfg, policy), cfg)
    assert est["policy_params"] == LM_PARAMS * 4
    assert est["critic_params"] == VALUE_HEAD * 4
    assert est["reference_params"] == LM_PARAMS * 4  # a second copy, loaded by the env
    assert est["reward_params"] == (LM_PARAMS + H * 1) * 4  # the tiny GPT-2 classifier: trunk + a 1-label score
    assert est["trainable_params"] == LM_PARAMS + VALUE_HEAD
    assert est["gradients"] == (LM_PARAMS + VALUE_HEAD) * 4
    assert est["optimizer"] == 2 * (LM_PARAMS + VALUE_HEAD) * 4
    assert est["kv_cache_by_model"] == {"policy": KV, "reference": KV}
    parts = ("policy_params", "reference_params", "reward_params", "critic_params", "gradients", "optimizer", "kv_cache")
    assert est["total"] == sum(est[k] for k in parts)


def test_lora_reference_costs_no_parameters(lm_dir):
    pytest.importorskip("peft")
    from agents.rlhf import LoRAConfig

    cfg = config(lm_dir, lora=LoRAConfig(r=4, alpha=8))
    policy = make_policy(cfg, SamplingConfig())
    est = memory_estimate(policy, make_env(cfg, policy), cfg)
    lora = LAYERS * (4 * H + 3 * H * 4)  # c_attn: A (r, 32) and B (96, r) per layer
    assert est["reference_params"] == 0 and est["reward_params"] == 0  # a Python reward function
    assert est["policy_params"] == (LM_PARAMS + lora) * 4
    assert est["trainable_params"] == lora + VALUE_HEAD
    assert est["optimizer"] == 2 * (lora + VALUE_HEAD) * 4
    assert est["kv_cache_by_model"] == {"policy": KV, "reference": KV}  # adapter on and off: two caches


def test_policy_that_is_the_reference_shares_one_cache():
    model = make_lm(0)
    policy = LMActorCritic(model, device="cpu")
    env = TextGenVectorEnv(ROWS, model=model, tokenizer=make_tokenizer(), reward=length_reward, prompts=list(PROMPTS),
                           policy=policy, max_new_tokens=NEW, max_prompt_tokens=PROMPT, device="cpu")
    cfg = RLHFConfig(env=TextGenConfig(max_new_tokens=NEW, max_prompt_tokens=PROMPT), num_envs=ROWS)
    est = memory_estimate(policy, env, cfg)
    assert est["reference_params"] == 0 and est["kv_cache_by_model"] == {"policy": KV}


def test_train_rlhf_prints_the_estimate_when_logging(lm_dir, capsys):
    train_rlhf(config(lm_dir, log_every=1))
    out = capsys.readouterr().out
    assert "memory estimate" in out and "Adam state" in out and "KV cache" in out
    assert f"{LM_PARAMS + VALUE_HEAD:,}" in out  # the trainable parameters


def test_format_lists_every_part():
    est = {"policy_params": 2**20, "reference_params": 0, "reward_params": 3 * 2**20, "critic_params": 0,
           "gradients": 2**20, "optimizer": 2 * 2**20, "kv_cache": 2**19, "kv_cache_by_model": {"policy": 2**19},
           "trainable_params": 1000, "total": 7.5 * 2**20}
    text = format_memory_estimate(est)
    assert "7.5 MB" in text and "policy 0.5" in text and "1,000" in text
