"""The text-generation transition, written once for a batch of N episodes.

``TextGenEnv`` drives it with N = 1 and no autoreset; ``TextGenVectorEnv`` drives it with N rows and
same-step autoreset. The core owns the models, the tokenizer, the reward function and the per-row state;
it never draws random numbers itself (prompts are drawn from the generators the envs pass in), so a vector
env row seeded ``s + i`` and a single env seeded ``s + i`` see the same prompts.

RL framing (lecture slides, "The RL setup: connection to language models"): the state is the prompt plus
the tokens generated so far, the action is the next token, the policy is the language model.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from textenv.text.decoding import IncrementalLM
from textenv.text.kl import ESTIMATORS, kl_penalty
from textenv.text.loading import (
    load_causal_lm,
    load_prompts,
    load_tokenizer,
    max_positions,
    output_vocab_size,
    resolve_device,
)
from textenv.text.rewards import make_reward_fn
from textenv.text.sampling import SamplingConfig


@dataclass
class StepParts:
    """What one batched step produced, row by row (numpy, length N)."""

    reward: np.ndarray  # (N,) float64
    terminated: np.ndarray  # (N,) bool: EOS chosen
    truncated: np.ndarray  # (N,) bool: max_new_tokens reached without EOS
    ref_logprob: np.ndarray  # (N,) log pi_ref(a_t | s_t) under the reference distribution
    kl: np.ndarray | None  # (N,) per-token KL estimate (policy mode only)
    policy_logprob: np.ndarray | None  # (N,) log pi(a_t | s_t) under the sampling distribution (policy mode only)
    rm_score: np.ndarray  # (N,) reward-model score where the episode ended, NaN elsewhere
    text: list  # completion text where the episode ended, None elsewhere
    prompt: list  # prompt text where the episode ended, None elsewhere

    def row_info(self, i: int) -> dict:
        """The single-env info dict of row ``i``."""
        info = {"ref_logprob": float(self.ref_logprob[i])}
        if self.kl is not None:
            info["kl"] = float(self.kl[i])
            info["policy_logprob"] = float(self.policy_logprob[i])
        if self.terminated[i] or self.truncated[i]:
            info["rm_score"] = float(self.rm_score[i])
            info["text"] = self.text[i]
            info["prompt"] = self.prompt[i]
        return info


def _default_task():
    import textenv.default

    return textenv.default


class TextGenCore:
    """Models, tokenizer, reward and the state of N episodes. See ``TextGenEnv`` for the arguments."""

    def __init__(
        self,
        num_envs: int = 1,
        model=None,
        tokenizer=None,
        reward=None,
        prompts=None,
        policy=None,
        ref_model=None,
        max_new_tokens: int = 24,
        max_prompt_tokens: int = 16,
        kl_coef: float = 0.05,
        kl_estimator: str = "k1",
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        stop_at_eos: bool = True,
        no_eos_penalty: float = 0.0,
        device: str | torch.device = "auto",
        reward_label: int | str | None = None,
        reward_tokenizer=None,
        normalize_reward: bool = True,
        prompt_cache_mb: float = 64.0,
    ) -> None:
        for name, value in (("num_envs", num_envs), ("max_new_tokens", max_new_tokens), ("max_prompt_tokens", max_prompt_tokens)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if kl_estimator not in ESTIMATORS:
            raise ValueError(f"unknown kl_estimator {kl_estimator!r}; expected one of {ESTIMATORS}")
        if not math.isfinite(float(no_eos_penalty)):
            raise ValueError(f"no_eos_penalty must be finite, got {no_eos_penalty}")
        self.sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
        self.num_envs, self.max_new_tokens, self.max_prompt_tokens = int(num_envs), int(max_new_tokens), int(max_prompt_tokens)
        self.seq_len = self.max_prompt_tokens + self.max_new_tokens
        self.kl_estimator, self.stop_at_eos, self.no_eos_penalty = kl_estimator, bool(stop_at_eos), float(no_eos_penalty)
        self.kl_coef = kl_coef

        # Models. `model` is the reference unless `ref_model` is given; nothing here is ever trained.
        if model is None:
            model = _default_task().sft_path()
        first_module = next((m for m in (model, ref_model, policy) if isinstance(m, torch.nn.Module)), None)
        self.device = resolve_device(device, first_module)
        self.model = load_causal_lm(model, self.device)
        self.tokenizer = load_tokenizer(tokenizer, model)
        self.ref_model = self.model if ref_model is None else load_causal_lm(ref_model, self.device)
        self.vocab_size = output_vocab_size(self.ref_model)
        if ref_model is not None and output_vocab_size(self.model) != self.vocab_size:
            raise ValueError(
                f"model and ref_model disagree on the vocabulary: {output_vocab_size(self.model)} vs {self.vocab_size} logits"
            )
        self._check_fit(self.ref_model)
        self.eos_token_id, self.pad_token_id = self._special_ids()

        # The reference is frozen, so the prefill of each prompt it has seen is worth keeping (see IncrementalLM).
        self.ref_lm = IncrementalLM(self.ref_model, prompt_cache_mb=prompt_cache_mb, prompt_max_tokens=self.max_prompt_tokens)
        if policy is None:
            self.policy_lm = None
        elif hasattr(policy, "next_token_logits"):
            self.policy_lm = policy
        elif isinstance(policy, torch.nn.Module):
            self.policy_lm = self.ref_lm if policy is self.ref_model else IncrementalLM(policy)
        else:
            raise TypeError(
                f"policy must expose next_token_logits(input_ids, attention_mask) or be a causal LM module, got {type(policy).__name__}"
            )
        self.policy = policy

        if reward is None:
            reward = _default_task().reward_path()
        self.reward_fn = make_reward_fn(reward, tokenizer=reward_tokenizer, device=self.device, label=reward_label,
                                        normalize=normalize_reward)
        if prompts is None:
            prompts = _default_task().prompts_path("train")
        self.prompts = load_prompts(prompts)

        n, length = self.num_envs, self.seq_len
        self.ids = np.full((n, length), self.pad_token_id, dtype=np.int64)  # (N, L) left-padded context
        self.mask = np.zeros((n, length), dtype=np.int64)  # (N, L)
        self.prompt_ids: list[list[int]] = [[] for _ in range(n)]
        self.prompt_text: list[str] = ["" for _ in range(n)]
        self._token_memo: dict[str, tuple[int, ...]] = {}
        self._prompts_remembered = False
        self.gen_len = np.zeros(n, dtype=np.int64)  # tokens generated so far
        self.has_eos = np.zeros(n, dtype=bool)
        self.live = np.zeros(n, dtype=bool)  # an episode is in progress

    # -- construction checks ------------------------------------------------------------------------

    def _check_fit(self, model: torch.nn.Module) -> None:
        n_pos = max_positions(model)
        if n_pos is not None and self.seq_len > n_pos:
            raise ValueError(
                f"max_prompt_tokens + max_new_tokens = {self.max_prompt_tokens} + {self.max_new_tokens} = {self.seq_len} "
                f"exceeds the model's context of {n_pos} positions"
            )
        n_tok = len(self.tokenizer)
        if n_tok > self.vocab_size:
            raise ValueError(
                f"the tokenizer has {n_tok} tokens but the model only produces {self.vocab_size} logits; "
                f"they do not belong together (token ids >= {self.vocab_size} would have no action)"
            )

    def _special_ids(self) -> tuple[int, int]:
        eos = self.tokenizer.eos_token_id
        if eos is None:
            eos = getattr(self.model.config, "eos_token_id", None)
            if isinstance(eos, (list, tuple)):
                eos = eos[0] if eos else None
        if eos is None and self.stop_at_eos:
            raise ValueError(
                "no EOS token: the tokenizer has no eos_token and the model config has no eos_token_id. "
                "Set tokenizer.eos_token, or pass stop_at_eos=False to generate max_new_tokens every episode"
            )
        if eos is not None and not 0 <= int(eos) < self.vocab_size:
            raise ValueError(f"eos token id {eos} is outside the model's vocabulary [0, {self.vocab_size})")
        pad = self.tokenizer.pad_token_id
        if pad is None:  # padding positions are masked out, any in-vocabulary id will do
            pad = eos if eos is not None else 0
        return (-1 if eos is None else int(eos)), int(pad)

    # -- the KL coefficient (an adaptive controller may change it between steps) ---------------------

    @property
    def kl_coef(self) -> float:
        return self._kl_coef

    @kl_coef.setter
    def kl_coef(self, value: float) -> None:
        value = float(value)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"kl_coef must be a finite number >= 0, got {value}")
        self._kl_coef = value

    # -- prompts ----------------------------------------------------------------------------------

    def sample_prompt(self, rng: np.random.Generator) -> str:
        """One prompt drawn with the env's generator (the only randomness in the env)."""
        return self.prompts[int(rng.integers(len(self.prompts)))]

    def encode_prompt(self, prompt) -> tuple[list[int], str]:
        """A prompt (text or token ids) -> (token ids, text), truncated from the left to max_prompt_tokens."""
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ValueError(f"empty prompt {prompt!r}: a prompt needs at least one token")
            ids, text = self._tokenize(prompt), prompt
        else:
            try:
                ids = [int(t) for t in prompt]
            except (TypeError, ValueError):
                raise TypeError(f"a prompt must be a str or a sequence of token ids, got {prompt!r}") from None
            bad = [t for t in ids if not 0 <= t < self.vocab_size]
            if bad:
                raise ValueError(f"prompt token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
            text = None
        if not ids:
            raise ValueError(f"prompt {prompt!r} has no tokens")
        if len(ids) > self.max_prompt_tokens:
            # Keep the end (what comes next depends on it most) and a leading BOS the model was trained with.
            bos = self.tokenizer.bos_token_id
            keep_bos = bos is not None and ids[0] == bos and self.max_prompt_tokens > 1
            tail = self.max_prompt_tokens - int(keep_bos)
            warnings.warn(
                f"prompt of {len(ids)} tokens is longer than max_prompt_tokens={self.max_prompt_tokens}; "
                f"keeping its last {tail} tokens" + (" after the BOS token" if keep_bos else ""),
                stacklevel=3,
            )
            ids, text = ([bos] if keep_bos else []) + ids[-tail:], None
        if text is None:
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return ids, text

    def _tokenize(self, text: str) -> list[int]:
        # Prompts come from a fixed list and recur every few episodes: tokenizing each reset row again
        # cost ~7% of a rollout step (benchmarks/bench_textgen.py), so texts are tokenized once.
        ids = self._token_memo.get(text)
        if ids is None:
            if len(self._token_memo) >= 100_000:  # bound the memory for endless streams of distinct prompts
                self._token_memo.clear()
            ids = self._token_memo[text] = tuple(self.tokenizer(text)["input_ids"])
        return list(ids)

    def _remember_prompts(self) -> None:
        """Prefill the prompt list into the reference's prompt cache once, in a few batched calls.

        Done at the first step rather than at construction, which stays quick (``gym.make``). Only lists of
        up to 20k text prompts are tokenized for this; longer ones fill the cache as prompts come up.
        """
        self._prompts_remembered = True
        if self.ref_lm.prompt_cache_bytes == 0 or len(self.prompts) > 20_000:
            return
        texts = [p for p in self.prompts if isinstance(p, str) and p.strip() and p not in self._token_memo]
        if texts:
            for text, ids in zip(texts, self.tokenizer(texts)["input_ids"]):
                self._token_memo[text] = tuple(ids)
        self.ref_lm.remember(self._token_memo[p] for p in self.prompts if p in self._token_memo)

    def reset_rows(self, rows, prompts) -> list[str]:
        """Start new episodes in ``rows`` from ``prompts`` (text or token ids). Returns the prompt texts."""
        encoded = [self.encode_prompt(p) for p in prompts]  # all checks before any state changes
        for i, (ids, text) in zip(rows, encoded):
            self.ids[i] = self.pad_token_id
            self.mask[i] = 0
            self.ids[i, -len(ids):] = ids
            self.mask[i, -len(ids):] = 1
            self.prompt_ids[i], self.prompt_text[i] = ids, text
            self.gen_len[i], self.has_eos[i], self.live[i] = 0, False, True
        return [text for _, text in encoded]

    def observe(self, rows=None) -> dict[str, np.ndarray]:
        """Observation dict: ``(N, L)`` arrays (or ``(len(rows), L)``), copies."""
        sel = slice(None) if rows is None else rows
        return {"input_ids": self.ids[sel].copy(), "attention_mask": self.mask[sel].copy()}

    # -- the transition -----------------------------------------------------------------------------

    def check_actions(self, actions) -> np.ndarray:
        arr = np.asarray(actions)
        if arr.shape != (self.num_envs,):
            raise ValueError(f"expected {self.num_envs} actions (one token id per row), got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"actions must be integer token ids, got {arr.dtype} {arr.tolist()!r}")
        arr = arr.astype(np.int64)
        bad = np.flatnonzero((arr < 0) | (arr >= self.vocab_size))
        if len(bad):
            i = int(bad[0])
            raise ValueError(
                f"action {int(arr[i])} (row {i}) is not a token id: the action space is Discrete({self.vocab_size}), ids 0..{self.vocab_size - 1}"
            )
        if not self.live.all():
            raise RuntimeError(
                f"step() called with no episode in progress in rows {np.flatnonzero(~self.live).tolist()}: call reset() first"
            )
        return arr

    @torch.no_grad()
    def step(self, actions) -> StepParts:
        """Append one token per row; returns rewards, flags and the reward's parts. Ended rows stop being live."""
        actions = self.check_actions(actions)
        if not self._prompts_remembered:
            self._remember_prompts()
        ids_t = torch.from_numpy(self.ids).to(self.device)
        mask_t = torch.from_numpy(self.mask).to(self.device)
        act_t = torch.from_numpy(actions).to(self.device)[:, None]  # (N, 1)

        ref_logits = self.sampling.reference(self.ref_lm(ids_t, mask_t).logits.to(self.device))  # (N, V)
        ref_logp = torch.log_softmax(ref_logits, -1).gather(1, act_t)[:, 0]  # (N,)
        kl = policy_logp = None
        if self.policy_lm is not None:
            pol_logits = torch.as_tensor(self.policy_lm.next_token_logits(ids_t, mask_t)).to(self.device)
            if pol_logits.shape != ref_logits.shape:
                raise ValueError(f"policy returned logits of shape {tuple(pol_logits.shape)}; expected {tuple(ref_logits.shape)}")
            logits = self.sampling.process(pol_logits)  # (N, V) the distribution the agent samples from
            policy_logp = torch.log_softmax(logits, -1).gather(1, act_t)[:, 0]
            if not bool(torch.isfinite(policy_logp).all()):
                i = int((~torch.isfinite(policy_logp)).nonzero()[0])
                raise ValueError(
                    f"action {int(actions[i])} (row {i}) has probability 0 under the policy's sampling distribution "
                    f"(top_k={self.sampling.top_k}, top_p={self.sampling.top_p}), so its KL to the reference is undefined; "
                    f"sample actions from env.sampling.process(policy logits)"
                )
            kl = kl_penalty(policy_logp, ref_logp, self.kl_estimator, logits=logits, ref_logits=ref_logits)
            step_reward = -self.kl_coef * kl  # lm-human-preferences: -beta * KL_t on every token
        else:
            # Entropy form: the agent adds -kl_coef * log pi(a_t|s_t) itself (SB3's ent_coef is its counterpart).
            step_reward = self.kl_coef * ref_logp

        # Advance: shift left, append the token.
        self.ids = np.concatenate([self.ids[:, 1:], actions[:, None]], axis=1)
        self.mask = np.concatenate([self.mask[:, 1:], np.ones((self.num_envs, 1), np.int64)], axis=1)
        self.gen_len += 1
        is_eos = actions == self.eos_token_id
        self.has_eos |= is_eos
        terminated = is_eos & self.stop_at_eos
        truncated = ~terminated & (self.gen_len >= self.max_new_tokens)
        done = terminated | truncated

        reward = step_reward.double().cpu().numpy()
        rm_score = np.full(self.num_envs, np.nan)
        text: list = [None] * self.num_envs
        prompt: list = [None] * self.num_envs
        rows = np.flatnonzero(done)
        if len(rows):
            completions = [self.completion_text(i) for i in rows]
            prompts = [self.prompt_text[i] for i in rows]
            rm_score[rows] = self.reward_fn(prompts, completions)
            reward[rows] += rm_score[rows] + np.where(self.has_eos[rows], 0.0, self.no_eos_penalty)
            for i, c, p in zip(rows, completions, prompts):
                text[i], prompt[i] = c, p
            self.live[rows] = False

        def np_(x):
            return None if x is None else x.double().cpu().numpy()

        return StepParts(reward=reward, terminated=terminated, truncated=truncated, ref_logprob=np_(ref_logp), kl=np_(kl),
                         policy_logprob=np_(policy_logp), rm_score=rm_score, text=text, prompt=prompt)

    # -- text -------------------------------------------------------------------------------------

    def completion_text(self, i: int) -> str:
        """The generated text of row ``i`` (special tokens such as EOS dropped).

        Decoded together with the prompt and cut after the prompt's text, so that ``prompt + completion``
        reads like the whole sequence (word-level tokenizers put the separating space there).
        """
        n = int(self.gen_len[i])
        gen = self.ids[i, self.seq_len - n:].tolist() if n else []
        prompt_ids = self.prompt_ids[i]
        prefix = self.tokenizer.decode(prompt_ids, skip_special_tokens=True)
        full = self.tokenizer.decode(prompt_ids + gen, skip_special_tokens=True)
        return full[len(prefix):] if full.startswith(prefix) else self.tokenizer.decode(gen, skip_special_tokens=True)

    def render_row(self, i: int) -> str:
        if not self.prompt_ids[i]:
            return "(no episode yet: call reset())"
        return f"{self.prompt_text[i]}[{self.completion_text(i)}]"
