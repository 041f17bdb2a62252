"""Process-group set-up for torchrun, SLURM's srun, and plain single-process runs.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (srun's ``SLURM_*`` variables are
translated into them); without them the run is a single process. The backend follows the
device: NCCL for CUDA, gloo for CPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from facerec.messages import first_line

log = logging.getLogger("facerec")


@dataclass(frozen=True)
class Dist:
    """Where this process stands: global rank, local rank, world size and its device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only the main process logs, evaluates and writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks the machine's accelerator (CUDA, MPS, XPU ...) if any, else the CPU.

    Under torchrun each process takes the accelerator with its local rank.
    """
    if name == "auto":
        accelerator = torch.accelerator.current_accelerator(check_available=True)
        if accelerator is None:
            return torch.device("cpu")
        return torch.device(accelerator.type, local_rank)
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"trainer.device={name!r} is not a device: use auto, cpu, cuda, cuda:1, mps ..."
        ) from None
    if device.type != "cpu" and device.index is None:
        device = torch.device(device.type, local_rank)
    if device.type != "cpu":
        module = getattr(torch, device.type, None)
        available = module is not None and module.is_available()
        count = module.device_count() if available else 0
        if device.index >= count:
            raise ValueError(
                f"trainer.device={name}: {device} requested but {count} {device.type}"
                " device(s) are available; use trainer.device=cpu or auto"
            )
    return device


def _from_slurm() -> None:
    """Under ``srun`` (one task per GPU) translate SLURM's variables into torchrun's.

    torchrun's own variables win when both are present (torchrun inside an sbatch job).
    ``MASTER_ADDR`` must name the first node (scripts/slurm_train.sh sets it).
    """
    env = os.environ
    if "RANK" in env or int(env.get("SLURM_NTASKS", 1)) <= 1:
        return
    env["RANK"] = env["SLURM_PROCID"]
    env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    env["WORLD_SIZE"] = env["SLURM_NTASKS"]
    env.setdefault("MASTER_PORT", "29500")
    if "MASTER_ADDR" not in env:
        raise RuntimeError(
            "SLURM job with several tasks but no MASTER_ADDR: export MASTER_ADDR=$(scontrol"
            " show hostnames $SLURM_JOB_NODELIST | head -n 1) (scripts/slurm_train.sh does)"
        )


def init(device_name: str = "auto") -> Dist:
    """Join the process group if launched by torchrun or srun; returns this process's place."""
    _from_slurm()
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type != "cpu":
            getattr(torch, device.type).set_device(device)
        backend = dist.Backend.default_device_backend_map.get(device.type, "gloo")
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return Dist(rank, local_rank, world_size, device)


def broadcast(value: Any, src: int = 0) -> Any:
    """Everyone gets ``src``'s (picklable) value; identity in a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Give every rank ``src``'s buffers (BatchNorm running statistics, head state).

    DDP keeps parameters in sync, but each rank's last forward pass updates its own running
    statistics; after this the ranks hold identical models.
    """
    if dist.is_available() and dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=src)


def _reduce_flag(flag: bool, device: torch.device, op: dist.ReduceOp) -> bool:
    """``flag`` combined over the ranks with ``op`` (one tiny all-reduce; NCCL reduces on
    the GPU, gloo on the CPU); ``flag`` itself in a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    box = torch.tensor([float(flag)], device=device)
    dist.all_reduce(box, op=op)
    return bool(box.item())


def all_agree(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is True on every rank."""
    return _reduce_flag(flag, device, dist.ReduceOp.MIN)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank as soon as ``flag`` is True on any rank."""
    return _reduce_flag(flag, device, dist.ReduceOp.MAX)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup(synchronize: bool = True) -> None:
    """Destroy the process group; with ``synchronize``, once every rank has reached here.

    Without the barrier a gloo rank that tears its connections down while the other rank is
    still closing its own can abort ("terminate called without an active exception", SIGABRT:
    3 of 20 two-rank runs on a loaded 2-core machine). A rank leaving on an error must not wait
    for ranks that never arrive: ``synchronize=False`` there.
    """
    if dist.is_available() and dist.is_initialized():
        if synchronize:
            try:
                dist.barrier()
            except RuntimeError as error:  # a rank left on an error after all: do not wait
                log.warning("distributed: the ranks did not meet before closing (%s)",
                            first_line(error))  # fmt: skip
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: str, together: tuple[type[BaseException], ...] = ()) -> Iterator[Dist]:
    """``init(device)`` for the body; on the way out the group is destroyed, after a barrier
    when the body finished or raised one of ``together`` (exceptions every rank raises at the
    same step, such as a preemption), without one after any other error (the other ranks may
    never arrive)."""
    env = init(device)
    try:
        yield env
    except together:
        cleanup()
        raise
    except BaseException:
        cleanup(synchronize=False)
        raise
    cleanup()
