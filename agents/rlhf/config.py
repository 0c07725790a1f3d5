"""The settings of an RLHF run: the task, the KL penalty, PPO's update, the budget and the bookkeeping.

Every knob is one field with one default; ``run_settings`` flattens a config to the plain data a checkpoint
keeps, so a resume with other settings is refused with the list of differences.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Any

from agents.kl_control import AdaptiveKLController, FixedKLController
from agents.policies import ActorCritic
from agents.ppo import PPOConfig
from rlcore.checks import check_int
from textenv.text.config import TextGenConfig

# PPOConfig fields the RLHF loop has no use for: its rollout is one whole response per row.
NOT_FOR_RLHF = {
    "n_steps": "a rollout is one whole response per row: set num_envs (responses per iteration) and "
               "env.max_new_tokens (their length limit)",
    "minibatch_by": "minibatches always hold whole responses",
    "logprob_reward_coef": "beta has one owner, config.kl (mode b's -beta * log pi is paid by the rollout)",
    "log_dir": "use out_dir",
}


def rlhf_ppo_config(**overrides) -> PPOConfig:
    """PPO's update settings for text (the defaults of ``RLHFConfig.ppo``, chosen with benchmarks/sweep_rlhf.py):
    gamma = 1 (the score arrives on the last token), lambda = 0.95, no entropy bonus, clipped value loss,
    whitened advantages, gradient clipping, the learning rate decaying linearly to 0 over the budget."""
    defaults = dict(n_epochs=4, n_minibatches=4, learning_rate=3e-4, anneal_lr=True, gamma=1.0, gae_lambda=0.95,
                    clip_coef=0.2, clip_vloss=True, vf_coef=0.5, ent_coef=0.0, norm_adv=True,
                    norm_adv_over="minibatch", max_grad_norm=1.0, progress_bar=False)
    return PPOConfig(**{**defaults, **overrides})


@dataclass
class KLConfig:
    """How the KL penalty's coefficient beta moves. Beta starts at ``env.kl_coef`` (the TextGen-v0 task's one
    beta; 0 switches the penalty off: the reward-hacking experiment)."""

    target: float | None = 4.0
    """KL per response (nats) the adaptive controller holds; None keeps beta fixed"""
    horizon: float = 2000.0
    """responses over which the controller spreads a full 20% correction"""

    def controller(self, init_coef: float):
        """The controller of a run whose beta starts at ``init_coef``."""
        if self.target is None or init_coef == 0:
            return FixedKLController(init_coef)
        return AdaptiveKLController(init_coef, self.target, self.horizon)


@dataclass
class LoRAConfig:
    """A LoRA adapter on the policy LM (``peft``, the ``lora`` extra): only the adapter and the value head train,
    and the reference is the same module with the adapter switched off, so no second copy of the LM is kept."""

    r: int = 16
    """rank of the low-rank update B A"""
    alpha: float = 32.0
    """scale: the update is (alpha / r) B A"""
    dropout: float = 0.05
    """peft's lora_dropout; our policy LM runs in eval mode (rollouts and updates score one function), so it
    only acts if you train the adapter elsewhere"""
    target_modules: Any = None
    """module names to adapt (a list, or peft's "all-linear"); None: peft's choice for the architecture
    (GPT-2: c_attn; Llama: q_proj, v_proj)"""

    def check(self) -> None:
        check_int("lora.r", self.r)
        for name in ("alpha", "dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TypeError(f"lora.{name} must be a finite number, got {value!r}")
        if self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise ValueError(f"lora.alpha must be > 0 and lora.dropout in [0, 1), got alpha={self.alpha}, "
                             f"dropout={self.dropout}")
        t = self.target_modules
        if not (t is None or isinstance(t, str) or (isinstance(t, (list, tuple)) and t and all(isinstance(x, str) for x in t))):
            raise TypeError(f"lora.target_modules must be None, a string or a non-empty list of module names, got {t!r}")


@dataclass
class RLHFConfig:
    """One RLHF run: the task, the KL control, PPO's update, the budget and the bookkeeping."""

    env: TextGenConfig = field(default_factory=TextGenConfig)
    """the TextGen-v0 task (models, reward, prompts, response length, sampling, ``kl_coef``: beta at the start);
    None model, reward or prompts: the embedded default task's"""
    num_envs: int = 32
    """rows of the training vector env: the responses of one iteration (per rank under torchrun), generated
    in parallel"""
    kl: KLConfig = field(default_factory=KLConfig)
    """how beta moves from ``env.kl_coef`` (the adaptive controller, or fixed)"""
    ppo: PPOConfig = field(default_factory=rlhf_ppo_config)
    """PPO's update (epochs, minibatches of whole responses, learning rate and its annealing, losses);
    n_steps, minibatch_by, logprob_reward_coef and log_dir do not apply (a ValueError says why)"""
    responses: int = 3200
    """the budget: generated responses to train on (whole iterations of num_envs responses)"""
    critic: str = "shared"
    """'shared' value head on the policy's trunk, or 'separate' trunk initialised from critic_model"""
    critic_model: Any = None
    """the separate critic's starting trunk (e.g. the reward model); None: a copy of the policy"""
    advantage: str = "gae"
    """'gae': PPO's, from the critic's values (agents.functional.response_gae); 'rloo' or 'grpo': the
    critic-free rungs, each response's return against the other responses to its prompt (groups of
    ``group_size`` rows share one; the value loss is then 0)"""
    group_size: int = 4
    """rloo / grpo: responses per prompt, K >= 2 (num_envs must be a multiple of it)"""
    kl_in: str = "reward"
    """'reward': the env pays -beta * KL_t per token (lm-human-preferences, RLOO); 'loss': GRPO's form, the
    env pays the score only and the update adds beta * k3(pi, pi_ref) per token to the loss"""
    policy: ActorCritic | None = None
    """your own ActorCritic instead of an LMActorCritic; without next_token_logits it runs in mode (b)"""
    gold: Any = "default"
    """(prompts, completions) -> true scores, or None; 'default': the embedded task's judge when env.model is None"""
    seed: int = 0
    """seeds the policy's sampling, the prompts drawn and the minibatch order (each iteration from its own seed)"""
    device: str = "auto"
    """the policy's device"""
    mixed_precision: bool = False
    """bf16 autocast in the update (CUDA, and CPUs with native bf16: AVX512-BF16 or AMX)"""
    out_dir: str | None = None
    """where checkpoint.pt and progress.csv go (None: nowhere); checked for writability and locked for the run"""
    checkpoint_every: int = 1
    """iterations between checkpoints (with an out_dir): a run killed even by ``kill -9`` loses at most this
    many; progress.csv is rewritten after each one"""
    resume: bool = False
    """continue from out_dir/checkpoint.pt, with the same settings (FileNotFoundError when there is none yet)"""
    n_samples: int = 3
    """completions kept per iteration in the history"""
    log_every: int = 0
    """print a metrics line every this many iterations (0: silent)"""
    lora: LoRAConfig | None = None
    """train a LoRA adapter (and the value head) instead of the whole LM; the reference is the base model with
    the adapter off; checkpoints keep the adapter, not the LM. None: full fine-tune"""
    gradient_checkpointing: bool = False
    """recompute the LM's activations in the backward pass (the HF model's gradient_checkpointing_enable):
    less memory in the update for about one more forward"""

    @property
    def iterations(self) -> int:
        """rollout + update rounds the budget buys: ceil(responses / num_envs)"""
        return math.ceil(self.responses / self.num_envs)

    def check(self) -> None:
        """Raise ValueError / TypeError on settings that cannot run, before any work."""
        check_int("responses", self.responses)
        check_int("checkpoint_every", self.checkpoint_every)
        check_int("num_envs", self.num_envs)
        if not isinstance(self.env, TextGenConfig):
            raise TypeError(f"env must be a textenv.text.config.TextGenConfig, got {type(self.env).__name__}")
        if self.advantage not in ("gae", "rloo", "grpo"):
            raise ValueError(f"advantage must be 'gae', 'rloo' or 'grpo', got {self.advantage!r}")
        if self.kl_in not in ("reward", "loss"):
            raise ValueError(f"kl_in must be 'reward' (paid per token by the env) or 'loss' (GRPO's KL term), "
                             f"got {self.kl_in!r}")
        if self.advantage != "gae":
            check_int("group_size", self.group_size)
            if self.group_size < 2 or self.num_envs % self.group_size:
                raise ValueError(f"advantage={self.advantage!r} compares the group_size responses to one prompt: "
                                 f"group_size must be >= 2 and divide num_envs={self.num_envs}, "
                                 f"got {self.group_size}")
        if self.resume and not self.out_dir:
            raise ValueError("resume=True needs out_dir (the folder holding checkpoint.pt)")
        if self.critic not in ("shared", "separate"):
            raise ValueError(f"critic must be 'shared' or 'separate', got {self.critic!r}")
        if not isinstance(self.gradient_checkpointing, bool):
            raise TypeError(f"gradient_checkpointing must be True or False, got {self.gradient_checkpointing!r}")
        if self.lora is not None:
            if not isinstance(self.lora, LoRAConfig):
                raise TypeError(f"lora must be a LoRAConfig or None, got {type(self.lora).__name__}")
            self.lora.check()
            if self.policy is not None:
                raise ValueError("lora applies to the LMActorCritic train_rlhf builds; with your own `policy`, "
                                 "add the adapter to it yourself (agents.lora.add_lora) and leave lora=None")
            if self.critic != "shared":
                raise ValueError("lora needs critic='shared' (the value head reads the adapted trunk)")
        defaults = PPOConfig()
        for name, why in NOT_FOR_RLHF.items():
            if getattr(self.ppo, name) != getattr(defaults, name):
                raise ValueError(f"ppo.{name}={getattr(self.ppo, name)!r} does not apply to train_rlhf: {why}")


# Settings that do not change what a run computes: a resume may change them.
RESUME_MAY_CHANGE = frozenset({"resume", "out_dir", "checkpoint_every", "log_every", "n_samples", "device",
                               "env.device", "env.prompt_cache_mb", "ppo.progress_bar", "gradient_checkpointing"})
RENAMED_SETTINGS = {"env.num_envs": "num_envs", "kl.init_coef": "env.kl_coef"}
"""Settings a checkpoint written before the TextGenConfig change keeps under their old names."""


def run_settings(config: "RLHFConfig") -> dict[str, Any]:
    """The settings that shape a run's numbers, flattened (``"ppo.learning_rate": 1e-4``), as plain data.

    ``responses`` (the budget) counts only with ``ppo.anneal_lr``, where the learning rate decays to 0 over
    it; a constant-rate run may be resumed for a larger budget.
    """
    settings = _flatten_settings(config, "")
    if not config.ppo.anneal_lr:
        del settings["responses"]
    return settings


def _flatten_settings(obj, prefix: str) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(obj):
        key, value = prefix + f.name, getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(_flatten_settings(value, key + "."))
        elif key not in RESUME_MAY_CHANGE:
            out[key] = describe_setting(value)
    return out


def describe_setting(value) -> Any:
    """A plain-data stand-in for a setting (loadable with weights_only=True): numbers and strings as they
    are, long lists by length and digest, models and functions by their class or qualified name."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        items = [describe_setting(v) for v in value]
        if len(items) <= 8:
            return items
        return f"<{len(items)} items, sha256 {hashlib.sha256(repr(items).encode()).hexdigest()[:16]}>"
    if isinstance(value, dict):
        return {str(k): describe_setting(v) for k, v in value.items()}
    kind = value if callable(value) and hasattr(value, "__qualname__") else type(value)
    return f"<{kind.__module__}.{kind.__qualname__}>"


def check_same_settings(saved: dict | None, now: dict, path) -> None:
    """Refuse to resume with settings other than the checkpoint's (version-1 checkpoints recorded none)."""
    if saved is None:
        return
    saved = {RENAMED_SETTINGS.get(k, k): v for k, v in saved.items()}
    missing = "<not set>"
    # A setting added after the checkpoint was written (absent from it) matches when left at its default.
    defaults = _flatten_settings(RLHFConfig(), "")
    keys = [k for k in sorted(set(saved) | set(now)) if saved.get(k, missing) != now.get(k, missing)
            and not (k not in saved and k in defaults and now.get(k) == defaults[k])]
    if not keys:
        return
    differ = "; ".join(f"{k} (checkpoint {saved.get(k, missing)!r}, now {now.get(k, missing)!r})" for k in keys)
    why = (" (with ppo.anneal_lr the learning rate decays to 0 over the `responses` budget: another value "
           "would change the schedule mid-run; a constant rate, anneal_lr=False, may be extended)"
           ) if "responses" in keys else ""
    raise ValueError(f"cannot resume from {path}: this run's settings differ from the checkpoint's: {differ}{why}. "
                     "Resume with the checkpoint's settings, or start a fresh run in another out_dir")
