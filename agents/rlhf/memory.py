"""What an RLHF run holds in memory, estimated before it starts (printed by train_rlhf when log_every > 0).

RLHF keeps up to four models at once (the policy, the frozen reference, the reward model and the critic)
plus the optimizer state and the KV caches of the rollout; that is the first wall users hit. The estimate
counts, from the objects themselves:

- parameters of each model, each tensor once (tied embeddings, a reference that is the policy's own module
  as with LoRA or policy = reference, add nothing);
- gradients: one per trainable parameter, in its dtype;
- Adam's state: two moments per trainable parameter in float32 (2 x trainable x 4 bytes);
- the KV cache at the configured batch, per model that keeps one while acting (the policy, the reference
  unless it shares the policy's runner, a separate critic trunk): num_envs x (max_prompt_tokens +
  max_new_tokens) x layers x 2 (keys, values) x key-value width x bytes per element.

Activations of the update are not included: they depend on the minibatch and gradient checkpointing.
"""

from __future__ import annotations

import torch
from torch import nn

MB = 2**20


def _unique(params, seen: set) -> list[torch.Tensor]:
    out = []
    for p in params:
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            out.append(p)
    return out


def _nbytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def kv_cache_bytes(model: nn.Module, rows: int, tokens: int) -> int:
    """Bytes of a full KV cache of ``rows`` sequences of ``tokens`` tokens for a transformers model."""
    cfg = model.config
    layers = next(getattr(cfg, k) for k in ("num_hidden_layers", "n_layer", "n_layers") if hasattr(cfg, k))
    hidden = next(getattr(cfg, k) for k in ("hidden_size", "n_embd", "d_model", "dim") if hasattr(cfg, k))
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None)
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    width = hidden * kv_heads // heads if heads else hidden  # grouped-query attention keeps fewer heads
    element = next(model.parameters()).element_size()
    return rows * tokens * layers * 2 * width * element


def _reward_module(reward_fn, depth: int = 3) -> nn.Module | None:
    """The sequence-classification model behind the env's reward function, if there is one."""
    if isinstance(reward_fn, nn.Module) or reward_fn is None or depth == 0:
        return reward_fn if isinstance(reward_fn, nn.Module) else None
    for name in ("model", "fn", "scorer", "reward"):
        found = _reward_module(getattr(reward_fn, name, None), depth - 1)
        if found is not None:
            return found
    return None


def memory_estimate(policy: nn.Module, env, config) -> dict:
    """Bytes of each part of an RLHF run (see the module docstring); ``total`` sums them.

    Args:
        policy: the trained policy (an ``LMActorCritic`` or any ``nn.Module``).
        env: the training ``TextGenVectorEnv`` (or a wrapper): its reference, reward model and batch.
        config: the ``RLHFConfig`` (``num_envs``, ``env.max_prompt_tokens``, ``env.max_new_tokens``).
    """
    core = env.unwrapped.core
    seen: set = set()
    lm = getattr(policy, "model", None)
    trunk = getattr(policy, "critic_trunk", None)
    head = getattr(policy, "value_head", None)
    policy_lm = _unique(lm.parameters(), seen) if isinstance(lm, nn.Module) else []
    critic = _unique([p for m in (trunk, head) if m is not None for p in m.parameters()], seen)
    rest = _unique(policy.parameters(), seen)  # a user's own ActorCritic: all of it
    reference = _unique(core.ref_model.parameters(), seen)
    rm = _reward_module(core.reward_fn)
    reward = _unique(rm.parameters(), seen) if rm is not None else []
    trainable = [p for p in _unique(policy.parameters(), set()) if p.requires_grad]

    tokens = config.env.max_prompt_tokens + config.env.max_new_tokens
    rows = config.num_envs
    kv = {}
    if isinstance(lm, nn.Module) and hasattr(policy, "next_token_logits"):
        kv["policy"] = kv_cache_bytes(lm, rows, tokens)
    if core.ref_lm is not getattr(policy, "incremental", None):  # not the policy's own runner: a cache of its own
        kv["reference"] = kv_cache_bytes(core.ref_model, rows, tokens)
    if trunk is not None:
        kv["critic"] = kv_cache_bytes(trunk, rows, tokens)
    est = {
        "policy_params": _nbytes(policy_lm) + _nbytes(rest),
        "reference_params": _nbytes(reference),
        "reward_params": _nbytes(reward),
        "critic_params": _nbytes(critic),
        "gradients": _nbytes(trainable),
        "optimizer": 2 * sum(p.numel() for p in trainable) * 4,
        "kv_cache": sum(kv.values()),
        "kv_cache_by_model": kv,
        "trainable_params": sum(p.numel() for p in trainable),
    }
    est["total"] = sum(v for k, v in est.items() if k not in ("kv_cache_by_model", "trainable_params"))
    return est


def format_memory_estimate(est: dict) -> str:
    """The estimate as the lines train_rlhf prints at the start."""
    parts = [("policy", "policy_params"), ("reference (extra)", "reference_params"), ("reward model", "reward_params"),
             ("critic (head, trunk)", "critic_params"), ("gradients", "gradients"), ("Adam state", "optimizer")]
    lines = [f"memory estimate (activations of the update not included): {est['total'] / MB:.1f} MB"]
    lines += [f"  {name:22s} {est[key] / MB:9.1f} MB" for name, key in parts]
    kv = ", ".join(f"{k} {v / MB:.1f}" for k, v in est["kv_cache_by_model"].items()) or "none"
    lines.append(f"  {'KV cache':22s} {est['kv_cache'] / MB:9.1f} MB ({kv})")
    lines.append(f"  trainable parameters: {est['trainable_params']:,}")
    return "\n".join(lines)
