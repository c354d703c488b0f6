"""The one place that knows about ``torch.distributed``; everything degrades to a single process.

k-means is written as per-chunk partial reductions (cluster sums, counts, objective) followed by
:func:`all_reduce_sum`, so the multi-process run is the same math with each rank reading its own rows.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def init_from_env(backend: str | None = None) -> bool:
    """Join a process group if the launcher started several processes; True if one is active afterwards.

    Reads torchrun's ``RANK``/``WORLD_SIZE`` or SLURM's ``SLURM_PROCID``/``SLURM_NTASKS`` (the first node of
    ``SLURM_JOB_NODELIST`` is the master unless ``MASTER_ADDR`` is set). One process: nothing to do.
    """
    if is_enabled():
        return True
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        rank, world = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        env.setdefault("MASTER_ADDR", _first_slurm_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1")))
        env.setdefault("MASTER_PORT", str(29500 + int(env.get("SLURM_JOB_ID", "0")) % 1000))
        env.setdefault("LOCAL_RANK", env.get("SLURM_LOCALID", "0"))
    else:
        return False
    if world <= 1:
        return False
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", "29500")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(env.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, rank=rank, world_size=world)
    log.info("joined process group: rank %d of %d (%s)", rank, world, backend)
    return True


def _first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list such as ``gpu[012-015,020],cpu1`` -> ``gpu012``."""
    head = nodelist.split(",")[0]
    if "[" in head:
        prefix, ranges = head.split("[", 1)
        return prefix + ranges.rstrip("]").split(",")[0].split("-")[0]
    return head




def is_enabled() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_enabled() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_enabled() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` in place over all ranks (no-op in one process) and return it."""
    if get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor






def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate each rank's ``(n_r, d)`` rows in rank order; ranks may hold different ``n_r``."""
    world = get_world_size()
    if world == 1:
        return tensor
    n = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes = [int(s.item()) for s in sizes]
    padded = torch.zeros((max(sizes),) + tuple(tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    out = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return torch.cat([o[:s] for o, s in zip(out, sizes)])
