"""RLHF with PPO on TextGen-v0: KL controllers, the per-iteration RLHF metrics, checkpoints, ``train_rlhf``.

    from agents.rlhf import RLHFConfig, train_rlhf
    result = train_rlhf(RLHFConfig(iterations=100, out_dir="outputs/rlhf"))   # the embedded default task
    result.history[-1]["gold_score"], result.agent.policy                    # curves, the trained LMActorCritic

Nothing here is a second PPO: ``train_rlhf`` is ``agents.PPO`` + ``agents.lm.LMActorCritic`` +
``TextGenVectorEnv`` in mode (a) (the env computes the per-token KL from the agent's own forward), with
a callback that reads the finished episodes of each rollout, sets the env's ``kl_coef`` from a KL
controller and writes checkpoints. The reward per token is lm-human-preferences' (Ziegler et al. 2019):
``r_t = -beta * KL_t`` plus the reward model's score on the last token (lecture slides, "Reward hacking").

Plugging in your own pieces (each is one field of the config; tests/test_rlhf.py runs every one):

    RLHFConfig(env=TextEnvConfig(model="path/or/hub-name"))           # any HF causal LM: policy init + reference
    RLHFConfig(env=TextEnvConfig(reward=lambda prompts, completions: scores))   # a Python reward function
    RLHFConfig(policy=MyActorCritic(...))  # your agents.policies.ActorCritic: forward(obs) -> (logits, values)
    RLHFConfig(critic="separate", critic_model=reward_path())          # a critic trunk started from the RM

A policy with ``next_token_logits(input_ids, attention_mask)`` (raw logits) runs in mode (a); one without
it runs in mode (b): the env pays ``+beta * log pi_ref`` and the agent subtracts ``beta * log pi`` itself.

Resuming: a checkpoint (out_dir/checkpoint.pt, written atomically every ``checkpoint_every`` iterations,
by default each one) holds the policy, value head, optimizer, KL controller, RNG states, counters, the
curves so far and the run's settings. Every ``segment_every`` iterations all rows start fresh episodes from
a seed that depends only on the iteration, so ``RLHFConfig(..., resume=True)`` from such a boundary
continues the very curve an uninterrupted run draws (same numbers on CPU); from any other checkpoint the
resumed run starts fresh episodes there (the responses in flight are the only loss). A resume whose
settings differ from the checkpoint's is refused with the list of differences.

Stopping: Ctrl-C (SIGINT) or SIGTERM lets the current iteration finish, writes a checkpoint there and
raises ``agents.run_guard.TrainingInterrupted`` saying where it is (a second Ctrl-C stops at once). One
live run per out_dir: a second one is refused (``FolderBusyError``); out_dir is checked for writability
before any work. progress.csv is rewritten after each checkpoint, so it never holds an iteration the
checkpoint does not.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import hashlib
import io
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch

from agents import functional as F
from agents.checkpoint import atomic_save, atomic_write, load_checkpoint
from agents.kl_control import AdaptiveKLController, FixedKLController
from agents.lm import LMActorCritic, env_sampling
from agents.policies import ActorCritic
from agents.ppo import PPO, PPOConfig
from agents.run_guard import RunFolder, StopSignals, TrainingInterrupted, with_context
from agents.utils import seed_everything
from textenv.checks import check_int
from textenv.text.decoding import IncrementalLM
from textenv.text.sampling import SamplingConfig

CHECKPOINT_FORMAT = "textenv.agents.rlhf"


# ---------------------------------------------------------------------------------------------- the env side
class ResponseStats(gym.vector.VectorWrapper):
    """Adds what the RLHF metrics need to a TextGen vector env's infos, and ends episodes at the response limit.

    - ``final_info`` of an ended row gains ``episode_kl`` (sum of the env's per-token ``kl``; mode (a) only),
      ``episode_ref_logprob`` and ``episode_tokens``.
    - ``pop_window()`` returns the sums of ``kl`` / ``ref_logprob`` over every step since the last call.
    - ``response_end_is_terminal`` (default): reaching ``max_new_tokens`` is reported as termination, not
      truncation. The reward model has already scored the text as it stands, so no value lies beyond it
      (lm-human-preferences treats the response as the whole episode); bootstrapping with gamma = 1 from
      a value head that was never trained on final states would feed its own estimate back into its targets.
    """

    def __init__(self, env: gym.vector.VectorEnv, response_end_is_terminal: bool = True):
        super().__init__(env)
        self.response_end_is_terminal = response_end_is_terminal
        n = env.num_envs
        self._ep_kl, self._ep_ref, self._ep_len = np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64)
        self._window = {"kl": 0.0, "ref_logprob": 0.0, "steps": 0}

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._ep_kl[:], self._ep_ref[:], self._ep_len[:] = 0.0, 0.0, 0
        return obs, info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        done = np.asarray(terminated) | np.asarray(truncated)
        final = info.get("final_info", {})
        ref = np.where(done, final.get("ref_logprob", 0.0), info.get("ref_logprob", 0.0)) if done.any() else info["ref_logprob"]
        has_kl = "kl" in info or "kl" in final
        kl = np.where(done, final.get("kl", 0.0), info.get("kl", 0.0)) if has_kl else np.zeros_like(ref)
        self._ep_kl += kl
        self._ep_ref += ref
        self._ep_len += 1
        self._window["kl"] += float(kl.sum())
        self._window["ref_logprob"] += float(ref.sum())
        self._window["steps"] += len(ref)
        if done.any():
            for key, value in (("episode_kl", self._ep_kl), ("episode_ref_logprob", self._ep_ref), ("episode_tokens", self._ep_len)):
                if key == "episode_kl" and not has_kl:
                    continue
                final[key], final[f"_{key}"] = np.where(done, value, 0).astype(value.dtype), done.copy()
            self._ep_kl[done], self._ep_ref[done], self._ep_len[done] = 0.0, 0.0, 0
        if self.response_end_is_terminal:
            terminated, truncated = done, np.zeros_like(done)
        return obs, reward, terminated, truncated, info

    def pop_window(self) -> dict:
        out, self._window = self._window, {"kl": 0.0, "ref_logprob": 0.0, "steps": 0}
        return out


def set_kl_coef(agent: PPO, value: float) -> None:
    """Set beta everywhere it is paid: the env (mode a, and mode b's +beta*log pi_ref) and the agent (mode b's -beta*log pi)."""
    agent.env.unwrapped.kl_coef = value
    if agent.config.logprob_reward_coef:
        agent.config.logprob_reward_coef = value  # PPO hands it to its rollouts every iteration


# ---------------------------------------------------------------------------------------------- per-iteration metrics
def ended_episodes(rollout) -> list[dict]:
    """One dict per episode that ended in the rollout, from the env's ``final_info`` (keys present in it)."""
    out = []
    for info, rows in rollout.episode_infos:
        for i in np.flatnonzero(rows):
            ep = {}
            for key, value in info.items():
                if key.startswith("_"):
                    continue
                mask = info.get(f"_{key}")
                if mask is None or mask[i]:
                    item = value[i]
                    ep[key] = item.item() if isinstance(item, np.generic) else item
            out.append(ep)
    return out


class RLHFCallback:
    """``PPO.learn`` callback: RLHF metrics of each iteration, and the KL controller's step.

    Adds to the iteration's metrics: ``rm_score`` (mean reward-model score of the finished episodes),
    ``gold_score`` (the task's judge on the same texts, when there is one), ``kl`` (mean KL per episode,
    nats), ``kl_per_token``, ``kl_coef`` (the beta this rollout was paid with), ``response_length``,
    ``tokens_per_s`` and ``gold_s`` (time spent judging), plus ``samples``: a few (prompt, completion, score).
    Then it sets the env's beta for the next rollout from the controller.

    Args:
        controller: a Fixed- or AdaptiveKLController.
        gold_fn: ``(prompts, completions) -> scores`` of the true objective, or None.
        n_samples: completions kept per iteration.
        history: list the metrics of every iteration are appended to (a resumed run passes the old one).
    """

    def __init__(self, controller, gold_fn: Callable | None = None, n_samples: int = 3, history: list | None = None):
        self.controller, self.gold_fn, self.n_samples = controller, gold_fn, n_samples
        self.history = [] if history is None else history

    def __call__(self, agent: PPO, metrics: dict) -> None:
        episodes = ended_episodes(agent.last_rollout)
        stats = self.iteration_stats(agent, episodes, metrics)
        metrics.update({k: v for k, v in stats.items() if k != "samples"})
        self.history.append({**{k: v for k, v in metrics.items() if isinstance(v, (int, float))}, "samples": stats["samples"]})
        set_kl_coef(agent, self.controller.update(stats["kl"], len(episodes)))

    def iteration_stats(self, agent: PPO, episodes: list[dict], metrics: dict) -> dict:
        window = agent.env.pop_window() if hasattr(agent.env, "pop_window") else {"steps": 0}
        nan = float("nan")
        rm = np.array([ep["rm_score"] for ep in episodes], dtype=float)
        lengths = np.array([ep.get("episode_tokens", nan) for ep in episodes], dtype=float)
        rollout = agent.last_rollout
        if episodes and "episode_kl" in episodes[0]:  # mode (a): the env measured KL_t
            kl_episode = float(np.mean([ep["episode_kl"] for ep in episodes]))
            kl_token = window["kl"] / max(window["steps"], 1)
        elif window["steps"]:  # mode (b): k1 = log pi - log pi_ref, averaged over the rollout's tokens
            kl_token = float(F.masked_mean(rollout.logprobs, rollout.mask)) - window["ref_logprob"] / window["steps"]
            kl_episode = kl_token * float(np.mean(lengths)) if episodes else nan
        else:
            kl_token = kl_episode = nan
        start = time.perf_counter()
        gold = nan
        if self.gold_fn is not None and episodes:
            gold = float(np.mean(self.gold_fn([ep["prompt"] for ep in episodes], [ep["text"] for ep in episodes])))
        samples = [
            {"prompt": ep["prompt"], "completion": ep["text"], "rm_score": float(ep["rm_score"])}
            for ep in episodes[: self.n_samples]
        ]
        return {
            "rm_score": float(rm.mean()) if len(rm) else nan,
            "gold_score": gold,
            "kl": kl_episode,
            "kl_per_token": kl_token,
            "kl_coef": float(agent.env.unwrapped.kl_coef),
            "response_length": float(np.mean(lengths)) if len(lengths) else nan,
            "tokens_per_s": float(metrics.get("steps_per_s", nan)),  # one env step is one generated token
            "gold_s": time.perf_counter() - start,
            "samples": samples,
        }


# ---------------------------------------------------------------------------------------------- checkpoints
def rng_state() -> dict:
    """torch (CPU and CUDA), NumPy and Python RNG states as plain data (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_rlhf_checkpoint(path, agent: PPO, controller, history: list, settings: dict | None = None) -> Path:
    """Policy (LM, value head, critic), optimizer, KL controller, RNG states, counters, curves and the run's
    ``settings`` (``run_settings``), atomically; refused (ValueError naming the tensor) when a weight is not finite."""
    return atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "version": 2,
            "policy_class": type(agent.policy).__name__,
            "policy": agent.policy.state_dict(),
            "optimizer": agent.optimizer.state_dict(),
            "kl_controller": controller.state_dict(),
            "rng": rng_state(),
            "iteration": agent.iteration,
            "num_timesteps": agent.num_timesteps,
            "history": history,
            "settings": settings,
        },
        path,
    )


def read_rlhf_checkpoint(path, settings: dict | None = None) -> dict:
    """The checkpoint at ``path`` for a resume: present, intact, and written by a run with these ``settings``.

    Raises:
        FileNotFoundError: no checkpoint there yet.
        ValueError: corrupt or damaged (SHA-256) file, or settings that differ (the message lists them).
    """
    try:
        ckpt = load_checkpoint(path, CHECKPOINT_FORMAT)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"cannot resume: no checkpoint at {path} (resume=True continues a run that has written one; "
            "without resume a fresh run starts there)"
        ) from e
    except ValueError as e:
        raise ValueError(f"cannot resume: {e}") from e
    if settings is not None:
        check_same_settings(ckpt.get("settings"), settings, path)
    return ckpt


def restore_rlhf_checkpoint(ckpt: dict, agent: PPO, controller, path) -> list:
    """Put what ``save_rlhf_checkpoint`` wrote into ``agent`` and ``controller``; returns the curves."""
    try:
        agent.policy.load_state_dict(ckpt["policy"])
        agent.optimizer.load_state_dict(ckpt["optimizer"])
        controller.load_state_dict(ckpt["kl_controller"])
        agent.iteration, agent.num_timesteps = int(ckpt["iteration"]), int(ckpt["num_timesteps"])
        set_rng_state(ckpt["rng"])
        history = list(ckpt["history"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise ValueError(f"cannot resume from {path}: the checkpoint does not fit this run ({type(e).__name__}: {e})") from e
    set_kl_coef(agent, controller.value)
    return history


def load_rlhf_checkpoint(path, agent: PPO, controller) -> list:
    """Restore everything ``save_rlhf_checkpoint`` wrote into ``agent`` and ``controller``; returns the curves.

    Raises:
        FileNotFoundError / ValueError: no checkpoint, a corrupt one, or one that does not fit this policy.
    """
    return restore_rlhf_checkpoint(read_rlhf_checkpoint(path), agent, controller, path)


# Settings that do not change what a run computes: a resume may change them.
RESUME_MAY_CHANGE = frozenset({"resume", "out_dir", "checkpoint_every", "log_every", "n_samples", "device",
                               "env.device", "ppo.progress_bar", "ppo.log_dir"})


def run_settings(config: "RLHFConfig") -> dict[str, Any]:
    """The settings that shape a run's numbers, flattened (``"ppo.learning_rate": 1e-4``), as plain data.

    ``iterations`` counts only with ``lr_schedule='linear'``, where the learning rate decays to 0 over it;
    a constant-rate run may be resumed for more iterations.
    """
    settings = _flatten_settings(config, "")
    if config.lr_schedule == "constant":
        del settings["iterations"]
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
    missing = "<not set>"
    keys = [k for k in sorted(set(saved) | set(now)) if saved.get(k, missing) != now.get(k, missing)]
    if not keys:
        return
    differ = "; ".join(f"{k} (checkpoint {saved.get(k, missing)!r}, now {now.get(k, missing)!r})" for k in keys)
    why = (" (with lr_schedule='linear' the learning rate decays to 0 over `iterations`: another value would "
           "change the schedule mid-run; a 'constant' schedule may be extended)") if "iterations" in keys else ""
    raise ValueError(f"cannot resume from {path}: this run's settings differ from the checkpoint's: {differ}{why}. "
                     "Resume with the checkpoint's settings, or start a fresh run in another out_dir")


# ---------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(policy, env_kwargs: dict, prompts: list[str], gold_fn: Callable | None = None, seed: int = 0) -> dict:
    """Sample one completion per prompt and score it: RM score, gold score, KL to the reference per episode.

    Runs its own TextGen vector env in mode (a) with ``env_kwargs`` (the training env's arguments), so the
    KL is the env's own per-token estimate summed over the response. Sampling uses a private generator
    seeded with ``seed``: evaluating never moves the training run's random state.

    Args:
        policy: an ``LMActorCritic``, anything with ``next_token_logits``, or a causal LM module.
    Returns:
        dict of lists / arrays: prompt, completion, rm_score, gold_score (NaN without a judge), kl, tokens.
    """
    from textenv.text.vector import TextGenVectorEnv

    runner = policy if hasattr(policy, "next_token_logits") else IncrementalLM(policy)
    kwargs = {**env_kwargs, "prompts": list(prompts)}
    env = ResponseStats(TextGenVectorEnv(num_envs=len(prompts), policy=runner, **kwargs))
    obs, _ = env.reset(seed=seed, options={"prompts": list(prompts)})
    sampling = env_sampling(env)
    n = len(prompts)
    out = {"prompt": [None] * n, "completion": [None] * n, "rm_score": np.full(n, np.nan),
           "kl": np.full(n, np.nan), "tokens": np.zeros(n, dtype=np.int64)}
    finished = np.zeros(n, dtype=bool)
    generator = None
    while not finished.all():
        logits = torch.as_tensor(runner.next_token_logits(obs["input_ids"], obs["attention_mask"]))
        if generator is None:
            generator = torch.Generator(logits.device).manual_seed(seed)
        actions = sampling.sample(logits, generator=generator).cpu().numpy()
        obs, _, terminated, truncated, info = env.step(actions)
        for i in np.flatnonzero((terminated | truncated) & ~finished):
            final = info["final_info"]
            out["prompt"][i], out["completion"][i] = final["prompt"][i], final["text"][i]
            out["rm_score"][i], out["kl"][i] = final["rm_score"][i], final["episode_kl"][i]
            out["tokens"][i] = final["episode_tokens"][i]
            finished[i] = True
    out["gold_score"] = np.asarray(gold_fn(out["prompt"], out["completion"]), dtype=float) if gold_fn else np.full(n, np.nan)
    env.close()
    return out


# ---------------------------------------------------------------------------------------------- train_rlhf
def rlhf_ppo_config(**overrides) -> PPOConfig:
    """PPO settings for text: gamma = 1 (the score arrives on the last token), lambda = 0.95, whole
    episodes per minibatch, no entropy bonus, clipped value loss, whitened advantages, gradient clipping."""
    defaults = dict(
        n_steps=16, n_epochs=4, n_minibatches=4, minibatch_by="env", learning_rate=1e-4, anneal_lr=False,
        gamma=1.0, gae_lambda=0.95, clip_coef=0.2, clip_vloss=True, vf_coef=0.5, ent_coef=0.0, norm_adv=True,
        max_grad_norm=1.0, progress_bar=False,
    )
    return PPOConfig(**{**defaults, **overrides})


@dataclass
class TextEnvConfig:
    """The TextGen-v0 task: models, reward, prompts and the sampling distribution."""

    model: Any = None
    """SFT / reference causal LM (name, path or module); the policy starts as a copy. None: the embedded default."""
    reward: Any = None
    """reward model (name, path, module) or a Python function (prompts, completions) -> scores. None: the default RM."""
    prompts: Any = None
    """training prompts (list, dataset or path). None: the default task's train split."""
    num_envs: int = 32
    """episodes generated in parallel (rows of the vector env)"""
    max_new_tokens: int = 16
    """response length limit (tokens)"""
    max_prompt_tokens: int = 12
    """prompt budget (tokens); longer prompts are cut from the left"""
    temperature: float = 1.0
    """sampling temperature, for the policy and the reference alike"""
    top_k: int = 0
    """policy-side top-k (0: off)"""
    top_p: float = 1.0
    """policy-side nucleus (1.0: off)"""
    kl_estimator: str = "k1"
    """per-token KL estimator of the env's penalty (textenv.text.kl)"""
    device: str = "auto"
    """where the env's reference and reward model run"""

    def env_kwargs(self) -> dict:
        """Keyword arguments of TextGenVectorEnv (without num_envs and policy)."""
        out = {k: getattr(self, k) for k in ("model", "reward", "prompts", "max_new_tokens", "max_prompt_tokens",
                                             "temperature", "top_k", "top_p", "kl_estimator", "device")}
        return {k: v for k, v in out.items() if v is not None}


@dataclass
class KLConfig:
    """The KL penalty's coefficient beta and how it moves."""

    init_coef: float = 0.1
    """beta at the start (0 switches the penalty off: the reward-hacking experiment)"""
    target: float | None = 4.0
    """KL per episode (nats) the adaptive controller holds; None keeps beta fixed"""
    horizon: float = 2000.0
    """episodes over which the controller spreads a full 20% correction"""

    def controller(self):
        if self.target is None or self.init_coef == 0:
            return FixedKLController(self.init_coef)
        return AdaptiveKLController(self.init_coef, self.target, self.horizon)


@dataclass
class RLHFConfig:
    """One RLHF run: the task, the KL control, PPO's settings and the bookkeeping."""

    env: TextEnvConfig = field(default_factory=TextEnvConfig)
    """the TextGen-v0 task"""
    kl: KLConfig = field(default_factory=KLConfig)
    """the KL penalty"""
    ppo: PPOConfig = field(default_factory=rlhf_ppo_config)
    """PPO's hyperparameters (n_steps is the rollout length per row; minibatch_by='env' keeps episodes whole)"""
    iterations: int = 50
    """PPO iterations (rollout + update)"""
    lr_schedule: str = "linear"
    """'linear': decay the learning rate to 0 over the iterations (continues across a resume); 'constant'"""
    critic: str = "shared"
    """'shared' value head on the policy's trunk, or 'separate' trunk initialised from critic_model"""
    critic_model: Any = None
    """the separate critic's starting trunk (e.g. the reward model); None: a copy of the policy"""
    policy: ActorCritic | None = None
    """your own ActorCritic instead of an LMActorCritic; without next_token_logits it runs in mode (b)"""
    gold: Any = "default"
    """(prompts, completions) -> true scores, or None; 'default': the embedded task's judge when env.model is None"""
    seed: int = 0
    """seeds torch, NumPy, Python and the env"""
    device: str = "auto"
    """the policy's device"""
    mixed_precision: bool = False
    """bf16 autocast in the update on CUDA"""
    out_dir: str | None = None
    """where checkpoint.pt and progress.csv go (None: nowhere); checked for writability and locked for the run"""
    checkpoint_every: int = 1
    """iterations between checkpoints (with an out_dir): a run killed even by ``kill -9`` loses at most this
    many; progress.csv is rewritten after each one"""
    segment_every: int = 10
    """with an out_dir, every this many iterations all rows start fresh episodes, from a seed that depends only
    on the iteration, so a resume from such a boundary continues the uninterrupted curve exactly (from any
    other checkpoint it continues with fresh episodes there: nothing is lost but the responses in flight)"""
    resume: bool = False
    """continue from out_dir/checkpoint.pt, with the same settings (FileNotFoundError when there is none yet)"""
    n_samples: int = 3
    """completions kept per iteration in the history"""
    log_every: int = 0
    """print a metrics line every this many iterations (0: silent)"""


@dataclass
class RLHFResult:
    agent: PPO
    history: list[dict]
    checkpoint: Path | None


def default_gold(config: RLHFConfig) -> Callable | None:
    if callable(config.gold):
        return config.gold
    if config.gold == "default" and config.env.model is None:  # the embedded SFT model writes reviews: judge them
        from textenv.default import gold_score

        return gold_score
    return None


def make_env(config: RLHFConfig, policy=None) -> ResponseStats:
    """The training vector env (mode (a) when ``policy`` has next_token_logits), wrapped in ResponseStats."""
    from textenv.text.vector import TextGenVectorEnv

    kwargs = config.env.env_kwargs()
    kwargs["kl_coef"] = config.kl.init_coef
    env = TextGenVectorEnv(num_envs=config.env.num_envs, policy=policy, **kwargs)
    return ResponseStats(env)


def make_policy(config: RLHFConfig, sampling) -> ActorCritic:
    """Your ``config.policy``, or an LMActorCritic copy of the SFT model sampling with ``sampling``."""
    if config.policy is not None:
        return config.policy
    model = config.env.model
    if model is None:
        from textenv.default import sft_path

        model = sft_path()
    elif isinstance(model, torch.nn.Module):
        model = copy.deepcopy(model)  # the env keeps the original as the frozen reference
    return LMActorCritic(model, sampling=sampling, critic=config.critic, critic_model=config.critic_model,
                         device=config.device, mixed_precision=config.mixed_precision)


def train_rlhf(config: RLHFConfig, callback: Callable | None = None) -> RLHFResult:
    """Run (or resume) RLHF with PPO; returns the agent, the per-iteration history and the checkpoint path.

    ``callback(agent, metrics) -> False`` stops early and writes a checkpoint there (a resume from a
    ``segment_every`` boundary continues exactly the uninterrupted curve; from elsewhere, a fresh segment).
    With an out_dir, SIGINT (Ctrl-C) or SIGTERM stops the same way at the end of the current iteration,
    then raises ``TrainingInterrupted`` (a KeyboardInterrupt) naming the iteration and the checkpoint.

    Raises:
        OSError: out_dir is not writable (checked before any work), or writing a file failed (the message
            names it; the last good checkpoint is kept).
        FolderBusyError: another live run writes to out_dir.
        FileNotFoundError: ``resume=True`` but out_dir holds no checkpoint yet (resume continues a run; it
            does not start one).
        ValueError: a corrupt or damaged checkpoint, or resume settings that differ from the checkpoint's.
        FloatingPointError / ValueError / RuntimeError: training failed (loss or reward not finite, a reward
            function raised); the message gives the iteration and says where the last good checkpoint is.
        TrainingInterrupted: stopped by a signal, after writing the checkpoint.
    """
    if config.lr_schedule not in ("linear", "constant"):
        raise ValueError(f"lr_schedule must be 'linear' or 'constant', got {config.lr_schedule!r}")
    if config.resume and not config.out_dir:
        raise ValueError("resume=True needs out_dir (the folder holding checkpoint.pt)")
    check_int("iterations", config.iterations)
    check_int("checkpoint_every", config.checkpoint_every)
    check_int("segment_every", config.segment_every)
    if config.out_dir is None:
        return _train(config, callback, None)
    with RunFolder(config.out_dir, "out_dir"):  # before any work: writable, and no other live run writes there
        return _train(config, callback, Path(config.out_dir))


def _train(config: RLHFConfig, callback: Callable | None, out_dir: Path | None) -> RLHFResult:
    ckpt_path = out_dir / "checkpoint.pt" if out_dir else None
    settings = run_settings(config)
    # 1. a resume reads its checkpoint first: a missing, damaged or mismatched one fails before any model loads
    resumed = read_rlhf_checkpoint(ckpt_path, settings) if config.resume else None

    # 2. policy, env, agent, KL controller
    seed_everything(config.seed)
    # The policy comes first so the env can call it (mode a); both take the config's SamplingConfig.
    policy = make_policy(config, SamplingConfig(config.env.temperature, config.env.top_k, config.env.top_p))
    mode_a = hasattr(policy, "next_token_logits")
    env = make_env(config, policy if mode_a else None)
    ppo_cfg = dataclasses.replace(config.ppo, anneal_lr=False, log_dir=None,
                                  logprob_reward_coef=0.0 if mode_a else config.kl.init_coef)
    agent = PPO(env, policy=policy, seed=config.seed, device=config.device, config=ppo_cfg)
    controller = config.kl.controller()
    history: list = []
    if resumed is not None:
        history = restore_rlhf_checkpoint(resumed, agent, controller, ckpt_path)
        if history:  # drop rows a crashed run wrote past its checkpoint (or an older version, every iteration)
            _write_progress(out_dir / "progress.csv", history)
    else:
        set_kl_coef(agent, controller.value)
    rlhf_cb = RLHFCallback(controller, default_gold(config), config.n_samples, history)
    total = config.iterations
    # Without out_dir nothing can be saved, so Ctrl-C keeps stopping at once.
    signals = StopSignals() if ckpt_path is not None else None
    completed = agent.iteration  # iterations fully done: rollout, update, bookkeeping, checkpoint when due
    saved_at = agent.iteration if resumed is not None else None  # the iteration of the last good checkpoint

    def lr_at(i: int) -> float:
        base = config.ppo.learning_rate
        return base * (1.0 - i / total) if config.lr_schedule == "linear" else base

    def new_segment() -> None:
        # Fresh episodes from a seed that depends only on the iteration: a run resumed here sees what an
        # uninterrupted run sees.
        agent.reset_episodes(seed=config.seed * 100_003 + agent.iteration)
        env.pop_window()

    # 3. after each iteration: metrics, beta, learning rate, then the checkpoint and progress.csv when due
    def on_iteration(agent: PPO, metrics: dict):
        nonlocal completed, saved_at
        rlhf_cb(agent, metrics)
        agent.set_learning_rate(lr_at(agent.iteration))
        if config.log_every and (agent.iteration % config.log_every == 0 or agent.iteration == total):
            print(format_metrics(metrics, total), flush=True)
        stop = callback is not None and callback(agent, metrics) is False
        stop = stop or (signals is not None and signals.received is not None)
        due = agent.iteration % config.checkpoint_every == 0 or agent.iteration == total or stop
        segment_ends = agent.iteration % config.segment_every == 0 or stop
        if ckpt_path is not None and segment_ends and agent.iteration < total:
            new_segment()
        if ckpt_path is not None and due:
            save_rlhf_checkpoint(ckpt_path, agent, controller, rlhf_cb.history, settings)
            saved_at = agent.iteration
            _write_progress(out_dir / "progress.csv", rlhf_cb.history)  # after the checkpoint: never ahead of it
        completed = agent.iteration
        return False if stop else None

    # 4. train the remaining iterations
    remaining = total - agent.iteration
    if remaining > 0:
        new_segment()
        agent.set_learning_rate(lr_at(agent.iteration))
        with signals or contextlib.nullcontext():
            try:
                agent.learn(remaining * ppo_cfg.n_steps * env.num_envs, callback=on_iteration)
            except Exception as e:
                kept = (f"the last good checkpoint {ckpt_path} (iteration {saved_at}) is kept" if saved_at is not None
                        else "this run had written no checkpoint yet")
                raise with_context(e, f"RLHF training stopped at iteration {completed + 1}", kept) from e
    if signals is not None and signals.received is not None:
        raise TrainingInterrupted(signals.received, agent.iteration, ckpt_path)
    return RLHFResult(agent, rlhf_cb.history, ckpt_path)


def format_metrics(m: dict, total: int) -> str:
    """One console line per iteration."""
    return (f"iter {m['iteration']:4d}/{total}  rm {m['rm_score']:+.3f}  gold {m['gold_score']:+.3f}  "
            f"kl {m['kl']:6.2f}  beta {m['kl_coef']:.4f}  len {m['response_length']:4.1f}  "
            f"tok/s {m['tokens_per_s']:6.0f}  clip {m.get('clip_fraction', float('nan')):.2f}  "
            f"ev {m.get('explained_variance', float('nan')):+.2f}")


def _write_progress(path: Path, history: list[dict]) -> None:
    """The whole curve (all iterations, resumed ones included) as CSV, rewritten atomically with each checkpoint."""
    keys = [k for k in history[0] if k != "samples"]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    atomic_write(path, lambda f: f.write(text.getvalue().encode()))
