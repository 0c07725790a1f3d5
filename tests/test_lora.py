"""LoRA policies: only the adapter and value head train, the reference is the base model with the adapter off
(no second copy of the LM), its cache never mixes adapter-on and adapter-off results, and checkpoints keep
the adapter so that a resume continues the curve."""

import numpy as np
import pytest
import torch
from text_fixtures import *  # noqa: F401,F403
from text_fixtures import PROMPTS, length_reward, make_lm, make_tokenizer

from agents.checkpoint import load_checkpoint
from agents.lm import LMActorCritic
from agents.rlhf.checkpoint import CHECKPOINT_FORMAT
from agents.rlhf import KLConfig, LoRAConfig, RLHFConfig, make_env, rlhf_ppo_config, train_rlhf
from textenv.text.config import TextGenConfig
from textenv.text.sampling import SamplingConfig
from textenv.text.vector import TextGenVectorEnv

pytest.importorskip("peft")


def lora_policy(seed=0, **kw):
    return LMActorCritic(make_lm(seed), sampling=SamplingConfig(), device="cpu", lora=LoRAConfig(r=4, alpha=8), **kw)


def grow_adapter(policy):
    """Move the adapter away from zero (B starts at 0, so a fresh adapter changes nothing)."""
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p) * 0.5)


def test_only_the_adapter_and_value_head_train():
    policy = lora_policy()
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("value_head") for n in trainable)
    assert any(n.startswith("value_head") for n in trainable)
    # GPT-2's default target is c_attn (a Conv1D): the adapted layers are there, with the base weights frozen
    assert any("c_attn" in n and "lora_A" in n for n in trainable)


def test_reference_is_the_base_model_with_the_adapter_off_and_never_mixed():
    base = make_lm(0).eval()
    policy = lora_policy()
    grow_adapter(policy)
    env = TextGenVectorEnv(2, model=policy.model, tokenizer=make_tokenizer(), reward=length_reward,
                           prompts=list(PROMPTS), policy=policy, max_new_tokens=4, max_prompt_tokens=6, device="cpu")
    assert env.core.ref_model is policy.model  # no second copy of the LM
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        ids, mask = (torch.as_tensor(obs[k]) for k in ("input_ids", "attention_mask"))
        logits, _ = policy({"input_ids": ids, "attention_mask": mask})  # the adapter on: the policy acts
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        want_ref = base(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
        want_pol = policy.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
        got_ref = env.core.ref_lm(ids, mask).logits
        torch.testing.assert_close(got_ref, want_ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(policy.next_token_logits(ids, mask), want_pol, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(got_ref, want_pol, atol=1e-3)  # the adapter matters here
        action = torch.distributions.Categorical(logits=logits).sample()
        obs, _, _, _, info = env.step(action.numpy())
        kl = np.asarray(info["kl"])
        assert np.all(np.isfinite(kl)) and np.any(np.abs(kl) > 1e-4)


def test_adapter_update_keeps_the_references_remembered_prompts():
    policy = lora_policy()
    env = TextGenVectorEnv(2, model=policy.model, tokenizer=make_tokenizer(), reward=length_reward,
                           prompts=list(PROMPTS), policy=policy, max_new_tokens=3, max_prompt_tokens=6, device="cpu")
    env.reset(seed=0)
    env.step(np.array([5, 6]))
    remembered = len(env.core.ref_lm.remembered_prompts)
    assert remembered > 0
    grow_adapter(policy)  # the adapter changes in place, the base weights do not
    env.reset(seed=1)
    env.step(np.array([5, 6]))
    assert len(env.core.ref_lm.remembered_prompts) >= remembered  # still there: keyed on the frozen base weights


def test_make_env_hands_the_policys_module_as_reference(lm_dir):
    config = RLHFConfig(env=TextGenConfig(model=str(lm_dir), reward=length_reward, prompts=list(PROMPTS),
                                          max_new_tokens=3, max_prompt_tokens=6, device="cpu"),
                        num_envs=2, lora=LoRAConfig(r=2), device="cpu")
    from agents.rlhf import make_policy

    policy = make_policy(config, SamplingConfig())
    env = make_env(config, policy)
    assert env.core.ref_model is policy.model
    assert sum(p.numel() for p in env.core.ref_model.parameters()) == sum(p.numel() for p in policy.model.parameters())


def lora_config(lm_dir, tmp_path, **kw):
    env = TextGenConfig(model=str(lm_dir), reward=length_reward, prompts=list(PROMPTS), max_new_tokens=5,
                        max_prompt_tokens=6, kl_coef=0.1, device="cpu")
    return RLHFConfig(env=env, num_envs=4, kl=KLConfig(target=1.0, horizon=20.0), lora=LoRAConfig(r=4, alpha=8),
                      ppo=rlhf_ppo_config(n_minibatches=2, n_epochs=2, learning_rate=1e-2), device="cpu",
                      out_dir=str(tmp_path / "run"), checkpoint_every=1, seed=3, responses=12, **kw)


def test_lora_checkpoint_holds_the_adapter_and_resume_continues(lm_dir, tmp_path):
    full = train_rlhf(lora_config(lm_dir, tmp_path / "a")).history
    stop = lambda agent, metrics: False if agent.iteration == 2 else None  # noqa: E731
    train_rlhf(lora_config(lm_dir, tmp_path / "b"), callback=stop)
    saved = load_checkpoint(tmp_path / "b" / "run" / "checkpoint.pt", CHECKPOINT_FORMAT)["policy"]
    assert saved and all("lora_" in k or k.startswith("value_head") for k in saved)  # not the frozen LM
    resumed = train_rlhf(lora_config(lm_dir, tmp_path / "b", resume=True)).history
    assert [h["iteration"] for h in resumed] == [1, 2, 3]
    for key in ("rm_score", "kl", "policy_loss", "value_loss"):
        np.testing.assert_allclose([h[key] for h in resumed], [h[key] for h in full], rtol=1e-5, atol=1e-6,
                                   err_msg=key)
    assert any(abs(h["kl"]) > 0 for h in full)  # the adapter trained away from the reference


def test_adapter_that_does_not_fit_is_refused():
    policy = lora_policy()
    state = policy.trainable_state_dict()
    other = LMActorCritic(make_lm(0), device="cpu", lora=LoRAConfig(r=2, target_modules=["c_proj"]))
    with pytest.raises(RuntimeError, match="does not fit this LoRA policy"):
        other.load_trainable_state_dict(state)


@pytest.mark.parametrize("lora, match", [
    (LoRAConfig(r=0), "lora.r"),
    (LoRAConfig(alpha=-1.0), "lora.alpha"),
    (LoRAConfig(dropout=1.5), "lora.dropout"),
    (LoRAConfig(target_modules=[]), "target_modules"),
    ({"r": 8}, "LoRAConfig"),
])
def test_bad_lora_settings_are_refused_before_any_work(lm_dir, tmp_path, lora, match):
    config = lora_config(lm_dir, tmp_path)
    config.lora = lora
    with pytest.raises((ValueError, TypeError), match=match):
        train_rlhf(config)
    assert not (tmp_path / "run").exists()


def test_lora_with_a_separate_critic_is_refused(lm_dir, tmp_path):
    with pytest.raises(ValueError, match="critic='shared'"):
        train_rlhf(lora_config(lm_dir, tmp_path, critic="separate"))
    with pytest.raises(ValueError, match="critic='shared'"):
        LMActorCritic(make_lm(0), device="cpu", critic="separate", lora=LoRAConfig())


def test_unknown_target_module_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot add LoRA to GPT2LMHeadModel"):
        LMActorCritic(make_lm(0), device="cpu", lora=LoRAConfig(target_modules=["no_such_layer"]))
