"""TextGenEnv: token-level text generation with the RLHF reward, as a single Gymnasium environment."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlcore.checks import check_options, check_seed, short
from textenv.text.config import TextGenConfig, make_config
from textenv.text.core import TextGenCore
from textenv.text.loading import fork_safe_threads
from textenv.text.render import render_rgb


@contextmanager
def rollback_rngs(rngs) -> Iterator[None]:
    """Put the generators back as they were if the block raises: a failed reset must not move the prompt draws."""
    states = [(g, g.bit_generator.state) for g in rngs if g is not None]
    try:
        yield
    except BaseException:
        for g, state in states:
            g.bit_generator.state = state
        raise


def observation_space(vocab_size: int, seq_len: int) -> spaces.Dict:
    """``Dict(input_ids=Box(0, V-1, (L,)), attention_mask=Box(0, 1, (L,)))``, int64, left-padded."""
    return spaces.Dict({
        "input_ids": spaces.Box(0, vocab_size - 1, shape=(seq_len,), dtype=np.int64),
        "attention_mask": spaces.Box(0, 1, shape=(seq_len,), dtype=np.int64),
    })


class TextGenEnv(gym.Env):
    """A language model writes a completion for a prompt, one token per step, and is paid by a reward model.

    ## Description
    RLHF as ordinary RL (lecture slides, "The RL setup: connection to language models"): the state is
    the prompt plus the tokens generated so far, the action is the next token, the policy is the
    language model, and the reward is the reward model's score of the finished text minus a per-token
    KL penalty that keeps the policy close to the frozen reference model ("Reward hacking"). The reward
    is the per-token form of lm-human-preferences (Ziegler et al. 2019).

    By default the env loads the embedded task (``textenv.default``): a tiny GPT-2 fine-tuned on
    synthetic movie reviews (the SFT model, which is also the reference), its prompts, and a reward model
    trained on preference pairs.

    ## Action Space
    ``Discrete(V)``: the id of the next token. ``V`` is the number of logits the model produces (its LM
    head), which may exceed the tokenizer's size. An id outside ``[0, V)`` raises a ValueError.

    ## Observation Space
    ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int64))`` with
    ``L = max_prompt_tokens + max_new_tokens``. LEFT-padded: the newest token is always at position
    ``L - 1``, so ``logits[:, -1]`` of a forward pass is the next-token distribution, and position ids are
    ``attention_mask.cumsum(-1) - 1``. Padding positions hold the pad id (the EOS id when the tokenizer
    has no pad token) and mask 0.

    ## Rewards
    Per step ``r_t = -kl_coef * KL_t``; the step that ends the episode also gets the reward score of
    ``prompt + completion`` (and ``no_eos_penalty`` when the completion holds no EOS). How ``KL_t`` is
    paid depends on who knows the policy:

    - (a) ``policy`` given (an object with ``next_token_logits(input_ids, attention_mask) -> (N, V)``,
      e.g. the agent's LM actor-critic, or a plain causal LM that the env wraps in an ``IncrementalLM``):
      the env computes ``KL_t`` with ``kl_estimator`` between the policy's sampling distribution
      (``env.sampling.sampling_logits``) and the reference, so the return is literally RM score minus KL.
    - (b) no policy: ``r_t = +kl_coef * log pi_ref(a_t | s_t)`` and the agent adds
      ``-kl_coef * log pi(a_t | s_t)`` itself. Summed, the two are ``-kl_coef * k1``; in expectation the
      agent's part is an entropy bonus, which is why Stable-Baselines3's ``ent_coef`` is its counterpart.

    The reference sees the same temperature as the policy but no top-k / top-p (see
    ``textenv.text.sampling``), so the KL stays finite.

    ## Starting State
    A prompt drawn uniformly from ``prompts`` with ``self.np_random``, or the one in
    ``reset(options={"prompt": text or a list of int token ids})`` (the only option; bytes, floats and bools
    are refused, not read as ids). ``seed`` is None or an int >= 0. Prompts longer than ``max_prompt_tokens`` are
    truncated from the LEFT (the end of a prompt matters most for what comes next; a leading BOS token
    that the tokenizer adds is kept) with a warning; an empty prompt is a ValueError. Text prompts are
    tokenized with the tokenizer's special tokens (e.g. the BOS the model was fine-tuned after).

    Every ``reset`` and ``step`` is all or nothing: a bad argument, a model returning NaN logits or a reward
    function that raises or returns something other than finite numbers is a TypeError, ValueError or
    RuntimeError that names the cause, and the env is left exactly as before the call.

    ## Episode End
    Termination: the action is the EOS token (when ``stop_at_eos``).
    Truncation: ``max_new_tokens`` tokens were generated without EOS.

    ## Information
    Every step: ``"ref_logprob"`` (log-probability of the action under the reference); with a policy also
    ``"kl"`` (``KL_t``) and ``"policy_logprob"``. The last step adds ``"rm_score"`` (the reward model's
    score, normalised when the RM's config has ``reward_mean`` / ``reward_std``), ``"completion"`` (the decoded
    completion) and ``"prompt"``. ``reset`` returns ``{"prompt": text}``.

    ## Arguments
    ```python
    import gymnasium as gym
    from textenv.text.config import TextGenConfig

    env = gym.make("textenv:TextGen-v0")  # the embedded default task
    env = gym.make("textenv:TextGen-v0", model="path/to/sft", reward="path/to/rm", prompts=["The movie"],
                   max_new_tokens=24, kl_coef=0.05, kl_estimator="k3", temperature=0.7)
    env = gym.make("textenv:TextGen-v0", config=TextGenConfig(model="path/to/sft", reward="path/to/rm"))
    envs = gym.make_vec("TextGen-v0", num_envs=64, vectorization_mode="vector_entry_point")
    ```

    - ``config``: a ``TextGenConfig`` (``textenv.text.config``), whose fields are the task's settings, each
      documented there with its one default: the models (``model``, ``tokenizer``, ``ref_model``), the reward
      (``reward``, ``reward_label``, ``reward_tokenizer``, ``normalize_reward``), the prompts (``prompts``,
      ``prompt_column``, ``prompt_split``), the episode (``max_new_tokens``, ``max_prompt_tokens``,
      ``stop_at_eos``, ``no_eos_penalty``), the penalty (``kl_coef``, ``kl_estimator``), the sampling
      distribution (``temperature``, ``top_k``, ``top_p``: ``env.sampling``, which the agent must sample with),
      ``prompt_cache_mb`` and ``device``. A ``None`` model, reward or prompt source is the registered task's:
      ``TextGen-v0`` is registered with ``config=textenv.default.env_config()``, the embedded task.
    - ``**settings``: fields of ``TextGenConfig`` that replace the config's (how ``gym.make(..., max_new_tokens=8)``
      reaches it); an unknown name is a TypeError that lists the fields.
    - ``policy``: the acting policy, shared with the agent (mode (a) above); ``None`` for mode (b).
    - ``render_mode``: ``None``, ``"ansi"`` (returns ``"prompt[completion so far]"``), ``"human"`` (prints it) or
      ``"rgb_array"`` (returns the prompt and the completion so far drawn into a (256, 640, 3) uint8 image, the
      completion in blue: what Stable-Baselines3's ``make_vec_env`` and video recorders ask for).

    The checks: ``kl_coef`` is a finite number in ``[0, 1e6]`` (``config.MAX_KL_COEF``); an adaptive KL controller
    hands the env its new beta with the next reset, ``reset(options={"kl_coef": 0.1})``, checked the same way,
    which holds from that reset on (the attribute ``env.unwrapped.kl_coef`` can also be set). ``temperature >=
    1e-4`` (``sampling.MIN_TEMPERATURE``: lower ones overflow float32 logits). ``max_prompt_tokens +
    max_new_tokens`` must fit the model's positions. The prompt list is prefilled into the reference's prompt
    cache at the first step while it fits ``prompt_cache_mb``.

    ## Version History
    - v0: initial version.
    """

    metadata = {"render_modes": ["ansi", "human", "rgb_array"], "render_fps": 4}

    def __init__(self, config: TextGenConfig | None = None, *, policy=None, render_mode: str | None = None,
                 **settings: Any) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        fork_safe_threads()
        self.config = make_config(config, **settings)
        self.core = TextGenCore(self.config, 1, policy)
        self.action_space = spaces.Discrete(self.core.vocab_size)
        self.observation_space = observation_space(self.core.vocab_size, self.core.seq_len)
        self._ended = False

    # -- what an agent reads from the env -----------------------------------------------------------

    @property
    def kl_coef(self) -> float:
        return self.core.kl_coef

    @kl_coef.setter
    def kl_coef(self, value: float) -> None:
        self.core.kl_coef = value

    @property
    def sampling(self):
        """The ``SamplingConfig`` actions must be sampled with."""
        return self.core.sampling

    start_model = property(lambda self: self.core.start_model,
                           doc="The causal LM a policy starts from (config.model); the reference too unless ref_model was given.")
    ref_model = property(lambda self: self.core.ref_model, doc="The frozen reference model.")
    tokenizer = property(lambda self: self.core.tokenizer)
    reward_fn = property(lambda self: self.core.reward_fn, doc="The checked RewardFn.")
    eos_token_id = property(lambda self: self.core.eos_token_id)
    pad_token_id = property(lambda self: self.core.pad_token_id)

    # -- Gymnasium API ----------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        # All or nothing: the seed, the options and the prompt are checked before the episode changes.
        seed = check_seed(seed)
        options = check_options(options, ("prompt", "kl_coef"))
        prompt = options.get("prompt")
        kl_coef = self.core.kl_coef_option(options)
        encoded = None if prompt is None else self.core.encode_prompt(prompt)
        before = self._np_random, self._np_random_seed
        try:  # a drawn prompt may still fail to encode: then the generator is the old one, in its old state
            with rollback_rngs([self._np_random]):
                super().reset(seed=seed)
                if encoded is None:
                    encoded = self.core.encode_prompt(self.core.sample_prompt(self.np_random))
        except BaseException:
            self._np_random, self._np_random_seed = before
            raise
        if kl_coef is not None:
            self.core.kl_coef = kl_coef
        (text,) = self.core.start_rows([0], [encoded])
        self._ended = False
        if self.render_mode == "human":
            self.render()
        return self._obs(), {"prompt": text}

    def step(self, action):
        if self._ended:
            raise RuntimeError("the episode has ended (terminated or truncated): call reset() before step()")
        if not self.core.live[0]:
            raise RuntimeError("step() called before reset(): call reset() first")
        expected = f"a single token id (an int in [0, {self.core.vocab_size}))"
        try:
            arr = np.asarray(action)
        except (TypeError, ValueError, RuntimeError) as e:  # ragged lists, tensors numpy cannot read
            raise ValueError(f"action must be {expected}, got {short(action)} ({e})") from None
        if arr.ndim != 0:
            raise ValueError(f"action must be {expected}, got shape {arr.shape}: {short(action)}")
        parts = self.core.step(arr.reshape(1))
        terminated, truncated = bool(parts.terminated[0]), bool(parts.truncated[0])
        self._ended = terminated or truncated
        if self.render_mode == "human":
            self.render()
        return self._obs(), float(parts.reward[0]), terminated, truncated, parts.row_info(0)

    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn('render() called without a render_mode; use TextGenEnv(render_mode="ansi"), "human" or "rgb_array"')
            return None
        if self.render_mode == "rgb_array":
            return render_rgb(self.core, 0)
        text = self.core.render_row(0)
        if self.render_mode == "ansi":
            return text
        print(text)
        return None

    def _obs(self) -> dict[str, np.ndarray]:
        obs = self.core.observe()
        return {k: v[0] for k, v in obs.items()}
