"""Training on several processes with ``torch.distributed``, launched by ``torchrun``: which process this is,
and the few collectives the PPO update and the RLHF loop need.

    torchrun --standalone --nproc_per_node=2 examples/rlhf_ppo.py

Each process (rank) owns its own env shard and draws its own prompts and samples; one policy trains,
because every minibatch step averages the gradients over the ranks before the optimizer steps. That
average is an explicit all-reduce of one flat buffer, not ``DistributedDataParallel``: the RLHF update
scores responses through ``score_responses`` rather than ``forward`` (DDP only averages what its wrapper's
``forward`` saw), and a loss that leaves a head unused would stall DDP's reducer ("Expected to have
finished reduction"). Every number that steers the algorithm is computed over all ranks: the token
counts that weigh each rank's loss, advantage whitening, the early-stop KL, the KL fed to the controller
and the logged metrics. With one process, every function here is the identity and costs nothing.

On CPU the backend is gloo; on CUDA it is NCCL and each process uses the GPU of its ``LOCAL_RANK``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from agents import functional as F


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    """the rank within this machine: the GPU it uses"""

    @property
    def is_main(self) -> bool:
        """rank 0: the process that writes logs, checkpoints and summaries"""
        return self.rank == 0


def world() -> World:
    """The current process group's ranks, or a world of one when none was started."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    rank = dist.get_rank()
    return World(rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", rank)))


def init_from_env(device: str | torch.device = "auto") -> World:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1), once.

    Without torchrun (no ``WORLD_SIZE``, or 1) nothing happens. On CUDA (``device`` "auto" with a GPU, or a
    CUDA device) each process first selects the GPU of its ``LOCAL_RANK``, so ranks do not all pile onto
    GPU 0, and the backend is NCCL; otherwise gloo.
    """
    if dist.is_available() and dist.is_initialized():
        return world()
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    cuda = torch.cuda.is_available() and (str(device) == "auto" or torch.device(device).type == "cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return world()


def barrier() -> None:
    """Wait until every rank gets here (for example while rank 0 writes a file the others then read)."""
    if _active():
        dist.barrier()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_sum(values: Tensor) -> Tensor:
    """The element-wise sum of ``values`` over the ranks (a new tensor; ``values`` itself is unchanged)."""
    out = values.detach().clone()
    if _active():
        dist.all_reduce(out)
    return out


def all_sum_numbers(values: list[float]) -> list[float]:
    """The sums over the ranks of a few plain numbers (counts, totals), in float64."""
    if not _active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return t.tolist()


def all_max(value: float) -> float:
    """The largest of the ranks' ``value`` (for example seconds: the slowest rank sets the pace)."""
    if not _active():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def any_rank(flag: bool) -> bool:
    """True on every rank when it is True on any: a stop that one rank decides is taken by all."""
    return all_max(1.0 if flag else 0.0) > 0.0


def masked_whiten(x: Tensor, mask: Tensor) -> Tensor:
    """``agents.functional.masked_whiten`` with the mean and variance taken over the masked entries of all
    ranks, as one process holding the whole batch would compute them (``count_and_whiten``)."""
    return count_and_whiten(mask, x)[2]


def average_gradients(parameters, values: dict[str, float] | None = None, local_count: float = 1.0,
                      total_count: float = 1.0) -> dict[str, float]:
    """Replace each gradient by its mean over the ranks, and combine each rank's masked means ``values``
    into means over all ranks' tokens (``token_mean``), in one all-reduce of one flat buffer.

    A parameter without a gradient on this rank contributes zeros, so ranks whose losses touch different
    parameters still take part in the same collective and never wait on each other. With one process the
    gradients stay as they are and ``values`` come back unchanged.
    """
    values = dict(values or {})
    if not _active():
        return values
    params = [p for p in parameters if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    extra = torch.tensor([v * local_count for v in values.values()], dtype=grads[0].dtype, device=grads[0].device)
    flat = torch.cat([g.reshape(-1) for g in grads] + [extra])
    dist.all_reduce(flat)
    sums = flat[flat.numel() - extra.numel():].tolist()
    flat /= dist.get_world_size()
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
        offset += n
    return {k: v / max(total_count, 1.0) for k, v in zip(values, sums)}


def count_and_whiten(mask: Tensor, x: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """The loss weight of this rank's minibatch, the token count of all ranks' minibatches, and, when ``x``
    is given, ``x`` whitened over all ranks' masked entries; one all-reduce of (count, sum, sum of squares).

    Rank r's loss is a mean over its n_r tokens; averaging gradients over W ranks gives
    sum_r grad(mean_r) / W, while one process would take sum_r n_r grad(mean_r) / sum_r n_r. Scaling rank
    r's loss by the weight W * n_r / sum_r n_r makes the two equal, also when ranks hold different numbers
    of tokens (responses of different lengths). With one process: weight 1, the count of ``mask``, and
    exactly ``F.masked_whiten``.
    """
    if not _active():
        total = mask.sum().to(torch.float64)
        return torch.ones((), dtype=torch.float64, device=mask.device), total, None if x is None else F.masked_whiten(x, mask)
    m = mask.to(torch.float64)
    xs = torch.zeros_like(m) if x is None else x.to(torch.float64) * m
    count, first, second = all_sum(torch.stack([m.sum(), xs.sum(), (xs * xs).sum()]))
    weight = dist.get_world_size() * m.sum() / count.clamp(min=1.0)
    if x is None:
        return weight, count, None
    mean = first / count.clamp(min=1.0)
    var = (second / count.clamp(min=1.0) - mean * mean).clamp(min=0.0)
    return weight, count, ((x.to(torch.float64) - mean) / torch.sqrt(var + 1e-8) * m).to(x.dtype)


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers into every rank's ``module`` (the same start everywhere)."""
    if not _active():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def gather_rows(x: Tensor) -> Tensor:
    """The ranks' ``x`` (same shape on each) stacked along dim 0 in rank order."""
    if not _active():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _collective_device() -> torch.device:
    """Where small bookkeeping tensors must live for the backend: the current GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
