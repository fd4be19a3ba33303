"""torchrun helpers: process-group set-up from the environment, ranks, sharding and reductions.

Under ``torchrun`` the environment holds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`init_from_env` then starts the default process group with ``gloo`` for CPU work and
``nccl`` for CUDA work (one GPU per process: ``cuda:LOCAL_RANK``). Without those variables, or
with ``WORLD_SIZE=1``, everything here is a cheap no-op, so the same code runs in one process.

Sharding follows :meth:`s3prl_redundancy.audio.AudioDataset.shard`: rank ``r`` of ``w`` takes the
items ``r, r + w, r + 2w, ...`` (disjoint, every item once, no padding), and
:func:`shard_indices` gives the global index of each item of a shard, which the similarity pass
uses for frame keys that do not depend on the sharding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, List, Optional, Sequence, Tuple

from .errors import UserInputError

__all__ = [
    "DistContext",
    "env_world",
    "under_torchrun",
    "init_from_env",
    "current",
    "backend_for",
    "shard_indices",
    "shard_dataset",
    "all_reduce_sum",
    "all_ok",
    "barrier",
    "cleanup",
]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one rank is up."""
        return self.world_size > 1 and _initialized()


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise UserInputError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def env_world() -> Tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment (``(0, 1, 0)`` outside torchrun)."""
    rank, world, local = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise UserInputError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return rank, world, local


def under_torchrun() -> bool:
    """True when torchrun (or another launcher using its variables) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def backend_for(device: Any) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    import torch

    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def current() -> DistContext:
    """The context of an already initialised process group (or the single-process context)."""
    if not _initialized():
        return DistContext()
    import torch.distributed as dist

    _, _, local = env_world()
    return DistContext(dist.get_rank(), dist.get_world_size(), local, dist.get_backend(), False)


def init_from_env(device: Any = "cpu", timeout_s: float = 1800.0) -> DistContext:
    """Start the default process group when torchrun asked for more than one process.

    Returns the context; ``initialized_here`` tells :func:`cleanup` whether to tear it down. An
    already initialised group is reused as it is. On CUDA, ``torch.cuda.set_device(LOCAL_RANK)``
    comes first, as nccl needs.
    """
    import torch
    import torch.distributed as dist

    if _initialized():
        return current()
    if not under_torchrun():
        return DistContext()
    rank, world, local = env_world()
    if world == 1:
        return DistContext(0, 1, local)
    if not dist.is_available():
        raise UserInputError("torchrun started several processes but this torch build has no torch.distributed")
    backend = backend_for(device)
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise UserInputError("cuda under torchrun, but CUDA is not available; use cpu (gloo)", argument="device")
        if local >= torch.cuda.device_count():
            raise UserInputError(
                f"LOCAL_RANK={local} but only {torch.cuda.device_count()} CUDA device(s): start at most that many "
                "processes per node (torchrun --nproc_per_node)"
            )
        torch.cuda.set_device(local)
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
    return DistContext(rank, world, local, backend, True)


def shard_indices(total: int, rank: int, world_size: int) -> List[int]:
    """Global indices of rank ``rank``'s items: ``rank, rank + world_size, ...`` (as ``AudioDataset.shard``)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid rank {rank} of world size {world_size}")
    return list(range(rank, total, world_size))


class _IndexedSubset:
    """Items ``indices`` of a map-style dataset (for datasets without a ``shard`` method)."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]


def shard_dataset(dataset: Any, rank: int, world_size: int) -> Tuple[Any, List[int]]:
    """``(shard, global indices)``: ``dataset.shard(rank, world_size)`` when it has one, else a subset."""
    indices = shard_indices(len(dataset), rank, world_size)
    if world_size == 1:
        return dataset, indices
    shard = dataset.shard(rank, world_size) if hasattr(dataset, "shard") else _IndexedSubset(dataset, indices)
    if len(shard) != len(indices):
        raise RuntimeError(f"{type(dataset).__name__}.shard({rank}, {world_size}) gave {len(shard)} items, expected {len(indices)}")
    return shard, indices


def _comm_device(device: Any = None):
    import torch
    import torch.distributed as dist

    if device is not None:
        return torch.device(device)
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float], device: Any = None, dtype: Any = None) -> List[float]:
    """Element-wise sum of ``values`` over all ranks (the values themselves without a process group).

    Integers stay exact (int64) when every value is an int.
    """
    values = list(values)
    if not _initialized():
        return values
    import torch
    import torch.distributed as dist

    if dtype is None:
        dtype = torch.int64 if all(isinstance(v, int) for v in values) else torch.float64
    t = torch.tensor(values, dtype=dtype, device=_comm_device(device))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [int(v) if dtype == torch.int64 else float(v) for v in t.tolist()]


def all_ok(ok: bool, device: Any = None) -> bool:
    """True on every rank only if ``ok`` is True on every rank (a collective: call it on all ranks)."""
    if not _initialized():
        return bool(ok)
    import torch
    import torch.distributed as dist

    t = torch.tensor([1 if ok else 0], dtype=torch.int64, device=_comm_device(device))
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def barrier() -> None:
    if _initialized():
        import torch.distributed as dist

        if dist.get_backend() == "nccl":
            import torch

            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def cleanup(ctx: Optional[DistContext]) -> None:
    """Destroy the process group if :func:`init_from_env` started it."""
    if ctx is not None and ctx.initialized_here and _initialized():
        import torch.distributed as dist

        dist.destroy_process_group()
