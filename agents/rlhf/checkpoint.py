"""RLHF checkpoints: one sealed file (agents.checkpoint) with everything a resume needs.

The policy (LM, value head, critic; with LoRA the adapter and the value head, not the frozen LM), the
optimizer, the KL controller, the RNG states, the counters, the curves so far and the run's settings.
Each iteration draws its prompts, samples and minibatch order from seeds that depend only on the run's
seed and the iteration, so a resume from any checkpoint continues the very curve an uninterrupted run
draws (same numbers on the same machine).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from agents.checkpoint import atomic_save, load_checkpoint
from agents.rlhf.config import check_same_settings

if TYPE_CHECKING:  # the agent is built in loop.py, which imports this module
    from agents.rlhf.loop import RLHFAgent

CHECKPOINT_FORMAT = "textenv.agents.rlhf"


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


def save_rlhf_checkpoint(path, agent: "RLHFAgent", controller, history: list, settings: dict | None = None) -> Path:
    """Policy (LM, value head, critic), optimizer, KL controller, RNG states, counters, curves and the run's
    ``settings`` (``run_settings``), atomically; refused (ValueError naming the tensor) when a weight is not finite."""
    return atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "version": 3,
            "policy_class": type(agent.policy).__name__,
            # A LoRA policy saves its adapter and value head only: the base LM is the run's env.model, unchanged.
            "policy": getattr(agent.policy, "trainable_state_dict", agent.policy.state_dict)(),
            "optimizer": agent.optimizer.state_dict(),
            "kl_controller": controller.state_dict(),
            "rng": rng_state(),
            **agent.counters(),
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


def restore_rlhf_checkpoint(ckpt: dict, agent: "RLHFAgent", controller, path) -> list:
    """Put what ``save_rlhf_checkpoint`` wrote into ``agent`` and ``controller``; returns the curves."""
    try:
        getattr(agent.policy, "load_trainable_state_dict", agent.policy.load_state_dict)(ckpt["policy"])
        agent.optimizer.load_state_dict(ckpt["optimizer"])
        controller.load_state_dict(ckpt["kl_controller"])
        agent.set_counters(ckpt)
        set_rng_state(ckpt["rng"])
        history = list(ckpt["history"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise ValueError(f"cannot resume from {path}: the checkpoint does not fit this run "
                         f"({type(e).__name__}: {e})") from e
    return history


def load_rlhf_checkpoint(path, agent: "RLHFAgent", controller) -> list:
    """Restore everything ``save_rlhf_checkpoint`` wrote into ``agent`` and ``controller``; returns the curves.

    Raises:
        FileNotFoundError / ValueError: no checkpoint, a corrupt one, or one that does not fit this policy.
    """
    return restore_rlhf_checkpoint(read_rlhf_checkpoint(path), agent, controller, path)
