"""The RLHF rollout: whole responses, one row each, gathered from a TextGen vector env.

A rollout resets every row of the env with a fresh prompt, then steps it token by token until every row has
ended one response (EOS or ``max_new_tokens``). Row ``i`` of the result is response ``i`` from its first
token to its last: its per-token log-probabilities, values, rewards and KL, in the layout the update scores
with one forward per response (prompt left-padded to P columns, then the response right-padded to T).

A row that ends early keeps being stepped by the env's same-step autoreset (it starts its next prompt) until
the longest response of the batch ends; those partial responses are dropped when the next rollout resets
the env. ``Responses.generated_tokens`` counts them (the cost), ``tokens`` only the kept ones (TRL's batched
``generate`` pays the same: finished rows are padded until the longest is done).

The env pays the reward (``r_t = -beta * KL_t``, plus the score on the last token) with the beta handed to it
at this reset (``options={"kl_coef": beta}``): the caller's KL controller is its one owner. A policy without
``next_token_logits`` runs in mode (b): the env pays ``+beta * log pi_ref`` and the collector adds
``-beta * log pi`` itself, so both modes pay ``-beta * k1`` per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from agents.lm import env_sampling
from agents.policies import ActorCritic
from agents.utils import to_tensor
from textenv.text.wrappers import step_values


@dataclass
class Responses:
    """B whole responses and what the rollout measured on each of their tokens."""

    ids: Tensor
    """(B, P + T) the prompt, left-padded to P columns, then the response, right-padded to T columns"""
    mask: Tensor
    """(B, P + T) attention mask of ``ids``"""
    prompt_cols: int
    """P: the columns of the prompt block"""
    obs_width: int
    """L: the width of the env's observations (max_prompt_tokens + max_new_tokens)"""
    response_mask: Tensor
    """(B, T) 1 on the generated tokens (a prefix of each row)"""
    logprobs: Tensor
    """(B, T) log pi_old(a_t | s_t) under the env's sampling distribution"""
    values: Tensor
    """(B, T) V(s_t) of the rollout's critic"""
    rewards: Tensor
    """(B, T) what each token was paid: -beta * KL_t, plus the reward score on the last one"""
    kl: Tensor
    """(B, T) the per-token KL to the reference (the env's estimate in mode a, k1 in mode b)"""
    ref_logprobs: Tensor
    """(B, T) log pi_ref(a_t | s_t) of the frozen reference (GRPO's KL term reads it)"""
    scores: np.ndarray
    """(B,) the reward model's score of each response"""
    prompts: list[str]
    texts: list[str]
    """the decoded responses"""
    kl_coef: float
    """the beta the rewards were paid with"""
    generated_tokens: int
    """tokens the rollout generated, the dropped partial responses of early-finished rows included"""

    @property
    def actions(self) -> Tensor:
        """(B, T) the response tokens (padding where ``response_mask`` is 0)."""
        return self.ids[:, self.prompt_cols:]

    @property
    def lengths(self) -> Tensor:
        return self.response_mask.sum(1).long()

    @property
    def tokens(self) -> int:
        """generated tokens that belong to the kept responses"""
        return int(self.response_mask.sum())

    def kl_per_response(self) -> Tensor:
        """(B,) the summed KL of each response (nats)."""
        return (self.kl * self.response_mask).sum(1)


def policy_step(policy, obs: dict, sampling) -> tuple[Tensor, Tensor]:
    """Sampling-distribution logits (B, V) and values (B,): an ``ActorCritic``'s own, or, for anything else
    with ``next_token_logits`` (a bare LM runner), its raw logits through ``sampling`` and values of 0."""
    if isinstance(policy, ActorCritic):
        return policy(obs)
    logits = sampling.sampling_logits(torch.as_tensor(policy.next_token_logits(obs["input_ids"], obs["attention_mask"])))
    return logits, torch.zeros(logits.shape[0], device=logits.device)


@torch.no_grad()
def collect_responses(env, policy, kl_coef: float, seed: int, generator: torch.Generator,
                      device: torch.device, prompts: list | None = None, group_size: int = 1) -> Responses:
    """One response per row of ``env`` (a TextGen vector env), sampled from ``policy``.

    An env without the policy (mode b: its infos carry no ``kl``) pays ``+kl_coef * log pi_ref``; the
    ``-kl_coef * log pi`` half is then subtracted here, so both modes pay ``-kl_coef * k1`` per token.

    Args:
        env: a ``TextGenVectorEnv`` (mode a when it was given ``policy``), or a wrapper of one.
        policy: an ``ActorCritic`` (``policy(obs) -> (logits, values)``) or a runner with ``next_token_logits``.
        kl_coef: beta of this rollout; handed to the env with the reset.
        seed: the reset's seed (row i draws its prompt with ``seed + i``).
        generator: the torch generator the tokens are sampled with (on ``device``).
        device: where the policy runs and the returned tensors live.
        prompts: one prompt per row instead of drawn ones (evaluation).
        group_size: K > 1 resets rows in groups of K consecutive rows sharing one drawn prompt (RLOO, GRPO).

    Returns:
        Row i's response from its first token to its last (module doc), and what the rollout measured on it.
    """
    # 1. reset every row with a fresh prompt and this rollout's beta
    obs, info = env.reset(seed=seed, options=_reset_options(kl_coef, prompts, group_size))
    sampling = env_sampling(env)
    B = env.num_envs
    T = env.unwrapped.core.max_new_tokens
    first = to_tensor(obs, device)
    P = int(first["attention_mask"].sum(1).max())
    prompt_ids, prompt_mask = first["input_ids"][:, -P:], first["attention_mask"][:, -P:]
    actions = torch.zeros(B, T, dtype=torch.long, device=device)
    buffers = {k: torch.zeros(B, T, device=device) for k in ("logprobs", "values", "rewards", "kl", "ref_logprobs",
                                                             "mask")}
    scores = np.zeros(B)
    row_prompts, texts = list(info["prompt"]), [""] * B
    active = np.ones(B, dtype=bool)  # rows still inside their first response
    steps = 0
    # 2. step every row until each has ended one response, recording each row's tokens until then
    for t in range(T):
        obs_t = first if t == 0 else to_tensor(obs, device)
        action, logprob, values = _sample_tokens(policy, obs_t, sampling, generator)
        obs, reward, terminated, truncated, info = env.step(action.cpu().numpy())
        steps += 1
        done = np.asarray(terminated) | np.asarray(truncated)
        paid, kl, ref_logprob = _token_payments(info, done, reward, logprob, kl_coef, device)
        _record_token(actions, buffers, active, t, action, {"logprobs": logprob, "values": values.float(),
                                                            "rewards": paid, "kl": kl, "ref_logprobs": ref_logprob})
        final = info.get("final_info", {})
        for i in np.flatnonzero(done & active):
            scores[i], texts[i] = final["rm_score"][i], final["completion"][i]
        active &= ~done
        if not active.any():
            break
    # 3. the responses behind their prompts: (B, P + T), the response columns right-padded
    response_mask = buffers.pop("mask")
    ids = torch.cat([prompt_ids, actions * response_mask.long()], 1)
    mask = torch.cat([prompt_mask, response_mask.long()], 1)
    return Responses(ids=ids, mask=mask, prompt_cols=P, obs_width=first["input_ids"].shape[1],
                     response_mask=response_mask, scores=scores, prompts=row_prompts, texts=texts,
                     kl_coef=float(kl_coef), generated_tokens=steps * B, **buffers)


def _reset_options(kl_coef: float, prompts: list | None, group_size: int) -> dict:
    """The reset options of a rollout: beta, and the given prompts or the prompt groups when asked for."""
    return {"kl_coef": kl_coef, **({"prompts": list(prompts)} if prompts is not None else {}),
            **({"group_size": group_size} if group_size > 1 else {})}


def _sample_tokens(policy, obs: dict, sampling, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """One token per row from the sampling distribution: actions (B,), their log-probs (B,), values (B,)."""
    logits, values = policy_step(policy, obs, sampling)
    logp_all = torch.log_softmax(logits.float(), -1)  # (B, V)
    action = torch.multinomial(logp_all.exp(), 1, generator=generator)[:, 0]
    logprob = logp_all.gather(-1, action[:, None])[:, 0]
    return action, logprob, values


def _record_token(actions: Tensor, buffers: dict[str, Tensor], active: np.ndarray, t: int, action: Tensor,
                  measured: dict[str, Tensor]) -> None:
    """Write token ``t`` of the rows still inside their first response (``active``) into the (B, T) buffers.

    Args:
        actions: (B, T) the sampled tokens; ``action`` (B,) is this step's.
        buffers: (B, T) per-token buffers, ``mask`` among them (set to 1 on the recorded tokens).
        measured: this step's (B,) value per buffer name.
    """
    rows = torch.as_tensor(active, device=actions.device)
    actions[rows, t] = action[rows]
    for key, value in measured.items():
        buffers[key][rows, t] = value[rows]
    buffers["mask"][rows, t] = 1.0


def _token_payments(info: dict, done: np.ndarray, reward, logprob: Tensor, kl_coef: float,
                    device) -> tuple[Tensor, Tensor, Tensor]:
    """What each row's token was paid, its KL to the reference and its reference log-prob, each (B,).

    Mode (a): the env measured KL_t from the policy's own forward and paid ``-beta * KL_t``. Mode (b) (the
    infos carry no ``kl``): the env paid ``+beta * log pi_ref``, so the ``-beta * log pi`` half is paid here
    and the KL is k1, ``log pi - log pi_ref``.
    """
    env_kl = step_values(info, done, "kl")
    paid = torch.as_tensor(reward, dtype=torch.float32, device=device)
    ref_logprob = torch.as_tensor(step_values(info, done, "ref_logprob"), dtype=torch.float32, device=device)
    if env_kl is not None:
        kl = torch.as_tensor(env_kl, dtype=torch.float32, device=device)
    else:
        kl = logprob - ref_logprob
        paid = paid - kl_coef * logprob
    return paid, kl, ref_logprob


def score_responses(policy, batch: Responses, rows: Tensor, with_entropy_grad: bool = False):
    """log pi (n, T), entropy (n, T) and values (n, T) of the current policy on responses ``rows`` of ``batch``.

    An ``LMActorCritic`` scores each response with one forward (``score_responses``); any other
    ``ActorCritic`` is asked for every token's observation through ``evaluate_actions``.
    """
    ids, mask, actions = batch.ids[rows], batch.mask[rows], batch.actions[rows]
    if hasattr(policy, "score_responses"):
        return policy.score_responses(ids, mask, batch.prompt_cols, with_entropy_grad=with_entropy_grad)
    return score_by_steps(policy, ids, mask, batch.prompt_cols, actions, batch.obs_width)


def score_by_steps(policy, ids: Tensor, mask: Tensor, prompt_cols: int, actions: Tensor, width: int):
    """The observation of every token (its left-padded context, as the env showed it) through
    ``policy.evaluate_actions``: what a policy without a whole-response forward is scored with."""
    n, S = ids.shape
    T = S - prompt_cols
    obs_ids = ids.new_zeros(n, T, width)
    obs_mask = mask.new_zeros(n, T, width)
    for t in range(T):  # T is the response limit (tens of tokens), not a per-token loop of the hot path
        ctx = prompt_cols + t
        obs_ids[:, t, width - ctx:] = ids[:, :ctx]
        obs_mask[:, t, width - ctx:] = mask[:, :ctx]
    valid = mask[:, prompt_cols:].reshape(-1) > 0  # the steps past a response's end have no observation
    flat = {"input_ids": obs_ids.reshape(n * T, width)[valid], "attention_mask": obs_mask.reshape(n * T, width)[valid]}
    scored = policy.evaluate_actions(flat, actions.reshape(-1)[valid])
    out = []
    for x in scored:
        full = x.new_zeros(n * T)
        full[valid] = x
        out.append(full.reshape(n, T))
    return tuple(out)
