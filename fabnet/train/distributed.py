"""torchrun support: process group set-up, rank helpers, cross-rank reductions.

``torchrun --nproc_per_node N -m fabnet train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; a plain
``fabnet train`` runs as a world of one and never touches torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str) -> torch.device:
    """ "auto" -> cuda when available, else cpu; anything else as given (checked)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r}: this torch has no CUDA device; use --device cpu")
    return dev


def _env_int(name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    """The integer in environment variable ``name`` (torchrun sets them), checked: ValueError
    naming the variable for text that is not an integer in [minimum, maximum]."""
    text = os.environ.get(name)
    if text is None or text.strip() == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"environment variable {name}={text!r}: expected an integer {bound} (torchrun sets it)")
    return value


def setup(device: str) -> World:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on GPUs, gloo on CPUs)."""
    size = _env_int("WORLD_SIZE", 1, 1)
    rank = _env_int("RANK", 0, 0, size - 1)
    local_rank = _env_int("LOCAL_RANK", 0, 0)
    local_size = _env_int("LOCAL_WORLD_SIZE", size, 1)
    dev = resolve_device(device)
    if size <= 1:
        return World(device=dev)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        # N processes on shared cores: split the intra-op threads instead of oversubscribing.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))
    initialized_here = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        initialized_here = True
    return World(rank=rank, size=size, local_rank=local_rank, device=dev, initialized_here=initialized_here)


def teardown(world: World) -> None:
    if world.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def all_mean(world: World, values: list[float]) -> list[float]:
    """Element-wise mean of ``values`` over ranks (identity in a world of one)."""
    if not world.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return (t / world.size).tolist()


def any_rank(world: World, flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any (so all ranks stop at the same step)."""
    if not world.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=world.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def parameter_checksums(model: torch.nn.Module, world: World) -> list[str]:
    """SHA-256 (first 16 hex digits) of the bytes of every parameter, one per rank, gathered.

    Equal digests mean bit-identical parameters: the test of DDP keeping ranks in sync (a sum
    would miss two ranks drifting in compensating directions). BatchNorm running statistics are
    left out: DDP broadcasts them from rank 0 at each forward, so after the last forward each
    rank holds the statistics of its own shard.
    """
    import hashlib

    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    mine = h.hexdigest()[:16]
    if not world.distributed:
        return [mine]
    out: list = [None] * world.size
    dist.all_gather_object(out, mine)
    return out
