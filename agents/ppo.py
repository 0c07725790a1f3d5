"""PPO (Schulman et al. 2017) for any Gymnasium env with Discrete actions: one core for every env.

    from agents import PPO
    agent = PPO(gym.make_vec("GridWorld-v0", num_envs=16), seed=0)
    agent.learn(50_000)
    action, _ = agent.predict(obs, deterministic=True)

One iteration = collect a (T, N) rollout (agents.rollout), compute GAE, then ``update``: several epochs
of shuffled minibatches of the lectures' loss L = L_POLICY + c1 L_VF - c2 H (the entropy is a bonus).
The language-model agent uses this same class with its own policy (agents.lm).
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
import torch

from agents import distributed as D
from agents import functional as F
from agents.checkpoint import atomic_save, load_checkpoint, space_from_dict, space_to_dict
from agents.logger import Logger
from agents.onpolicy import build_agent, episode_metrics, predict
from agents.ppo_update import learning_rate_at, ppo_update
from agents.policies import ActorCritic, MLPActorCritic
from agents.rollout import Rollout, RolloutCollector, as_vector_env
from agents.run_guard import StopSignals, TrainingInterrupted, with_context
from agents.utils import flatten_time, index, seed_everything

CHECKPOINT_FORMAT = "textenv.agents.PPO"


@dataclass
class PPOConfig:
    """PPO hyperparameters. The defaults are CleanRL's ppo.py (themselves the PPO paper's Atari settings)."""

    n_steps: int = 128
    """steps per sub-env in each rollout (T); a rollout holds n_steps * num_envs transitions"""
    n_epochs: int = 4
    """passes over each rollout"""
    n_minibatches: int = 4
    """minibatches per epoch"""
    minibatch_by: str = "step"
    """'step': shuffle single transitions; 'env': shuffle whole sub-env columns (keeps episodes together,
    which lets a sequence model score a whole episode in one forward)"""
    learning_rate: float = 2.5e-4
    """Adam's step size"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over the planned iterations"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """GAE's lambda: 0 is one-step TD, 1 is Monte Carlo"""
    clip_coef: float = 0.2
    """epsilon of the clipped ratio"""
    clip_vloss: bool = True
    """clip the value update to clip_coef around the rollout's values (PPO2)"""
    vf_coef: float = 0.5
    """c1, weight of the value loss"""
    ent_coef: float = 0.01
    """c2, weight of the entropy bonus"""
    norm_adv: bool = True
    """whiten the advantages (mean 0, std 1) before the policy loss"""
    norm_adv_over: str = "minibatch"
    """what ``norm_adv`` whitens over: 'minibatch' (CleanRL, SB3) or 'batch' (the whole rollout at once, as TRL 0.11)"""
    max_grad_norm: float = 0.5
    """clip the global gradient norm to this"""
    target_kl: float | None = None
    """stop the epochs of an update early once approx-KL exceeds this (None: never)"""
    logprob_reward_coef: float = 0.0
    """beta of the entropy-form KL penalty: subtract beta * log pi(a_t|s_t) from each reward"""
    log_dir: str | None = None
    """folder for progress.csv and TensorBoard events (None: console only)"""
    progress_bar: bool = True
    """show a progress bar with the main metrics"""

    def __post_init__(self):
        if self.minibatch_by not in ("step", "env"):
            raise ValueError(f"minibatch_by must be 'step' or 'env', got {self.minibatch_by!r}")
        if self.norm_adv_over not in ("minibatch", "batch"):
            raise ValueError(f"norm_adv_over must be 'minibatch' or 'batch', got {self.norm_adv_over!r}")
        for name in ("n_steps", "n_epochs", "n_minibatches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


Callback = Callable[["PPO", dict], "bool | None"]  # agents.onpolicy.Callback, typed for PPO
"""Called after every iteration with the agent and that iteration's metrics; returning False stops learn()."""


class PPO:
    """Actor-critic PPO on one policy, one optimizer and one vector env.

    Args:
        env: a Gymnasium env or vector env (a single env is wrapped as a vector env of one). May be None
            only when loading a checkpoint for ``predict``.
        policy: an ``agents.policies.ActorCritic``; default: ``MLPActorCritic`` for the env's spaces.
        seed: seeds torch, NumPy and the env's first reset; a seeded CPU run is reproducible.
        device: "auto" (CUDA when available, else CPU), "cpu", "cuda", ...
        config: a PPOConfig; keyword hyperparameters override its fields.
    """

    def __init__(
        self,
        env: gym.Env | gym.vector.VectorEnv | None,
        policy: ActorCritic | None = None,
        seed: int | None = None,
        device: str | torch.device = "auto",
        config: PPOConfig | None = None,
        **hyperparameters,
    ):
        self.config = dataclasses.replace(config or PPOConfig(), **hyperparameters)
        self.world = D.init_from_env(device)  # under torchrun: this rank, its GPU; else a world of one
        self.seed = seed
        parts = build_agent(env, policy, seed, device, self.config.learning_rate)
        self.device, self.env, self.policy, self.optimizer = parts.device, parts.env, parts.policy, parts.optimizer
        self.observation_space, self.action_space = parts.observation_space, parts.action_space
        self.num_timesteps = 0
        self.iteration = 0
        self._collector: RolloutCollector | None = None
        self._reset_seed = seed
        if self.world.size > 1:  # one policy: rank 0's start; each rank its own samples and episodes
            D.broadcast_module(self.policy)
            if seed is not None:
                n_envs = self.env.num_envs if self.env is not None else 1
                self._reset_seed = seed + self.world.rank * n_envs
                seed_everything(seed + 1_000_003 * self.world.rank)
        self.last_rollout: Rollout | None = None

    # ------------------------------------------------------------------ training
    def learn(self, total_timesteps: int, callback: Callback | None = None) -> "PPO":
        """Train for about ``total_timesteps`` env steps (whole iterations); returns self.

        Raises:
            OSError / FolderBusyError: ``config.log_dir`` is not writable or another live run writes there
                (checked before the first rollout; agents.logger).
            TrainingInterrupted: with a ``config.log_dir``, SIGINT (Ctrl-C) or SIGTERM arrived; the iteration in
                progress was finished and saved to ``log_dir/checkpoint.pt`` (``PPO.load`` continues from it).
                Without a ``log_dir`` the signals act as usual.
            the rollout's own error, with "PPO rollout failed at iteration N" in front (an env or a reward
                function that raises), and FloatingPointError when the loss stops being finite.
        """
        if self.env is None:
            raise ValueError("this PPO has no env: pass one to PPO(...) or PPO.load(path, env=...) to train")
        cfg = self.config
        main = self.world.is_main  # under torchrun rank 0 logs and saves; total_timesteps counts all ranks
        batch = cfg.n_steps * self.env.num_envs * self.world.size
        n_iterations = max(1, math.ceil(total_timesteps / batch))
        logger = Logger(cfg.log_dir if main else None, n_iterations, cfg.progress_bar and main)
        # With a log_dir, Ctrl-C / SIGTERM let the iteration finish, then log_dir/checkpoint.pt is written.
        signals = StopSignals() if cfg.log_dir is not None else None
        try:
            with signals or nullcontext():
                for i in range(n_iterations):
                    metrics = self._iteration(i, n_iterations, batch)
                    logger.log(metrics, self.num_timesteps)
                    stop = D.any_rank(callback is not None and callback(self, metrics) is False)
                    if D.any_rank(signals is not None and signals.received is not None):
                        path = self.save(Path(cfg.log_dir) / "checkpoint.pt")
                        raise TrainingInterrupted(signals.received, self.iteration, path,
                                                  resume_hint=f"PPO.load({str(path)!r}, env=env).learn(...)")
                    if stop:
                        break
        finally:
            logger.close()
        return self

    def _iteration(self, i: int, n_iterations: int, batch: int) -> dict[str, float]:
        """One iteration of ``learn``: learning rate, rollout, update; returns its metrics."""
        cfg = self.config
        if cfg.anneal_lr:  # otherwise the rate is the user's (set_learning_rate)
            self.set_learning_rate(learning_rate_at(cfg, i, n_iterations))
        start = time.perf_counter()
        self.policy.eval()  # rollouts without dropout
        rollout = self._collect()
        self.last_rollout = rollout  # callbacks read its episode infos (agents.rlhf)
        rollout_time = time.perf_counter() - start
        self.policy.train()
        metrics = self.update(rollout)
        self.num_timesteps += int(D.all_sum_numbers([rollout.mask.sum().item()])[0])
        self.iteration += 1
        elapsed = time.perf_counter() - start
        metrics.update(episode_metrics(rollout, self.world.size > 1))
        metrics.update(
            iteration=self.iteration,
            timesteps=self.num_timesteps,
            steps_per_s=batch / elapsed,
            rollout_s=rollout_time,
            update_s=elapsed - rollout_time,
            learning_rate=self.optimizer.param_groups[0]["lr"],
        )
        return metrics

    def _collect(self) -> Rollout:
        """The next rollout; an error in the env (or its reward function) says at which iteration it happened."""
        try:
            if self._collector is None:  # first iteration, or a callback called reset_episodes
                self._collector = RolloutCollector(self.env, self.policy, self.config.n_steps, self.device,
                                                   self._reset_seed)
            self._collector.logprob_reward_coef = self.config.logprob_reward_coef  # a KL controller may move it
            return self._collector.collect()
        except Exception as e:
            raise with_context(e, f"PPO rollout failed at iteration {self.iteration + 1}") from e

    def reset_episodes(self, seed: int | None = None) -> None:
        """Start fresh episodes in every sub-env at the next ``learn`` (episodes in progress are dropped)."""
        self._collector = None
        self._reset_seed = seed

    def update(self, rollout: Rollout) -> dict[str, float]:
        """One PPO update on a rollout (GAE, then ``ppo_update``); returns the mean loss terms and diagnostics."""
        cfg = self.config
        advantages, returns = F.gae(
            rollout.rewards, rollout.values, rollout.next_values, rollout.terminated, rollout.ends,
            cfg.gamma, cfg.gae_lambda, rollout.mask,
        )
        T, N = rollout.rewards.shape
        b_obs = flatten_time(rollout.obs, T * N)
        b_actions = rollout.actions.reshape(-1)
        batch = {"logprobs": rollout.logprobs, "values": rollout.values, "advantages": advantages,
                 "returns": returns, "mask": rollout.mask}
        batch = {k: v.reshape(-1) for k, v in batch.items()}
        metrics = ppo_update(self.policy, self.optimizer, cfg, batch, lambda: self._minibatches(T, N),
                             lambda mb: self.policy.evaluate_actions(index(b_obs, mb), b_actions[mb]),
                             f"iteration {self.iteration + 1}")
        metrics["explained_variance"] = F.explained_variance(
            *(D.gather_rows(t) for t in (rollout.values, returns, rollout.mask.to(returns.dtype))))  # over all ranks' steps
        return metrics

    def _minibatches(self, T: int, N: int):
        """Index tensors into the flat (T * N) batch, shuffled by step or by sub-env column."""
        cfg = self.config
        if cfg.minibatch_by == "env":
            n_mb = min(cfg.n_minibatches, N)
            cols = torch.randperm(N, device=self.device)
            grid = torch.arange(T * N, device=self.device).reshape(T, N)  # flat index of (t, env)
            for chunk in cols.chunk(n_mb):
                yield grid[:, chunk].reshape(-1)
        else:
            yield from torch.randperm(T * N, device=self.device).chunk(min(cfg.n_minibatches, T * N))

    def set_learning_rate(self, lr: float) -> None:
        """Set the optimizer's step size (learn() anneals it when ``anneal_lr``; schedulers may call this)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # ------------------------------------------------------------------ acting
    def predict(self, obs, deterministic: bool = False) -> tuple[np.ndarray | int, None]:
        """Action(s) for one observation or a batch, as in stable-baselines3: returns (action, None)."""
        return predict(self.policy, obs, self.observation_space, self.device, deterministic)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write policy, optimizer, config, spaces and counters to ``path`` atomically (agents.checkpoint).

        For an ``MLPActorCritic`` the checkpoint also holds its constructor arguments, so ``PPO.load(path)``
        rebuilds it without being given a policy.

        Under torchrun only rank 0 writes (every rank holds the same policy); the others return ``path``.

        Raises:
            ValueError: a weight is NaN or inf (the message names it; the previous file at ``path`` is kept).
            OSError: the file could not be written (the message names it; the previous file is kept).
        """
        if not self.world.is_main:
            return Path(path)
        return atomic_save(
            {
                "format": CHECKPOINT_FORMAT,
                "version": 2,
                "config": dataclasses.asdict(self.config),
                "policy_class": type(self.policy).__name__,
                "policy_kwargs": mlp_kwargs(self.policy),
                "policy_architecture": repr(self.policy),
                "observation_space": space_to_dict(self.observation_space),
                "action_space": space_to_dict(self.action_space),
                "policy": self.policy.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "num_timesteps": self.num_timesteps,
                "iteration": self.iteration,
            },
            path,
        )

    @classmethod
    def load(
        cls,
        path: str | Path,
        env: gym.Env | gym.vector.VectorEnv | None = None,
        policy: ActorCritic | None = None,
        device: str | torch.device = "auto",
    ) -> "PPO":
        """Rebuild an agent saved with ``save``.

        Args:
            env: optional; must have the spaces the agent was trained on (needed to keep training).
            policy: required when the checkpoint holds a custom ActorCritic: an instance to load the weights into.
                An ``MLPActorCritic`` of any hidden sizes is rebuilt from the checkpoint.
        Raises:
            FileNotFoundError, ValueError: missing, corrupt (its SHA-256 does not match), non-finite or
                mismatched checkpoint; the message says which.
        """
        ckpt = load_checkpoint(path, CHECKPOINT_FORMAT)
        try:
            obs_space, act_space = space_from_dict(ckpt["observation_space"]), space_from_dict(ckpt["action_space"])
            config = PPOConfig(**ckpt["config"])
            policy_class, state = ckpt["policy_class"], ckpt["policy"]
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path} is an incomplete {CHECKPOINT_FORMAT} checkpoint: missing or bad {e}") from e
        if env is not None:
            venv = as_vector_env(env)
            for name, saved, given in (
                ("observation", ckpt["observation_space"], space_to_dict(venv.single_observation_space)),
                ("action", ckpt["action_space"], space_to_dict(venv.single_action_space)),
            ):
                if saved != given:
                    raise ValueError(f"{path} was trained on {name} space {saved}, but the env given has {given}")
        if policy is None:
            if policy_class != MLPActorCritic.__name__:
                raise ValueError(
                    f"{path} holds a custom policy ({policy_class}): pass policy=<an instance of it> to PPO.load"
                )
            policy = rebuild_mlp(ckpt, obs_space, act_space, path)
        try:
            policy.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"the weights in {path} do not fit the policy given ({type(policy).__name__}): {e}") from e
        agent = cls(env, policy=policy, device=device, config=config)
        if env is None:
            agent.observation_space, agent.action_space = obs_space, act_space
        agent.optimizer.load_state_dict(ckpt["optimizer"])
        agent.num_timesteps, agent.iteration = int(ckpt["num_timesteps"]), int(ckpt["iteration"])
        return agent


def mlp_kwargs(policy: ActorCritic) -> dict | None:
    """The constructor arguments (besides the spaces) that rebuild an ``MLPActorCritic``; None for other classes."""
    if type(policy) is not MLPActorCritic:
        return None
    linears = [m for m in policy.actor if isinstance(m, torch.nn.Linear)]
    return {"hidden_sizes": [m.out_features for m in linears[:-1]]}


def rebuild_mlp(ckpt: dict, obs_space: gym.Space, act_space: gym.Space, path) -> MLPActorCritic:
    """The ``MLPActorCritic`` a checkpoint was saved from, before its weights are loaded.

    Version-1 checkpoints carry no constructor arguments: their hidden sizes are read off the actor's weights.
    """
    kwargs = ckpt.get("policy_kwargs") or {"hidden_sizes": hidden_sizes_from_weights(ckpt["policy"])}
    policy = MLPActorCritic(obs_space, act_space, hidden_sizes=tuple(kwargs["hidden_sizes"]))
    saved = ckpt.get("policy_architecture")
    if saved is not None and saved != repr(policy):
        raise ValueError(
            f"{path} holds an MLPActorCritic changed after it was built (its layers are not what "
            f"MLPActorCritic(hidden_sizes={tuple(kwargs['hidden_sizes'])}) builds):\nsaved:   {saved}\n"
            f"rebuilt: {policy!r}\npass policy=<an instance with the saved layers> to PPO.load"
        )
    return policy


def hidden_sizes_from_weights(state: dict) -> list[int]:
    """Hidden widths of an MLPActorCritic state dict: the rows of each ``actor.<i>.weight`` but the last."""
    layers = sorted(int(k.split(".")[1]) for k in state if k.startswith("actor.") and k.endswith(".weight"))
    return [int(state[f"actor.{i}.weight"].shape[0]) for i in layers[:-1]]
