"""torch.distributed set-up from the launcher's environment: torchrun, or SLURM through submitit.

Rank and world size come from `RANK`/`WORLD_SIZE`/`LOCAL_RANK` (torchrun, or any launcher that sets them); inside a
submitit job with several tasks, submitit's `TorchDistributedEnvironment` exports those variables first (from
`JobEnvironment`: global rank, number of tasks, first host as master). One process and no variables: no process
group at all. Backend: NCCL with CUDA, gloo on CPU (which is how the tests run DDP here).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: `rank` of `world_size`, its `device` (cuda:LOCAL_RANK or cpu)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _export_submitit_env() -> None:
    if os.environ.get("SUBMITIT_EXECUTOR") and "RANK" not in os.environ:
        import submitit

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def launcher_rank() -> int:
    """This process's rank as the launcher set it (0 without a launcher), before any process group exists."""
    _export_submitit_env()
    return int(os.environ.get("RANK", 0))


def setup(device: str | None = None) -> DistEnv:
    """Initialise the process group if the environment asks for more than one process; return this process's view.

    `device` None picks cuda:LOCAL_RANK when CUDA is available, else the CPU.
    """
    _export_submitit_env()
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistEnv(rank=rank, world_size=world, local_rank=local, device=dev)


def initialized_world() -> int:
    """The size of the initialised default process group; 1 without one (single process, or not set up)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_gather_rows(*tensors: Tensor) -> list[Tensor]:
    """Concatenate each tensor's rows over all ranks, in rank order; ranks may hold different numbers of rows."""
    n = tensors[0].shape[0]
    world = dist.get_world_size()
    sizes = [torch.zeros(1, dtype=torch.long, device=tensors[0].device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([n], device=tensors[0].device))
    counts = [int(s) for s in sizes]
    gathered = []
    for t in tensors:
        padded = t.new_zeros((max(counts), *t.shape[1:]))
        padded[:n] = t
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        gathered.append(torch.cat([p[:c] for p, c in zip(parts, counts)]))
    return gathered


def single_process(device: torch.device | str) -> DistEnv:
    """The DistEnv of one process on `device` (training called from Python without a launcher)."""
    return DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device(device))


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_true(flag: bool, env: DistEnv) -> bool:
    """True when `flag` holds on every rank (e.g. "my loss is finite")."""
    if not env.distributed:
        return flag
    t = torch.tensor([0 if flag else 1], device=env.device)
    dist.all_reduce(t)
    return int(t) == 0


def same_on_all_ranks(value: torch.Tensor, env: DistEnv) -> bool:
    """Whether the float64 scalar `value` is bitwise the same on every rank (a check that DDP kept replicas equal)."""
    if not env.distributed:
        return True
    v = value.detach().double().reshape(1).to(env.device)
    lo, hi = v.clone(), v.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return bool(lo == hi)


def teardown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()
