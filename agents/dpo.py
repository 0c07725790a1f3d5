"""Direct preference optimisation (Rafailov et al. 2023): the simpler alternative the course notes name.

    from agents.dpo import DPOConfig, train_dpo
    result = train_dpo(DPOConfig(beta=0.1))        # the embedded SFT model on the shipped preference pairs

No reward model, no rollouts: the policy (a copy of the SFT model) learns the preference pairs directly
with the pairwise loss on its implicit reward ``beta * (log pi(y|x) - log pi_ref(y|x))``
(``agents.functional.dpo_loss``), the SFT model frozen as the reference. The policy is an ``LMActorCritic``
(its value head unused), so the RLHF evaluation (``agents.rlhf.evaluate_policy``), sampling and saving apply
unchanged; each response is scored with one forward (``LMActorCritic.score_responses``, position ids
counted from each row's first real token), so left padding does not shift a row's positions.

A pair is laid out as the env lays out a response: the prompt encoded as the env encodes it (the
tokenizer's special tokens, cut from the left to ``max_prompt_tokens``), then the response's tokens as
they follow the prompt in ``prompt + response``, cut to ``max_response_tokens``, with EOS appended when
the response was not cut (the SFT model and the env end a response with EOS).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from agents import functional as F
from agents.lm import LMActorCritic
from agents.utils import seed_everything
from rlcore.checks import check_int
from rlcore.device import resolve_device
from textenv.text.config import TextGenConfig
from textenv.text.loading import load_tokenizer
from textenv.text.prompts import PromptEncoder


@dataclass
class DPOConfig:
    """One DPO run: the models, the pairs, and the optimisation."""

    model: Any = None
    """the SFT causal LM (name, path or module) the policy starts from and the reference stays; None: the embedded one"""
    tokenizer: Any = None
    """the model's tokenizer (object, name or path); None: the one saved with the model"""
    pairs: Any = None
    """preference pairs (anything ``textenv.preferences.load_preferences`` reads); None: the default task's train split"""
    beta: float = 0.1
    """the implicit reward's scale: larger keeps the policy closer to the reference (TRL's default 0.1)"""
    learning_rate: float = 3e-4
    """Adam's step size, decayed linearly to 0 over the run (on the default task 1e-4 under-fits and 1e-3
    collapses the policy; examples/compare_algorithms.py)"""
    epochs: int = 1
    """passes over the pairs"""
    batch_size: int = 64
    """pairs per optimizer step"""
    max_prompt_tokens: int = TextGenConfig.max_prompt_tokens
    """the prompt budget, cut from the left as the env cuts it (the env's default budget)"""
    max_response_tokens: int = 48
    """the response budget (the shipped pairs were sampled with at most 48 new tokens)"""
    max_grad_norm: float = 1.0
    """gradient clipping"""
    seed: int = 0
    """seeds the pair order"""
    device: str = "auto"
    """where the policy and the reference run"""
    log_every: int = 0
    """print a line every this many steps (0: silent)"""

    def check(self) -> None:
        """Raise ValueError / TypeError on settings that cannot run, before any work."""
        for name in ("epochs", "batch_size", "max_prompt_tokens", "max_response_tokens"):
            check_int(name, getattr(self, name))
        for name in ("beta", "learning_rate", "max_grad_norm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass
class DPOResult:
    policy: LMActorCritic
    history: list[dict]
    """one row per optimizer step: step, pairs, loss, accuracy, reward_margin, chosen_reward, rejected_reward"""
    train_s: float


def encode_pairs(tokenizer, pairs, vocab_size: int, max_prompt_tokens: int, max_response_tokens: int) -> list:
    """(prompt ids, chosen ids, rejected ids) per pair, laid out as the env lays out a response (module doc)."""
    encode_prompt = PromptEncoder(tokenizer, vocab_size, max_prompt_tokens)
    eos = tokenizer.eos_token_id

    def response_ids(prompt: str, response: str) -> list[int]:
        full = tokenizer(prompt + response)["input_ids"]
        alone = tokenizer(prompt)["input_ids"]
        # The response's tokens as they follow the prompt (a leading space tokenizes with its word); when
        # the join re-tokenizes the prompt's end, the response alone.
        ids = full[len(alone):] if full[:len(alone)] == alone else tokenizer(response, add_special_tokens=False)["input_ids"]
        return ids[:max_response_tokens] if len(ids) >= max_response_tokens or eos is None else ids + [eos]

    out = []
    for row in pairs:
        prompt_ids, _ = encode_prompt(row["prompt"])
        out.append((prompt_ids, response_ids(row["prompt"], row["chosen"]), response_ids(row["prompt"], row["rejected"])))
    return out


def layout(prompts: list[list[int]], responses: list[list[int]], pad_id: int, device) -> tuple:
    """ids, mask (B, P + T): prompts left-padded to P columns, responses right-padded to T; and P."""
    P, T = max(map(len, prompts)), max(max(map(len, responses)), 1)
    ids = torch.full((len(prompts), P + T), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids[i, P - len(p):P], mask[i, P - len(p):P] = torch.tensor(p), 1
        ids[i, P:P + len(r)], mask[i, P:P + len(r)] = torch.tensor(r, dtype=torch.long), 1
    return ids.to(device), mask.to(device), P


def sequence_logprobs(model: LMActorCritic, rows: list[tuple], pad_id: int, device) -> torch.Tensor:
    """(2B,) log pi of the chosen responses (first B) and the rejected ones (last B), summed over tokens."""
    prompts = [r[0] for r in rows] * 2
    responses = [r[1] for r in rows] + [r[2] for r in rows]
    ids, mask, P = layout(prompts, responses, pad_id, device)
    logprob, _, _ = model.score_responses(ids, mask, P)
    return (logprob * mask[:, P:]).sum(1)


def train_dpo(config: DPOConfig) -> DPOResult:
    """Train a copy of the SFT model on the preference pairs with DPO; returns the policy and the curve.

    Args:
        config: the models, the pairs and the optimisation.

    Returns:
        The trained policy (in eval mode), one history row per optimizer step, and the training seconds.

    Raises:
        ValueError / TypeError: settings that cannot run or pairs without prompt / chosen / rejected
            (checked before any model trains).
        FloatingPointError: the loss became NaN or infinite.
    """
    # 1. the pairs, the policy (a copy of the SFT model) and the reference (a frozen copy of the policy)
    config.check()
    pairs, model = _pairs_and_model(config)
    seed_everything(config.seed)
    device = resolve_device(config.device)
    policy = LMActorCritic(copy.deepcopy(model) if isinstance(model, torch.nn.Module) else model, device=device)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    tokenizer = load_tokenizer(config.tokenizer, model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = encode_pairs(tokenizer, pairs, policy.model.config.vocab_size, config.max_prompt_tokens,
                        config.max_response_tokens)

    # 2. the reference's log-probs never change: computed once per pair
    start = time.perf_counter()
    ref = _reference_logprobs(reference, rows, pad_id, device)  # (2, N): chosen, rejected

    # 3. epochs of shuffled minibatches on the DPO loss, the step size decayed linearly to 0
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate, eps=1e-5)
    steps_per_epoch = math.ceil(len(rows) / config.batch_size)
    total, history = config.epochs * steps_per_epoch, []
    order = torch.Generator().manual_seed(config.seed)
    policy.train()
    for epoch in range(config.epochs):
        for batch in torch.randperm(len(rows), generator=order).chunk(steps_per_epoch):
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate * (1.0 - len(history) / total)
            logp = sequence_logprobs(policy, [rows[i] for i in batch], pad_id, device).view(2, -1)
            loss, info = F.dpo_loss(logp[0], logp[1], ref[0, batch.to(ref.device)], ref[1, batch.to(ref.device)],
                                    config.beta)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"DPO loss became {loss.item()} at step {len(history) + 1}: lower the "
                                         "learning rate or check the pairs")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()
            history.append({"step": len(history) + 1, "epoch": epoch + 1, "pairs": (len(history) + 1) * config.batch_size,
                            "loss": loss.item(), **{k: v.item() for k, v in info.items()}})
            if config.log_every and len(history) % config.log_every == 0:
                _print_step(history[-1], total)
    policy.eval()
    return DPOResult(policy, history, time.perf_counter() - start)


def _pairs_and_model(config: DPOConfig) -> tuple:
    """The run's preference pairs and SFT model, the default task's where ``config`` names none.

    Returns:
        ``(pairs, model)``: the loaded pairs, and the model as given (a module, a name or a path).
    """
    from textenv.preferences import load_preferences

    if config.pairs is None:
        from textenv.default import preferences

        pairs = preferences("train")
    else:
        pairs = load_preferences(config.pairs)
    model = config.model
    if model is None:
        from textenv.default import sft_path

        model = sft_path()
    return pairs, model


@torch.no_grad()
def _reference_logprobs(reference: LMActorCritic, rows: list[tuple], pad_id: int, device,
                        batch_size: int = 256) -> torch.Tensor:
    """(2, N) the reference's summed log-probs of every pair: chosen responses in row 0, rejected in row 1."""
    return torch.cat([sequence_logprobs(reference, rows[i:i + batch_size], pad_id, device).view(2, -1)
                      for i in range(0, len(rows), batch_size)], dim=1)


def _print_step(row: dict, total: int) -> None:
    """One log line of a history row."""
    print(f"dpo step {row['step']:4d}/{total}  loss {row['loss']:.3f}  accuracy {row['accuracy']:.2f}  "
          f"margin {row['reward_margin']:+.3f}", flush=True)
