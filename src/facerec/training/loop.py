"""What the training loop works on: its plain numbers (:class:`Loop`, read once from the
``trainer`` config) and the :class:`Training` of built objects, no config past it."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from facerec import distributed
from facerec.files.checkpoint import TrainState
from facerec.model import Recognizer
from facerec.training.ema import NoAverage, WeightEma
from facerec.training.engine import NonFiniteGuard
from facerec.training.finetune import BackboneFreeze
from facerec.training.report import Reporter
from facerec.training.speed import AMP_DTYPES
from facerec.training.verifier import Verifier

__all__ = [
    "Loop",
    "Preempted",
    "Training",
    "best_metric",
    "describe",
    "loop_settings",
    "scaled_lr",
]


@dataclass(frozen=True)
class Loop:
    """The loop's plain numbers and switches, read once from the config."""

    total_steps: int
    steps_per_epoch: int
    accumulate: int
    batch_size: int  # per process and micro-batch
    global_batch: int  # batch x processes x accumulate
    log_every: int
    eval_every: int
    checkpoint_every: int
    keep_checkpoints: int
    grad_clip: float | None
    amp_dtype: torch.dtype | None
    channels_last: bool
    progress: bool
    preempt_exit_code: int
    best_metric: str | None

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


@dataclass
class Training:
    """Everything the loop needs, built once by :func:`setup`; no config past this point."""

    env: distributed.Dist
    loop: Loop
    run_dir: Path
    recognizer: Recognizer  # eager modules: verification and checkpoints
    stepper: BackboneFreeze  # .module(step): what the step trains through (compiled/DDP)
    average: NoAverage | WeightEma  # trainer.ema: the model verified, checkpointed, exported
    loader: Any
    verifiers: dict[str, Verifier]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    guard: NonFiniteGuard
    state: TrainState
    report: Reporter
    classes: list[str]
    config: dict[str, Any]  # the resolved config, saved in every checkpoint
    lock: contextlib.AbstractContextManager  # the run directory's lock (rank 0), held by fit


class Preempted(Exception):
    """Raised after the preemption (or Ctrl-C) checkpoint is written; carries the exit status."""

    def __init__(self, step: int, exit_code: int, interrupted: bool = False) -> None:
        what = "interrupted (Ctrl-C)" if interrupted else "preempted"
        super().__init__(
            f"{what}: checkpoint written at step {step}, exit {exit_code};"
            " trainer.resume=auto continues the run"
        )
        self.step = step
        self.exit_code = exit_code


def total_steps(tcfg: DictConfig, steps_per_epoch: int, global_batch: int) -> int:
    """The run's length in optimizer steps: ``max_images`` (a budget in training images, the
    same whatever the batch or the machine's load), else ``max_steps``, else ``epochs``."""
    if tcfg.get("max_images") is not None:
        return max(1, math.ceil(int(tcfg.max_images) / global_batch))
    return int(tcfg.max_steps or tcfg.epochs * steps_per_epoch)


def loop_settings(
    tcfg: DictConfig, env: distributed.Dist, batches: int, batch_size: int, amp: str,
    best: str | None,
) -> Loop:  # fmt: skip
    """The :class:`Loop` of ``trainer`` for a loader of ``batches`` batches per epoch."""
    accumulate = int(tcfg.accumulate)
    steps_per_epoch = batches // accumulate
    global_batch = batch_size * env.world_size * accumulate
    return Loop(
        total_steps=total_steps(tcfg, steps_per_epoch, global_batch),
        steps_per_epoch=steps_per_epoch,
        accumulate=accumulate,
        batch_size=batch_size,
        global_batch=global_batch,
        log_every=int(tcfg.log_every),
        eval_every=int(tcfg.eval_every),
        checkpoint_every=int(tcfg.checkpoint_every),
        keep_checkpoints=int(tcfg.keep_checkpoints),
        grad_clip=tcfg.grad_clip,
        amp_dtype=AMP_DTYPES[amp],
        channels_last=bool(tcfg.channels_last),
        progress=bool(tcfg.progress),
        preempt_exit_code=int(tcfg.preempt_exit_code),
        best_metric=best,
    )


def describe(
    loop: Loop, env: distributed.Dist, lr: float, reference_batch: int | None, amp: str,
    compile_step: bool,
) -> str:  # fmt: skip
    """The start-up line: length, batch arithmetic, learning rate and speed switches."""
    scaling = (f" (linear scaling from batch {reference_batch})" if reference_batch
               else " (not scaled with the batch)")  # fmt: skip
    return (
        f"{loop.total_steps} steps of {loop.steps_per_epoch} per epoch | global batch"
        f" {loop.global_batch} = {loop.batch_size} per process x {env.world_size} process(es)"
        f" x {loop.accumulate} accumulated | lr {lr:.4g}{scaling} | device {env.device}, amp"
        f" {amp}, compile {'on' if compile_step else 'off'}"
    )


def scaled_lr(cfg: DictConfig, global_batch: int) -> float:
    """``optim.lr``, scaled linearly from ``trainer.lr_reference_batch`` when that is set
    (Goyal et al. 2017)."""
    lr = float(cfg.optim.lr)
    if cfg.trainer.lr_reference_batch:
        lr *= global_batch / float(cfg.trainer.lr_reference_batch)
    return lr


def best_metric(tcfg: DictConfig, verifiers: Collection[str]) -> str | None:
    """The verification set that picks ``best.pt``: ``trainer.best_metric`` or the first."""
    name = tcfg.best_metric or next(iter(verifiers), None)
    if name is not None and name not in verifiers:
        raise ValueError(f"trainer.best_metric={name!r} is not in data.val {list(verifiers)}")
    return name
