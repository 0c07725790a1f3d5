"""Mixed precision and memory in the update: bf16 autocast keeps log-probs in float32, gradient checkpointing
gives the same loss and gradients. Tests named ``test_cuda_*`` need a GPU (benchmarks/gpu_check.sh runs them
with ``-k cuda``) and skip cleanly without one."""

import pytest
import torch
from text_fixtures import make_lm

import agents.lm
from agents.lm import LMActorCritic
from textenv.text.sampling import SamplingConfig

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def batch(device="cpu", B=3, P=4, T=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 38, (B, P + T), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # a left-padded prompt
    mask[1, -2:] = 0  # a response that ended early
    return ids.to(device), mask.to(device), P


def loss_of(out):
    logprob, entropy, values = out
    return logprob.sum() + 0.1 * values.square().sum() + 0.01 * entropy.sum()


def test_bf16_autocast_path_returns_float32_log_probs(monkeypatch):
    monkeypatch.setattr(agents.lm, "_cpu_has_bf16", lambda: True)  # take the autocast path on any CPU
    ids, mask, P = batch()
    amp = LMActorCritic(make_lm(0), sampling=SamplingConfig(temperature=0.7), device="cpu", mixed_precision=True)
    full = LMActorCritic(make_lm(0), sampling=SamplingConfig(temperature=0.7), device="cpu")
    got, want = amp.score_responses(ids, mask, P), full.score_responses(ids, mask, P)
    for g, w in zip(got, want):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, w, rtol=0.05, atol=0.15)  # bf16 matmuls, float32 normalisation
    logprob = got[0]
    assert bool((logprob <= 0).all())  # a log-sum-exp in bf16 would round some of these above 0


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    ids, mask, P = batch()
    plain = LMActorCritic(make_lm(0), device="cpu")
    ckpt = LMActorCritic(make_lm(0), device="cpu", gradient_checkpointing=True)
    with torch.no_grad():  # a value head that is not zero, so its gradient reaches the trunk
        for head in (plain.value_head, ckpt.value_head):
            head.weight.fill_(0.1)
    calls = {"n": 0}
    ckpt.model.transformer.h[0].attn.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    losses = []
    for policy in (plain, ckpt):
        policy.train()
        loss = loss_of(policy.score_responses(ids, mask, P))
        loss.backward()
        losses.append(loss.detach())
    assert calls["n"] == 2  # the first layer ran again in the backward pass: checkpointing is on
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=1e-6)
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_gradient_checkpointing_is_off_while_acting():
    ckpt = LMActorCritic(make_lm(0), device="cpu", gradient_checkpointing=True)
    ckpt.eval()
    assert not any(m.training for m in ckpt.model.modules())
    ckpt.train()
    assert not any(m.training for m in ckpt.model.modules() if isinstance(m, torch.nn.Dropout))  # dropout stays off


@needs_cuda
def test_cuda_bf16_update_keeps_float32_log_probs():
    ids, mask, P = batch("cuda")
    amp = LMActorCritic(make_lm(0), device="cuda", mixed_precision=True)
    full = LMActorCritic(make_lm(0), device="cuda")
    got, want = amp.score_responses(ids, mask, P), full.score_responses(ids, mask, P)
    for g, w in zip(got, want):
        assert g.dtype == torch.float32 and g.device.type == "cuda"
        torch.testing.assert_close(g, w, rtol=0.05, atol=0.15)
    loss_of(got).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in amp.parameters())


@needs_cuda
def test_cuda_lora_rollout_and_update():
    pytest.importorskip("peft")
    from text_fixtures import PROMPTS, length_reward, make_tokenizer

    from agents.rlhf import LoRAConfig
    from agents.rlhf.responses import collect_responses, score_responses
    from textenv.text.vector import TextGenVectorEnv

    policy = LMActorCritic(make_lm(0), device="cuda", mixed_precision=True, lora=LoRAConfig(r=4),
                           gradient_checkpointing=True)
    env = TextGenVectorEnv(4, model=policy.model, tokenizer=make_tokenizer(), reward=length_reward,
                           prompts=list(PROMPTS), policy=policy, max_new_tokens=5, max_prompt_tokens=6, device="cuda")
    batch_ = collect_responses(env, policy, 0.1, 0, torch.Generator("cuda").manual_seed(0), torch.device("cuda"))
    policy.train()
    logprob, _, _ = score_responses(policy, batch_, torch.arange(4, device="cuda"))
    torch.testing.assert_close(logprob * batch_.response_mask, batch_.logprobs * batch_.response_mask,
                               rtol=0.05, atol=0.1)  # the update scores what the rollout sampled
    logprob.sum().backward()
    assert any(p.grad is not None for n, p in policy.named_parameters() if "lora_" in n)


def test_gradient_checkpointing_setting_must_be_a_flag(tmp_path):
    from agents.rlhf import RLHFConfig, train_rlhf

    with pytest.raises(TypeError, match="gradient_checkpointing must be True or False"):
        train_rlhf(RLHFConfig(gradient_checkpointing="yes", out_dir=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()
