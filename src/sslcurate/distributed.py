"""The one place that knows about ``torch.distributed``; everything degrades to a single process.

k-means is written as per-chunk partial reductions (cluster sums, counts, objective) followed by
:func:`all_reduce_sum`, so the multi-process run is the same math with each rank reading its own rows.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

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


def shutdown(barrier: bool = True) -> None:
    """Leave the process group this process joined, if any. Without it, ranks reach interpreter exit at
    different moments and one can tear down its gloo threads while a peer still talks to it (seen as
    ``terminate called without an active exception`` and a SIGABRT exit). ``barrier=False`` on an error path,
    where a peer may never reach the barrier."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if barrier:
        dist.barrier()
    dist.destroy_process_group()


def _first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list such as ``gpu[012-015,020],cpu1`` -> ``gpu012``."""
    head = nodelist.split(",")[0]
    if "[" in head:
        prefix, ranges = head.split("[", 1)
        return prefix + ranges.rstrip("]").split(",")[0].split("-")[0]
    return head




_LOCAL_DEPTH = 0  # > 0 inside single_process(): collectives are no-ops, the rank works on its own data
_BYTES = {"all_reduce": 0, "all_gather": 0, "gather": 0, "all_to_all": 0, "broadcast": 0}


def is_enabled() -> bool:
    return _LOCAL_DEPTH == 0 and dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_enabled() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_enabled() else 1


@contextmanager
def single_process():
    """Run the enclosed code as if this rank were alone (rank 0 of 1): the split level runs whole k-means on
    the coarse clusters a rank owns, with the same code as a one-process run and no collective."""
    global _LOCAL_DEPTH
    _LOCAL_DEPTH += 1
    try:
        yield
    finally:
        _LOCAL_DEPTH -= 1


def comm_bytes() -> dict[str, int]:
    """Bytes this rank has sent into each kind of collective since the last :func:`reset_comm_bytes`."""
    return dict(_BYTES)


def reset_comm_bytes() -> None:
    for key in _BYTES:
        _BYTES[key] = 0


def _comm_device() -> torch.device:
    """NCCL moves only GPU tensors; gloo only CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _count(kind: str, tensor: torch.Tensor) -> None:
    _BYTES[kind] += tensor.numel() * tensor.element_size()


def is_main_process() -> bool:
    return get_rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` in place over all ranks (no-op in one process) and return it."""
    if get_world_size() > 1:
        _count("all_reduce", tensor)
        dev = _comm_device()
        if tensor.device == dev:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        else:  # a CPU tensor under NCCL (or the reverse): reduce a copy on the backend's device
            moved = tensor.to(dev)
            dist.all_reduce(moved, op=dist.ReduceOp.SUM)
            tensor.copy_(moved)
    return tensor


def barrier() -> None:
    """Wait for every rank (no-op in one process): a file one rank writes is complete before another reads it."""
    if get_world_size() > 1:
        dist.barrier()


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with ``src``'s (no-op in one process) and return it."""
    if get_world_size() > 1:
        _count("broadcast", tensor)
        moved = tensor.to(_comm_device())
        dist.broadcast(moved, src)
        tensor.copy_(moved)
    return tensor






def _padded_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """This rank's rows zero-padded to the largest rank's count (collectives need equal shapes), and every rank's
    count."""
    sizes = _sizes(tensor.shape[0])
    padded = torch.zeros((max(sizes),) + tuple(tensor.shape[1:]), dtype=tensor.dtype, device=_comm_device())
    padded[: tensor.shape[0]] = tensor
    return padded, sizes


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate each rank's ``(n_r, d)`` rows in rank order; ranks may hold different ``n_r``."""
    world = get_world_size()
    if world == 1:
        return tensor
    padded, sizes = _padded_rows(tensor)
    out = [torch.zeros_like(padded) for _ in range(world)]
    _count("all_gather", padded)
    dist.all_gather(out, padded)
    return torch.cat([o[:s] for o, s in zip(out, sizes)]).to(tensor.device)


def gather_rows_to_main(tensor: torch.Tensor) -> torch.Tensor | None:
    """Like :func:`all_gather_rows`, but only rank 0 receives the concatenation (others get None): what rank 0
    alone writes costs no full-length buffer on the other ranks."""
    world = get_world_size()
    if world == 1:
        return tensor
    padded, sizes = _padded_rows(tensor)
    out = [torch.zeros_like(padded) for _ in range(world)] if get_rank() == 0 else None
    _count("gather", padded)
    dist.gather(padded, out, dst=0)
    return torch.cat([o[:s] for o, s in zip(out, sizes)]).to(tensor.device) if out is not None else None


def all_to_all_rows(tensor: torch.Tensor, send_counts: list[int]) -> tuple[torch.Tensor, list[int]]:
    """Send ``tensor[rows]`` to each rank: the first ``send_counts[0]`` rows to rank 0, the next to rank 1, ...
    Returns the rows received (in rank order) and how many came from each rank."""
    world = get_world_size()
    if world == 1:
        return tensor, list(send_counts)
    recv_counts = _all_to_all_counts(send_counts)
    width = int(torch.tensor(tensor.shape[1:]).prod()) if tensor.dim() > 1 else 1
    dev = _comm_device()
    out = torch.empty((sum(recv_counts),) + tuple(tensor.shape[1:]), dtype=tensor.dtype, device=dev)
    _count("all_to_all", tensor)
    dist.all_to_all_single(out.view(-1), tensor.to(dev).contiguous().view(-1), [c * width for c in recv_counts],
                           [c * width for c in send_counts])
    return out.to(tensor.device), recv_counts


def _all_to_all_counts(send_counts: list[int]) -> list[int]:
    send = torch.tensor(send_counts, dtype=torch.int64, device=_comm_device())
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send)
    return [int(c) for c in recv.cpu()]


def _sizes(n_local: int) -> list[int]:
    n = torch.tensor([n_local], dtype=torch.int64, device=_comm_device())
    sizes = [torch.zeros_like(n) for _ in range(get_world_size())]
    dist.all_gather(sizes, n)
    return [int(s.item()) for s in sizes]
