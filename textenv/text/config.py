"""TextGenConfig: every setting of the TextGen-v0 task, in one frozen dataclass with one default per knob.

The core, the single env, the vector env and the RLHF config all take it; ``gym.make("TextGen-v0", **kwargs)``
builds it from its keyword arguments (``make_config``). What is not a setting of the task stays an argument of
the env: ``num_envs`` (the vector env's rows), ``policy`` (the live actor the agent shares) and ``render_mode``.

The default task is not imported here: ``TextGen-v0`` is registered with ``config=TextGenConfig(model=...,
reward=..., prompts=...)`` pointing at ``textenv.default``'s artifacts, and ``make_config`` fills a ``None``
model, reward or prompt source from that registered config.

Importing this module is cheap (no torch): the checks that need torch (the sampling settings, the KL
estimator) run in ``TextGenCore``, before any model is loaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

MAX_KL_COEF = 1e6
"""The largest kl_coef. RLHF uses 0.01-1 and adaptive controllers move it by a few percent per update; the
per-token penalty is computed in float32, where coefficients near 1e38 overflow to inf."""

DEFAULTED_BY_REGISTRY = ("model", "reward", "prompts")
"""The fields whose ``None`` means "the registered TextGen-v0 task's" (the embedded default task)."""


@dataclass(frozen=True)
class TextGenConfig:
    """The TextGen-v0 task: models, reward, prompts, episode length, the KL penalty and the sampling distribution.

    Frozen: change a setting with ``dataclasses.replace(config, max_new_tokens=32)``. See ``TextGenEnv`` for
    what each setting does to the episode; the checks (with their error messages) run when an env is made.
    """

    model: Any = None
    """causal LM (name, path or module): the model an agent's policy starts from, and the frozen reference
    unless ``ref_model`` is given. The env never trains it. None: the registered default (the embedded SFT model)"""
    tokenizer: Any = None
    """its tokenizer (name, path or object); None: the one saved with ``model``. Its vocabulary must fit the model's"""
    ref_model: Any = None
    """a separate frozen reference (name, path or module); None: ``model`` is the reference"""
    reward: Any = None
    """``(prompts, completions) -> scores``, a sequence-classification model, or its name / path. None: the
    registered default (the embedded reward model)"""
    reward_label: int | str | None = None
    """which logit of a reward classifier with several labels is the score: an index or a name in its
    ``config.label2id`` (e.g. 1 or "POSITIVE"). None: a one-label reward model's logit"""
    reward_tokenizer: Any = None
    """the reward model's tokenizer when ``reward`` is passed as a module (a name / path brings its own)"""
    normalize_reward: bool = True
    """apply the reward model config's ``reward_mean`` / ``reward_std`` to its scores"""
    prompts: Any = None
    """the prompt source: a list of str, a ``datasets.Dataset``, a .txt/.json/.jsonl/.csv/.parquet file, a
    ``save_to_disk`` folder or a Hub dataset "name" / "name:split" (``textenv.text.prompts.load_prompts``).
    None: the registered default (the embedded task's train prompts)"""
    prompt_column: str | None = None
    """the column (or JSON field) holding the prompts; None: the first of "prompt", "query", "text" the data has"""
    prompt_split: str | None = None
    """the split of a Hub dataset or a saved DatasetDict; None: the one "name:split" names, else the "train" split"""
    max_new_tokens: int = 24
    """response length limit (tokens): an episode is truncated after this many steps"""
    max_prompt_tokens: int = 12
    """prompt budget (tokens): a longer prompt keeps its LAST max_prompt_tokens tokens (cut from the left: what
    comes next depends most on the end; a leading BOS the tokenizer adds is kept), with a warning. The
    observation holds ``max_prompt_tokens + max_new_tokens`` positions, which must fit the model's context"""
    kl_coef: float = 0.1
    """beta: every generated token pays ``-kl_coef * KL_t``; a finite number in [0, MAX_KL_COEF]. An adaptive
    controller starts from it and hands the env each new value with ``reset(options={"kl_coef": ...})``"""
    kl_estimator: str = "k1"
    """per-token KL estimator of the penalty: "k1", "abs", "k2", "k3" or "full" (``rlcore.kl``)"""
    temperature: float = 1.0
    """sampling temperature (>= 1e-4), for the policy and the reference alike"""
    top_k: int = 0
    """policy-side top-k (0: off); the reference is never truncated, so the KL stays finite"""
    top_p: float = 1.0
    """policy-side nucleus, in (0, 1] (1.0: off)"""
    stop_at_eos: bool = True
    """choosing EOS ends the episode; False: every response runs max_new_tokens tokens (fixed-length speed runs)"""
    no_eos_penalty: float = 0.0
    """added to the final reward of a response that holds no EOS (e.g. -1 to discourage rambling)"""
    prompt_cache_mb: float = 64.0
    """memory for the reference's prefill of each prompt, so that a prompt seen before costs no forward; 0: off"""
    device: str = "auto"
    """where the env's reference and reward model run: "auto" (a model module's device, else CUDA when
    available, else CPU) or a torch device"""

    @property
    def seq_len(self) -> int:
        """Positions of an observation: ``max_prompt_tokens + max_new_tokens``."""
        return self.max_prompt_tokens + self.max_new_tokens

    @property
    def n_steps(self) -> int:
        """Env steps that hold one whole response per row: the rollout length (SB3's and agents.PPO's ``n_steps``)
        for which every update sees complete responses."""
        return self.max_new_tokens


def make_config(config: TextGenConfig | None = None, **settings) -> TextGenConfig:
    """The config an env runs: ``config`` (default ``TextGenConfig()``) with ``settings`` replaced, and a ``None``
    model, reward or prompt source taken from the registered TextGen-v0 task.

    Raises:
        TypeError: ``config`` is not a TextGenConfig, or a setting is not one of its fields (the error lists them).
    """
    if config is None:
        config = TextGenConfig()
    if not isinstance(config, TextGenConfig):
        raise TypeError(f"config must be a TextGenConfig or None, got {type(config).__name__}")
    fields = [f.name for f in dataclasses.fields(TextGenConfig)]
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        raise TypeError(f"unknown TextGen-v0 setting(s) {', '.join(map(repr, unknown))}; the settings are the fields "
                        f"of TextGenConfig: {', '.join(fields)} (and the env's own num_envs, policy, render_mode)")
    config = dataclasses.replace(config, **settings)
    missing = [name for name in DEFAULTED_BY_REGISTRY if getattr(config, name) is None]
    if missing:
        default = registered_config()
        config = dataclasses.replace(config, **{name: getattr(default, name) for name in missing})
    return config


def registered_config() -> TextGenConfig:
    """The config TextGen-v0 is registered with (``import textenv`` registers it with the embedded default task)."""
    from gymnasium.envs.registration import registry

    import textenv  # noqa: F401  (registers TextGen-v0)

    spec = registry.get("TextGen-v0")
    config = None if spec is None else spec.kwargs.get("config")
    if not isinstance(config, TextGenConfig):
        raise RuntimeError("TextGen-v0 is not registered with a TextGenConfig (kwargs={'config': ...}), so a None "
                           "model, reward or prompts has no default: pass them")
    return config
