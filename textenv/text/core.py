"""The text-generation transition, written once for a batch of N episodes.

``TextGenEnv`` drives it with N = 1 and no autoreset; ``TextGenVectorEnv`` drives it with N rows and
same-step autoreset. The core owns the models, the tokenizer, the reward function and the per-row state;
it never draws random numbers itself (prompts are drawn from the generators the envs pass in), so a vector
env row seeded ``s + i`` and a single env seeded ``s + i`` see the same prompts.

RL framing (lecture slides, "The RL setup: connection to language models"): the state is the prompt plus
the tokens generated so far, the action is the next token, the policy is the language model.

Every call is all or nothing: a step computes its new tokens, the models' log-probabilities, the KL and
the reward of the rows that end on new arrays, checks them all, and only then replaces the state
(``prepare_step`` then ``commit``); a reset encodes every prompt before it writes a row. A bad action, a
model that returns NaN or a reward function that fails raises and leaves the episodes as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rlcore.checks import check_flag, check_int, check_real, short
from rlcore.device import resolve_device
from rlcore.kl import ESTIMATORS, kl_penalty
from textenv.text.config import DEFAULTED_BY_REGISTRY, MAX_KL_COEF, TextGenConfig
from textenv.text.decoding import IncrementalLM, reference_runner
from textenv.text.loading import (
    check_causal_lm, check_fit, check_sizes, load_causal_lm, load_tokenizer, output_vocab_size, special_ids,
)
from textenv.text.prompts import PromptEncoder, load_prompts
from textenv.text.rewards import make_reward_fn
from textenv.text.sampling import SamplingConfig, check_logits


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
    completion: list  # completion text where the episode ended, None elsewhere
    prompt: list  # prompt text where the episode ended, None elsewhere

    def row_info(self, i: int) -> dict:
        """The single-env info dict of row ``i``."""
        info = {"ref_logprob": float(self.ref_logprob[i])}
        if self.kl is not None:
            info["kl"] = float(self.kl[i])
            info["policy_logprob"] = float(self.policy_logprob[i])
        if self.terminated[i] or self.truncated[i]:
            info["rm_score"] = float(self.rm_score[i])
            info["completion"] = self.completion[i]
            info["prompt"] = self.prompt[i]
        return info


@dataclass
class NextState:
    """The per-row state after a step, built on new arrays so that nothing changes until ``commit``."""

    ids: np.ndarray  # (N, L)
    mask: np.ndarray  # (N, L)
    gen_len: np.ndarray  # (N,)
    has_eos: np.ndarray  # (N,)
    done: np.ndarray  # (N,) bool: the episode ends with this step


class TextGenCore:
    """Models, tokenizer, reward and the state of N episodes. See ``TextGenEnv`` for what the settings do.

    Args:
        config: the task, with its model, reward and prompts given (``textenv.text.config.make_config`` fills
            them from the registered default task; the core itself knows no default task).
        num_envs: the rows N.
        policy: the acting policy (mode (a) of ``TextGenEnv``), or None.
    """

    def __init__(self, config: TextGenConfig, num_envs: int = 1, policy=None) -> None:
        # Plain settings first: they are cheap to check and the models are slow to load.
        self.config = self._checked(config)
        self.num_envs = check_int("num_envs", num_envs)
        self.max_new_tokens, self.max_prompt_tokens = config.max_new_tokens, config.max_prompt_tokens
        self.seq_len = config.seq_len
        check_sizes(self.num_envs, self.seq_len)
        self.sampling = SamplingConfig(temperature=config.temperature, top_k=config.top_k, top_p=config.top_p)
        self.kl_estimator, self.stop_at_eos, self.no_eos_penalty = config.kl_estimator, config.stop_at_eos, config.no_eos_penalty
        self.kl_coef = config.kl_coef
        self._load_models(config, policy)
        self.reward_fn = make_reward_fn(config.reward, tokenizer=config.reward_tokenizer, device=self.device,
                                        label=config.reward_label, normalize=config.normalize_reward)
        self.prompts = load_prompts(config.prompts, column=config.prompt_column, split=config.prompt_split)

        n, length = self.num_envs, self.seq_len
        self.ids = np.full((n, length), self.pad_token_id, dtype=np.int64)  # (N, L) left-padded context
        self.mask = np.zeros((n, length), dtype=np.int64)  # (N, L)
        self.prompt_ids: list[list[int]] = [[] for _ in range(n)]
        self.prompt_text: list[str] = ["" for _ in range(n)]
        self._prompts_remembered = False
        self.gen_len = np.zeros(n, dtype=np.int64)  # tokens generated so far
        self.has_eos = np.zeros(n, dtype=bool)
        self.live = np.zeros(n, dtype=bool)  # an episode is in progress

    @staticmethod
    def _checked(config) -> TextGenConfig:
        """``config`` once its plain settings are valid (the sampling ones are checked by SamplingConfig)."""
        if not isinstance(config, TextGenConfig):
            raise TypeError(f"config must be a TextGenConfig, got {type(config).__name__}")
        for name in DEFAULTED_BY_REGISTRY:
            if getattr(config, name) is None:
                raise ValueError(f"config.{name} is None: the core has no default task; build the config with "
                                 f"textenv.text.config.make_config (the envs do), which fills it from TextGen-v0's")
        check_int("max_new_tokens", config.max_new_tokens)
        check_int("max_prompt_tokens", config.max_prompt_tokens)
        if not isinstance(config.kl_estimator, str) or config.kl_estimator not in ESTIMATORS:
            raise ValueError(f"unknown kl_estimator {config.kl_estimator!r}; expected one of {ESTIMATORS}")
        check_flag("stop_at_eos", config.stop_at_eos)
        check_flag("normalize_reward", config.normalize_reward)
        check_real("no_eos_penalty", config.no_eos_penalty)
        check_real("prompt_cache_mb", config.prompt_cache_mb, low=0.0)
        TextGenCore.check_kl_coef(config.kl_coef)
        return config

    def _load_models(self, config: TextGenConfig, policy) -> None:
        """The start model, the reference (and its runner), the tokenizer and the policy's runner, checked together."""
        first_module = next((m for m in (config.model, config.ref_model, policy) if isinstance(m, torch.nn.Module)), None)
        self.device = resolve_device(config.device, first_module)
        self.start_model = load_causal_lm(config.model, self.device)
        self.tokenizer = load_tokenizer(config.tokenizer, config.model)
        self.ref_model = (self.start_model if config.ref_model is None
                          else load_causal_lm(config.ref_model, self.device, "ref_model"))
        self.vocab_size = output_vocab_size(self.ref_model)
        if config.ref_model is not None and output_vocab_size(self.start_model) != self.vocab_size:
            raise ValueError(f"model and ref_model disagree on the vocabulary: {output_vocab_size(self.start_model)} "
                             f"vs {self.vocab_size} logits")
        check_fit(self.ref_model, self.tokenizer, self.vocab_size, self.max_prompt_tokens, self.max_new_tokens)
        self.eos_token_id, self.pad_token_id = special_ids(self.tokenizer, self.start_model, self.vocab_size, self.stop_at_eos)
        self.encode_prompt = PromptEncoder(self.tokenizer, self.vocab_size, self.max_prompt_tokens)

        # The reference is frozen, so the prefill of each prompt it has seen is worth keeping (see IncrementalLM).
        self.ref_lm = reference_runner(self.ref_model, policy, config.prompt_cache_mb, self.max_prompt_tokens)
        if policy is None:
            self.policy_lm = None
        elif hasattr(policy, "next_token_logits"):
            self.policy_lm = policy
        elif isinstance(policy, torch.nn.Module):
            check_causal_lm(policy, "policy")
            self.policy_lm = self.ref_lm if policy is self.ref_model else IncrementalLM(policy)
        else:
            raise TypeError(f"policy must expose next_token_logits(input_ids, attention_mask) or be a causal LM "
                            f"module, got {type(policy).__name__}")
        self.policy = policy

    # -- the KL coefficient (an adaptive controller may change it between steps) ---------------------

    @property
    def kl_coef(self) -> float:
        return self._kl_coef

    @kl_coef.setter
    def kl_coef(self, value: float) -> None:
        self._kl_coef = self.check_kl_coef(value)

    @staticmethod
    def check_kl_coef(value, name: str = "kl_coef") -> float:
        """``value`` as a float when it is a valid beta (finite, in [0, MAX_KL_COEF]); else a ValueError / TypeError."""
        why = " (MAX_KL_COEF: larger ones overflow the float32 penalty)"
        return check_real(name, value, low=0.0, high=MAX_KL_COEF, why=why)

    def kl_coef_option(self, options: dict) -> float | None:
        """The checked ``options["kl_coef"]`` of a reset (None when absent), set only once the reset commits."""
        return None if "kl_coef" not in options else self.check_kl_coef(options["kl_coef"], "options['kl_coef']")

    # -- prompts ----------------------------------------------------------------------------------

    def sample_prompt(self, rng: np.random.Generator) -> str:
        """One prompt drawn with the env's generator (the only randomness in the env)."""
        return self.prompts[int(rng.integers(len(self.prompts)))]

    def _remember_prompts(self) -> None:
        """Prefill the prompt list into the reference's prompt cache once, in a few batched calls.

        Done at the first step rather than at construction, which stays quick (``gym.make``). Only lists of
        up to 20k text prompts are tokenized for this; longer ones fill the cache as prompts come up.
        """
        self._prompts_remembered = True
        if self.ref_lm.prompt_cache_bytes == 0 or len(self.prompts) > 20_000:
            return
        memo = self.encode_prompt.memo
        texts = [p for p in self.prompts if isinstance(p, str) and p.strip() and p not in memo]
        if texts:
            for text, ids in zip(texts, self.tokenizer(texts)["input_ids"]):
                memo[text] = tuple(ids)
        self.ref_lm.remember(memo[p] for p in self.prompts if p in memo)

    def start_rows(self, rows, encoded) -> list[str]:
        """Start new episodes in ``rows`` from ``encode_prompt`` outputs, which hold every check (so this cannot
        fail halfway). Returns the prompt texts."""
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
        expected = f"an array of shape ({self.num_envs},) of int token ids in [0, {self.vocab_size})"
        try:
            arr = np.asarray(actions)
        except (TypeError, ValueError, RuntimeError) as e:  # ragged lists, tensors numpy cannot read
            raise ValueError(f"actions must be {expected}, got {short(actions)} ({e})") from None
        if arr.shape != (self.num_envs,):
            raise ValueError(f"expected {self.num_envs} actions (one token id per row): {expected}; got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"actions must be integer token ids ({expected}), got {arr.dtype} {short(arr.tolist())}")
        bad = np.flatnonzero((arr < 0) | (arr >= self.vocab_size))  # before the cast, which wraps huge uint64
        if len(bad):
            i = int(bad[0])
            raise ValueError(
                f"action {int(arr[i])} (row {i}) is not a token id: the action space is Discrete({self.vocab_size}), ids 0..{self.vocab_size - 1}"
            )
        arr = arr.astype(np.int64)
        if not self.live.all():
            raise RuntimeError(
                f"step() called with no episode in progress in rows {np.flatnonzero(~self.live).tolist()}: call reset() first"
            )
        return arr

    @torch.no_grad()
    def step(self, actions) -> StepParts:
        """Append one token per row; returns rewards, flags and the reward's parts. Ended rows stop being live."""
        parts, after = self.prepare_step(actions)
        self.commit(after)
        return parts

    @torch.no_grad()
    def prepare_step(self, actions) -> tuple[StepParts, NextState]:
        """What ``step`` returns and the state after it, all checked, with the env's state untouched."""
        actions = self.check_actions(actions)
        if not self._prompts_remembered:
            self._remember_prompts()
        ref_logp, kl, policy_logp, step_reward = self._token_terms(actions)
        after = self._advanced(actions)
        terminated = (actions == self.eos_token_id) & self.stop_at_eos
        truncated = ~terminated & (after.gen_len >= self.max_new_tokens)
        after.done = terminated | truncated

        reward = step_reward.double().cpu().numpy()
        rm_score = np.full(self.num_envs, np.nan)
        completion: list = [None] * self.num_envs
        prompt: list = [None] * self.num_envs
        rows = np.flatnonzero(after.done)
        if len(rows):
            completions = [self.decode_completion(self.prompt_ids[i], after.ids[i], after.gen_len[i]) for i in rows]
            prompts = [self.prompt_text[i] for i in rows]
            rm_score[rows] = self.reward_fn(prompts, completions)
            with np.errstate(over="ignore"):  # an overflow is reported by _check_rewards, naming its parts
                reward[rows] += rm_score[rows] + np.where(after.has_eos[rows], 0.0, self.no_eos_penalty)
            for i, c, p in zip(rows, completions, prompts):
                completion[i], prompt[i] = c, p
        self._check_rewards(reward, step_reward, rm_score)

        def np_(x):
            return None if x is None else x.double().cpu().numpy()

        parts = StepParts(reward=reward, terminated=terminated, truncated=truncated, ref_logprob=np_(ref_logp), kl=np_(kl),
                          policy_logprob=np_(policy_logp), rm_score=rm_score, completion=completion, prompt=prompt)
        return parts, after

    def commit(self, after: NextState) -> None:
        """Make a prepared step the state (cannot fail)."""
        self.ids, self.mask, self.gen_len, self.has_eos = after.ids, after.mask, after.gen_len, after.has_eos
        self.live[after.done] = False

    def _advanced(self, actions: np.ndarray) -> NextState:
        """The state after appending ``actions``: shift left, append the token (new arrays)."""
        ids = np.concatenate([self.ids[:, 1:], actions[:, None]], axis=1)
        mask = np.concatenate([self.mask[:, 1:], np.ones((self.num_envs, 1), np.int64)], axis=1)
        return NextState(ids=ids, mask=mask, gen_len=self.gen_len + 1, has_eos=self.has_eos | (actions == self.eos_token_id),
                         done=np.zeros(self.num_envs, dtype=bool))

    def _token_terms(self, actions: np.ndarray):
        """Per-token terms of the step: ref log-prob, KL and policy log-prob (policy mode) and the per-token reward."""
        ids_t = torch.from_numpy(self.ids).to(self.device)
        mask_t = torch.from_numpy(self.mask).to(self.device)
        act_t = torch.from_numpy(actions).to(self.device)[:, None]  # (N, 1)

        raw = self.ref_lm(ids_t, mask_t).logits.to(self.device)
        check_logits(raw, (self.num_envs, self.vocab_size), "the reference model")
        ref_logits = self.sampling.reference_logits(raw)  # (N, V)
        ref_logp = torch.log_softmax(ref_logits, -1).gather(1, act_t)[:, 0]  # (N,)
        self._check_finite(ref_logp, actions, "the reference model's log-probability of")
        kl = policy_logp = None
        if self.policy_lm is not None:
            pol_logits = torch.as_tensor(self.policy_lm.next_token_logits(ids_t, mask_t)).to(self.device)
            if pol_logits is raw and self.sampling.is_temperature_only:
                # The policy is the reference (one runner, one forward): the same distribution, so KL_t = 0;
                # the full-vocabulary work is not done twice.
                logits, policy_logp = ref_logits, ref_logp
            else:
                check_logits(pol_logits, tuple(ref_logits.shape), "the policy")
                logits = self.sampling.sampling_logits(pol_logits)  # (N, V) the distribution the agent samples from
                policy_logp = torch.log_softmax(logits, -1).gather(1, act_t)[:, 0]
            if not bool(torch.isfinite(policy_logp).all()):
                i = int((~torch.isfinite(policy_logp)).nonzero()[0])
                raise ValueError(
                    f"action {int(actions[i])} (row {i}) has probability 0 under the policy's sampling distribution "
                    f"(top_k={self.sampling.top_k}, top_p={self.sampling.top_p}), so its KL to the reference is undefined; "
                    f"sample actions from env.sampling.sampling_logits(policy logits)"
                )
            kl = kl_penalty(policy_logp, ref_logp, self.kl_estimator, logits=logits, ref_logits=ref_logits)
            self._check_finite(kl, actions, f"the KL estimate ({self.kl_estimator}) of")
            step_reward = -self.kl_coef * kl  # lm-human-preferences: -beta * KL_t on every token
        else:
            # Entropy form: the agent adds -kl_coef * log pi(a_t|s_t) itself (SB3's ent_coef is its counterpart).
            step_reward = self.kl_coef * ref_logp
        self._check_finite(step_reward, actions, f"the per-token reward (kl_coef={self.kl_coef:g}) of")
        return ref_logp, kl, policy_logp, step_reward

    # -- checks of what the models and the reward function returned ---------------------------------

    def _check_finite(self, values: torch.Tensor, actions: np.ndarray, what: str) -> None:
        bad = ~torch.isfinite(values)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise ValueError(
                f"{what} action {int(actions[i])} (row {i}) is {float(values[i])} at temperature {self.sampling.temperature:g}; "
                f"the step's reward must be finite"
            )

    def _check_rewards(self, reward: np.ndarray, step_reward: torch.Tensor, rm_score: np.ndarray) -> None:
        bad = np.flatnonzero(~np.isfinite(reward))
        if len(bad):  # finite parts whose sum overflowed float64
            i = int(bad[0])
            raise ValueError(
                f"the reward of row {i} is {reward[i]}: per-token term {float(step_reward[i])} + reward score {rm_score[i]} "
                f"+ no_eos_penalty {self.no_eos_penalty} overflowed; the reward function's scores are too large"
            )

    # -- text -------------------------------------------------------------------------------------

    def completion_text(self, i: int) -> str:
        """The generated text of row ``i`` (special tokens such as EOS dropped).

        Decoded together with the prompt and cut after the prompt's text, so that ``prompt + completion``
        reads like the whole sequence (word-level tokenizers put the separating space there).
        """
        return self.decode_completion(self.prompt_ids[i], self.ids[i], self.gen_len[i])

    def decode_completion(self, prompt_ids: list[int], row_ids: np.ndarray, n) -> str:
        """``completion_text`` of a row holding ``row_ids`` (L,) with ``n`` generated tokens."""
        n = int(n)
        gen = row_ids[self.seq_len - n:].tolist() if n else []
        prefix = self.tokenizer.decode(prompt_ids, skip_special_tokens=True)
        full = self.tokenizer.decode(prompt_ids + gen, skip_special_tokens=True)
        return full[len(prefix):] if full.startswith(prefix) else self.tokenizer.decode(gen, skip_special_tokens=True)

    def render_row(self, i: int) -> str:
        if not self.prompt_ids[i]:
            return "(no episode yet: call reset())"
        return f"{self.prompt_text[i]}[{self.completion_text(i)}]"
