"""The one "auto" device rule of the envs and the agents."""

from __future__ import annotations

import warnings

import torch

from rlcore.checks import describe


def resolve_device(device: str | torch.device, module: torch.nn.Module | None = None) -> torch.device:
    """``"auto"``: the device of a model passed as a module, else CUDA when available, else CPU."""
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f'device must be "auto", a device name such as "cpu" or a torch.device, got {describe(device)}')
    if device != "auto":
        try:
            return torch.device(device)
        except RuntimeError as e:  # an unknown device name
            raise ValueError(f'device must be "auto" or a torch device such as "cpu" or "cuda:0", got {device!r} ({e})') from None
    if isinstance(module, torch.nn.Module):
        params = list(module.parameters())
        if params:
            return params[0].device
    if torch.cuda._is_in_bad_fork():  # checked first: it touches no CUDA
        warnings.warn('this process was forked after CUDA started in its parent, where CUDA cannot run: device="auto" '
                      'is the CPU here. For CUDA in subprocesses start them with "spawn", e.g. gym.make_vec(..., '
                      'vectorization_mode="async", vector_kwargs={"context": "spawn"})', stacklevel=3)
        return torch.device("cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
