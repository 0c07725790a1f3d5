"""``train_rlhf``: RLHF with PPO on TextGen-v0, one iteration in numbered steps.

Each iteration: (1) roll out one whole response per env row, (2) the rewards the env paid, (3) GAE over each
response, (4) PPO's update (``agents.ppo_update.ppo_update``, the gridworld's own) on minibatches of whole
responses, (5) the iteration's metrics, (6) the KL controller's next beta, (7) the learning rate, the
checkpoint and progress.csv. The shape follows CleanRL's ppo.py and lm-human-preference-details'
``train_policy``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from agents import distributed as D
from agents import functional as F
from agents.lm import LMActorCritic
from agents.logger import write_progress
from agents.policies import ActorCritic
from agents.ppo_update import learning_rate_at, ppo_update
from agents.rlhf.checkpoint import read_rlhf_checkpoint, restore_rlhf_checkpoint, save_rlhf_checkpoint
from agents.rlhf.config import RLHFConfig, run_settings
from agents.rlhf.memory import format_memory_estimate, memory_estimate
from agents.rlhf.metrics import all_ranks_metrics, format_metrics, response_metrics
from agents.rlhf.responses import collect_responses, score_responses
from agents.run_guard import RunFolder, StopSignals, TrainingInterrupted, with_context
from agents.utils import seed_everything
from rlcore.device import resolve_device
from textenv.text.config import make_config
from textenv.text.sampling import SamplingConfig


@dataclass
class RLHFAgent:
    """What trains: the policy (LM + value head), its optimizer, the env it acts in, and the counters."""

    policy: ActorCritic
    optimizer: torch.optim.Optimizer
    env: object
    device: torch.device
    iteration: int = 0
    """iterations done"""
    responses: int = 0
    """responses trained on"""
    generated_tokens: int = 0
    """tokens generated, the dropped partial responses included"""
    loop_s: float = 0.0
    """seconds spent in rollouts and updates (evaluation and checkpoints excluded)"""

    def counters(self) -> dict:
        return {k: getattr(self, k) for k in ("iteration", "responses", "generated_tokens", "loop_s")}

    def set_counters(self, counters: dict) -> None:
        for k in ("iteration", "responses", "generated_tokens"):
            setattr(self, k, int(counters[k]))
        self.loop_s = float(counters["loop_s"])


@dataclass
class RLHFResult:
    agent: RLHFAgent
    history: list[dict]
    checkpoint: Path | None


def default_gold(config: RLHFConfig) -> Callable | None:
    if callable(config.gold):
        return config.gold
    if config.gold == "default" and config.env.model is None:  # the embedded SFT model writes reviews: judge them
        from textenv.default import gold_score

        return gold_score
    return None


def make_policy(config: RLHFConfig, sampling: SamplingConfig) -> ActorCritic:
    """Your ``config.policy``, or an LMActorCritic copy of the SFT model sampling with ``sampling``."""
    if config.policy is not None:
        return config.policy
    model = make_config(config.env).model  # None: the registered default task's
    if isinstance(model, torch.nn.Module):
        model = copy.deepcopy(model)  # the env keeps the original as the frozen reference
    return LMActorCritic(model, sampling=sampling, critic=config.critic, critic_model=config.critic_model,
                         device=config.device, mixed_precision=config.mixed_precision, lora=config.lora,
                         gradient_checkpointing=config.gradient_checkpointing)


def make_env(config: RLHFConfig, policy=None):
    """The training vector env: mode (a) when ``policy`` has next_token_logits (the env reads its forward).

    A LoRA policy hands the env its own module as the reference (run with the adapter off), so the env loads
    no second copy of the LM; the tokenizer still comes from ``config.env.model``.
    """
    from textenv.text.vector import TextGenVectorEnv

    env_config = make_config(config.env)
    if getattr(policy, "reference_context", None) is not None:
        from textenv.text.loading import load_tokenizer

        tokenizer = load_tokenizer(env_config.tokenizer, env_config.model)  # still the config's model's
        env_config = dataclasses.replace(env_config, model=policy.model, tokenizer=tokenizer)
    return TextGenVectorEnv(config.num_envs, env_config, policy=policy)


def rollout_seed(seed: int, responses_done: int, rank: int, num_envs: int) -> int:
    """The seed of a rollout's prompts, samples and minibatches on rank ``rank``: a function of the run's
    seed and the responses trained on before it. Row i of rank r draws with this + i, that is with
    ``responses_done + r * num_envs + i``: no two rows of a run, on any rank or iteration, share a seed,
    and a resume continues the sequence (at another world size too)."""
    return seed * 1_000_003 + responses_done + rank * num_envs


def group_advantages(method: str, rewards: torch.Tensor, mask: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B, T) advantages of the critic-free rungs: each response's return (all it was paid) against the
    other responses to its prompt (``F.rloo_advantages`` or ``F.grpo_advantages``), on every one of its tokens."""
    returns = (rewards * mask).sum(1)  # (B,)
    estimator = F.rloo_advantages if method == "rloo" else F.grpo_advantages
    return estimator(returns, group_size)[:, None] * mask


def train_rlhf(config: RLHFConfig, callback: Callable | None = None) -> RLHFResult:
    """Run (or resume) RLHF with PPO; returns the agent, the per-iteration history and the checkpoint path.

    ``callback(agent, metrics) -> False`` stops early and writes a checkpoint there. With an out_dir, SIGINT
    (Ctrl-C) or SIGTERM stops the same way at the end of the current iteration, then raises
    ``TrainingInterrupted`` (a KeyboardInterrupt) naming the iteration and the checkpoint. A resume from any
    checkpoint continues the uninterrupted curve.

    Under ``torchrun`` (``agents.distributed``) every rank runs this with the same config: each rolls out
    ``num_envs`` responses of its own, so an iteration trains on ``num_envs * world_size``
    responses and the budget ``responses`` counts all ranks; one policy trains (gradients averaged over the
    ranks) and rank 0 alone writes out_dir. A checkpoint resumes at any world size: it holds the global
    state, and the budget left is run at the new world size (the same curve repeats only at the same one).

    Raises:
        ValueError / TypeError: settings that cannot run (checked before any work).
        OSError: out_dir is not writable (checked before any work), or writing a file failed (the message
            names it; the last good checkpoint is kept).
        FolderBusyError: another live run writes to out_dir.
        FileNotFoundError: ``resume=True`` but out_dir holds no checkpoint yet.
        ValueError: a corrupt or damaged checkpoint, or resume settings that differ from the checkpoint's.
        FloatingPointError / ValueError / RuntimeError: training failed (loss or reward not finite, a reward
            function raised); the message gives the iteration and says where the last good checkpoint is.
        TrainingInterrupted: stopped by a signal, after writing the checkpoint.
    """
    config.check()
    world = D.init_from_env(config.device)
    if config.out_dir is None:
        return _train(config, callback, None, world)
    # Before any work: writable, and no other live run writes there. Rank 0 writes; the others read from it
    # on a resume (with several machines, out_dir must be on a filesystem they share).
    with RunFolder(config.out_dir, "out_dir") if world.is_main else contextlib.nullcontext():
        return _train(config, callback, Path(config.out_dir), world)


def _set_up(config: RLHFConfig, world: D.World, resumed, ckpt_path: Path | None, writes: bool):
    """The policy first (the env reads its forward in mode a), then the env, optimizer, controller and history."""
    seed_everything(config.seed)
    env_config = config.env
    policy = make_policy(config, SamplingConfig(env_config.temperature, env_config.top_k, env_config.top_p))
    mode_b = not hasattr(policy, "next_token_logits")
    device = resolve_device(config.device)
    policy.to(device)
    D.broadcast_module(policy)  # one policy: every rank starts from rank 0's weights
    env = make_env(config, None if mode_b else policy)
    # Fused Adam: one kernel for all parameters (on a small LM the per-tensor loop of the default costs more
    # than the arithmetic); it needs every parameter on one device type.
    fused = len({p.device.type for p in policy.parameters()}) == 1
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.ppo.learning_rate, eps=1e-5, fused=fused)
    agent = RLHFAgent(policy, optimizer, env, device)
    if config.log_every and world.is_main:  # what the run will hold, before it allocates the rest
        print(format_memory_estimate(memory_estimate(policy, env, config)), flush=True)
    controller = config.kl.controller(env_config.kl_coef)
    history: list = []
    if resumed is not None:
        history = restore_rlhf_checkpoint(resumed, agent, controller, ckpt_path)
        if history and writes:  # drop rows a crashed run wrote past its checkpoint
            write_progress(ckpt_path.parent / "progress.csv", history)
    return agent, controller, history


def _iteration(config: RLHFConfig, agent: RLHFAgent, beta: float, seed: int, world: D.World, gold_fn) -> dict:
    """Steps 1-5 of one iteration: rollout, rewards, advantages, update, metrics (over all ranks)."""
    policy, env, device, ppo, critic = agent.policy, agent.env, agent.device, config.ppo, config.advantage == "gae"
    # 1. rollout: one whole response per row (groups of K per prompt for rloo / grpo), paid with the
    #    controller's beta (or none: GRPO's form puts the KL into the loss)
    start = time.perf_counter()
    policy.eval()
    generator = torch.Generator(device).manual_seed(seed)
    batch = collect_responses(env, policy, beta if config.kl_in == "reward" else 0.0, seed, generator, device,
                              group_size=1 if critic else config.group_size)
    rollout_s = D.all_max(time.perf_counter() - start)  # the slowest rank sets the pace
    # 2. rewards: what the env paid each token, -beta * KL_t, plus the RM score on the last one
    rewards, mask = batch.rewards, batch.response_mask
    # 3. advantages: GAE within each response, nothing bootstrapped past its last token; or each response's
    #    return against the other responses to its prompt
    if critic:
        advantages, returns = F.response_gae(rewards, batch.values, mask, ppo.gamma, ppo.gae_lambda)
    else:
        advantages, returns = group_advantages(config.advantage, rewards, mask, config.group_size), batch.values
    # 4. update: PPO epochs over minibatches of whole responses, one forward per response
    policy.train()
    order = torch.Generator().manual_seed(seed)
    n_mb = min(ppo.n_minibatches, env.num_envs)
    minibatches = lambda: torch.randperm(env.num_envs, generator=order).to(device).chunk(n_mb)  # noqa: E731
    data = {"logprobs": batch.logprobs, "values": batch.values, "advantages": advantages, "returns": returns,
            "mask": mask, "ref_logprobs": batch.ref_logprobs}
    score = lambda rows: score_responses(policy, batch, rows, ppo.ent_coef != 0)  # noqa: E731
    update = ppo_update(policy, agent.optimizer, ppo, data, minibatches, score, f"iteration {agent.iteration + 1}",
                        kl_coef=beta if config.kl_in == "loss" else 0.0)
    update_s = D.all_max(time.perf_counter() - start) - rollout_s
    # 5. metrics of the iteration, over all ranks' responses
    generated = int(D.all_sum_numbers([batch.generated_tokens])[0])
    agent.iteration += 1
    agent.responses += env.num_envs * world.size
    agent.generated_tokens += generated
    agent.loop_s += rollout_s + update_s
    stats = all_ranks_metrics(response_metrics(batch, gold_fn, config.n_samples), batch)
    stats["kl_coef"] = beta
    explained = (F.explained_variance(*(D.gather_rows(t) for t in (batch.values, returns, mask)))
                 if critic else float("nan"))  # no critic is trained
    return {"iteration": agent.iteration, "responses": agent.responses, **update, **stats,
            "explained_variance": explained, "generated_tokens": agent.generated_tokens,
            "tokens_per_s": generated / (rollout_s + update_s), "rollout_s": rollout_s, "update_s": update_s,
            "loop_s": agent.loop_s}


def _train(config: RLHFConfig, callback: Callable | None, out_dir: Path | None, world: D.World) -> RLHFResult:
    ckpt_path = out_dir / "checkpoint.pt" if out_dir else None
    writes = ckpt_path is not None and world.is_main
    settings = run_settings(config)
    # A resume reads its checkpoint first: a missing, damaged or mismatched one fails before any model loads.
    resumed = read_rlhf_checkpoint(ckpt_path, settings) if config.resume else None
    agent, controller, history = _set_up(config, world, resumed, ckpt_path, writes)
    gold_fn = default_gold(config)
    per_iteration = agent.env.num_envs * world.size  # responses one iteration trains on, all ranks together
    total = math.ceil(config.responses / per_iteration)  # iterations of a fresh run at this world size
    signals = StopSignals() if ckpt_path is not None else None  # without out_dir Ctrl-C stops at once
    saved_at = agent.iteration if resumed is not None else None

    with signals or contextlib.nullcontext():
        while agent.responses < config.responses:
            it = agent.iteration
            seed = rollout_seed(config.seed, agent.responses, world.rank, agent.env.num_envs)
            # the schedule by the fraction of the budget done (= it / total at a fixed world size)
            lr = learning_rate_at(config.ppo, agent.responses, total * per_iteration)
            for group in agent.optimizer.param_groups:
                group["lr"] = lr
            try:
                stats = _iteration(config, agent, controller.value, seed, world, gold_fn)  # steps 1-5
                metrics = {**{k: v for k, v in stats.items() if k != "samples"}, "learning_rate": lr}
                history.append({**metrics, "samples": stats["samples"]})
                last = agent.responses >= config.responses
                if config.log_every and world.is_main and (agent.iteration % config.log_every == 0 or last):
                    print(format_metrics(metrics, total), flush=True)
                # 6. KL controller: the next rollout's beta, from this one's KL per response (all ranks')
                controller.update(metrics["kl"], per_iteration)
                # 7. checkpoint and progress.csv when due (progress.csv after the checkpoint: never ahead of it)
                stop = callback is not None and callback(agent, metrics) is False
                stop = D.any_rank(stop or (signals is not None and signals.received is not None))
                if ckpt_path is not None and (agent.iteration % config.checkpoint_every == 0 or last or stop):
                    if writes:
                        save_rlhf_checkpoint(ckpt_path, agent, controller, history, settings)
                        write_progress(out_dir / "progress.csv", history)
                    saved_at = agent.iteration
            except Exception as e:
                kept = (f"the last good checkpoint {ckpt_path} (iteration {saved_at}) is kept" if saved_at is not None
                        else "this run had written no checkpoint yet")
                raise with_context(e, f"RLHF training stopped at iteration {it + 1}", kept) from e
            if stop:
                break
    received = signals.received if signals is not None else None
    if D.any_rank(received is not None):  # a signal that reached any rank stops them all, here
        raise TrainingInterrupted(received or "SIGTERM", agent.iteration, ckpt_path)
    return RLHFResult(agent, history, ckpt_path)
