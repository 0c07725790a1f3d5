"""Small torch helpers shared by the agents: device choice, seeding, numpy <-> torch for (dict) observations."""

from __future__ import annotations

import os
import platform
import random

import gymnasium as gym
import numpy as np
import torch



REPRODUCIBLE_CPU_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
"""Environment variables that make torch's CPU kernels take their AVX2 code paths: ATen's vectorised ops,
Intel MKL's matrix products (conditional numerical reproducibility) and oneDNN."""


def reproducible_cpu_kernels() -> dict[str, str]:
    """Make float results repeat bit for bit across x86-64 processors of one vendor: pin torch's CPU kernels
    to AVX2.

    Torch picks its kernels by what the processor offers (AVX2, AVX-512, AMX; MKL also by vendor), and each
    sums in its own order, so the same seeded run on the same library versions drifts apart on another
    machine after a few hundred updates. With the AVX2 paths, which every x86-64 server of the last decade
    has, an Intel machine reproduces the figures measured on another. Not across vendors: Intel's MKL
    documents that branches other than AUTO and COMPATIBLE exist only on Intel processors and are silently
    replaced by AUTO elsewhere, so on an AMD processor ``MKL_CBWR=AVX2`` is MKL's own choice
    (``MKL_CBWR=COMPATIBLE``, set before calling this, is the vendor-neutral SSE2 branch, with other figures).
    The example scripts call this at start; it must run before the first torch operation (the settings are
    read then). A variable already set in the environment wins. On other processors (ARM) it does nothing.
    Returns the settings now in force.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    for name, value in REPRODUCIBLE_CPU_KERNELS.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in REPRODUCIBLE_CPU_KERNELS}


def seed_everything(seed: int | None) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA). None leaves them as they are."""
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_tensor(obs, device: torch.device):
    """A numpy observation batch (or a dict of them) as tensors: floats as float32, integers as int64."""
    if isinstance(obs, dict):
        return {k: to_tensor(v, device) for k, v in obs.items()}
    arr = np.asarray(obs)
    t = torch.from_numpy(arr)
    t = t.float() if arr.dtype.kind == "f" else t.long()
    return t.to(device)


def index(obs, idx):
    """``obs[idx]`` for a tensor or a dict of tensors."""
    if isinstance(obs, dict):
        return {k: v[idx] for k, v in obs.items()}
    return obs[idx]


def flatten_time(obs, n: int):
    """(T, N, ...) -> (T * N, ...) for a tensor or a dict of tensors."""
    if isinstance(obs, dict):
        return {k: flatten_time(v, n) for k, v in obs.items()}
    return obs.reshape(n, *obs.shape[2:])


def stack_obs(items: list):
    """Stack single observations (arrays or dicts of arrays) into a batch."""
    if isinstance(items[0], dict):
        return {k: np.stack([it[k] for it in items]) for k in items[0]}
    return np.stack([np.asarray(it) for it in items])


def is_single_obs(obs, space) -> bool:
    """True when ``obs`` is one observation of ``space`` rather than a batch."""
    if isinstance(space, gym.spaces.Dict):
        key = next(iter(space.spaces))
        return np.asarray(obs[key]).shape == space.spaces[key].shape
    return np.asarray(obs).shape == space.shape


def add_batch_dim(obs):
    """One observation (or a dict of them) as a batch of one."""
    if isinstance(obs, dict):
        return {k: np.asarray(v)[None] for k, v in obs.items()}
    return np.asarray(obs)[None]
