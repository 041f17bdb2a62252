"""Training: ``run(cfg)`` builds everything from the config, then plain functions train.

Launch (see README.md):
    python train.py                                   # single process, device auto
    python train.py head=cosface head.s=30 head.m=0.35 backbone=resnet50
    torchrun --nproc_per_node=8 train.py data=folder data.root=/data/casia
    sbatch --ntasks-per-node=8 scripts/slurm_train.sh data=folder data.root=/data/casia
    python train.py trainer.resume=auto               # continue the latest run of this name

The config stops at :func:`setup`: it builds a :class:`Training` of plain objects and numbers,
and :func:`train_one_epoch`, :func:`evaluate` and :func:`save` work on that alone. The loop
knows no criterion kind: DDP wrapping, the gradient norm, checkpoint entries and buffer
broadcast are asked of the :class:`~facerec.model.Recognizer`, which asks its criterion.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
from functools import partial
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from facerec import distributed
from facerec.files.checkpoint import TrainState
from facerec.model import Recognizer, build_recognizer
from facerec.optim import param_groups
from facerec.training import finetune
from facerec.training.ema import build_average
from facerec.training.engine import NonFiniteGuard, Preemption, train_step
from facerec.training.inputs import build_data, train_loader
from facerec.training.loop import (
    Preempted,
    Training,
    best_metric,
    describe,
    loop_settings,
    scaled_lr,
)
from facerec.training.malloc import keep_freed_memory, release_freed_memory
from facerec.training.outputs import evaluate, finish, save
from facerec.training.report import Reporter
from facerec.training.resume import resume
from facerec.training.run_dir import (
    check_same_run,
    create_run_dir,
    open_run_dir,
    resolve_run_dir,
    run_root,
)
from facerec.training.speed import (
    compile_backbone,
    configure_kernels,
    resolve_amp,
    resolve_compile,
)
from facerec.training.validate import (
    check_config,
    check_criterion,
    check_input_size,
    startup_warnings,
)

__all__ = ["Preempted", "Training", "fit", "run", "setup"]

log = logging.getLogger("facerec")

# The fewest samples a training micro-batch may have: BatchNorm in train mode needs two.
MIN_BATCH = 2


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train as ``cfg`` says; returns what ``metrics.json`` holds.

    Raises:
        Preempted: after SIGTERM/SIGUSR1 or Ctrl-C, once the checkpoint is written.
    """
    with distributed.process_group(cfg.trainer.device, together=(Preempted,)) as env:
        return fit(cfg, env)[0]


def fit(cfg: DictConfig, env: distributed.Dist) -> tuple[dict[str, Any], Recognizer]:
    """The training run on this process; returns the metrics and the trained modules."""
    training = setup(cfg, env)
    with training.lock:
        preemption = Preemption()
        training.recognizer.train()
        try:
            while training.state.step < training.loop.total_steps:
                train_one_epoch(training, preemption)
        finally:
            preemption.close()
            training.report.close()
        return finish(training), training.recognizer


def setup(cfg: DictConfig, env: distributed.Dist) -> Training:
    """Check the config, build every object of the run, resume if asked: the config stops here.

    Everything that can fail on bad input happens before the run directory is touched; a new
    run's folder is created last, atomically (:func:`facerec.training.run_dir.create_run_dir`).
    """
    check_config(cfg, env.device)
    check_input_size(cfg)
    check_criterion(cfg)  # a distillation teacher before the data (alignment can take minutes)
    seed_everything(cfg.seed)
    tcfg = cfg.trainer
    keep_freed_memory(tcfg.get("malloc", "auto"), env.device.type)  # CPU: no page fault per step
    if tcfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    configure_kernels(env.device, tcfg.deterministic, tcfg.tf32)
    amp = resolve_amp(tcfg.amp, env.device)
    data, scan, verifiers = build_data(cfg, env)
    release_freed_memory()  # a cold cache's alignment (MTCNN) and the decoding: not for the steps
    run_dir, resume_from = resolve_run_dir(cfg)  # run_dir None: a new run
    for warning in startup_warnings(cfg, resuming=resume_from is not None) if env.is_main else ():
        log.warning(warning)
    recognizer = build_recognizer(cfg, len(scan.classes), env)
    if tcfg.sync_bn and env.enabled:
        recognizer = nn.SyncBatchNorm.convert_sync_batchnorm(recognizer)
    loader = train_loader(cfg, env, data)
    loop = loop_settings(tcfg, env, len(loader), data.batch_size, amp, best_metric(tcfg, verifiers))
    if tcfg.init_from and resume_from is None:
        log.info(finetune.init_from(tcfg.init_from, recognizer.model))
    recognizer.to(env.device, memory_format=loop.memory_format)
    average = build_average(recognizer.model, **tcfg.ema)  # after .to(): the copy's device
    compile_step = resolve_compile(tcfg.compile, env.device)
    lr = scaled_lr(cfg, loop.global_batch)
    groups = finetune.lr_scaled_groups(recognizer.parts, tcfg.lr_scale, lr, cfg.optim.weight_decay,
                                       param_groups)  # fmt: skip
    optimizer = instantiate(cfg.optim, lr=lr)(groups)
    build_stepper = partial(step_module, recognizer, compile_step, env)
    stepper = finetune.BackboneFreeze(recognizer.model.backbone, tcfg.freeze_backbone_steps,
                                      build_stepper)  # fmt: skip
    scheduler = instantiate(cfg.sched)(
        optimizer, steps_per_epoch=loop.steps_per_epoch, total_steps=loop.total_steps
    )
    scaler = torch.amp.GradScaler(env.device.type, enabled=loop.amp_dtype is torch.float16)
    guard = NonFiniteGuard(tcfg.max_nonfinite_steps)
    state = TrainState()
    if resume_from is not None:
        if tcfg.init_from:
            log.info("trainer.init_from is not read: resuming the run from its own checkpoint")
        check_same_run(resume_from[1].get("config"), cfg, resume_from[0])
        state = resume(*resume_from, recognizer, average, scan.classes, optimizer,
                       scheduler=scheduler, scaler=scaler, guard=guard)  # fmt: skip
    if run_dir is None:
        run_dir = create_run_dir(run_root(cfg), env)
    lock = open_run_dir(cfg, run_dir, state.step) if env.is_main else contextlib.nullcontext()
    if env.is_main:
        log.info("run dir %s | %s | %s", run_dir, scan.summary(),
                 describe(loop, env, lr, tcfg.lr_reference_batch, amp, compile_step))  # fmt: skip
    report = Reporter(run_dir, env.is_main, loop.total_steps, state.step, tcfg.progress)
    return Training(env, loop, run_dir, recognizer, stepper, average, loader, verifiers, optimizer,
                    scheduler, scaler, guard, state, report, scan.classes,
                    OmegaConf.to_container(cfg, resolve=True), lock)  # fmt: skip


def step_module(recognizer: Recognizer, compile_step: bool, env: distributed.Dist) -> nn.Module:
    """What the training step runs through; it shares every parameter with ``recognizer``,
    which verification and checkpoints keep using (eager, plain state-dict keys)."""
    stepper = recognizer
    if compile_step:
        stepper = Recognizer(compile_backbone(recognizer.model), recognizer.criterion)
    if not env.enabled:
        return stepper
    return stepper.data_parallel(None if env.device.type == "cpu" else [env.device])


def train_one_epoch(t: Training, preemption: Preemption) -> None:
    """Steps from the current position to the end of its epoch (or of the run).

    Raises:
        Preempted: a rank got SIGTERM/SIGUSR1 or SIGINT; the checkpoint is written first.
    """
    loop, state = t.loop, t.state
    epoch, offset = divmod(state.step, loop.steps_per_epoch)
    t.loader.sampler.set_epoch(epoch, offset * loop.accumulate * loop.batch_size)
    batches = iter(t.loader)
    for _ in range(offset, loop.steps_per_epoch):
        micro = [device_batch(t, *batch) for batch in itertools.islice(batches, loop.accumulate)]
        # BatchNorm in train mode needs two samples: smaller leftovers of unreadable images are
        # dropped (counted), and a step with nothing left on some rank is skipped on all.
        micro = [batch for batch in micro if len(batch[1]) >= MIN_BATCH]
        lr = t.optimizer.param_groups[0]["lr"]
        if distributed.all_agree(bool(micro), t.env.device):
            stepper = t.stepper.module(state.step)
            loss, norm, finite = train_step(stepper, micro, t.optimizer, t.scheduler, t.scaler,
                                            loop.amp_dtype, loop.grad_clip,
                                            t.recognizer.clip_grad_norm_)  # fmt: skip
            t.guard.update(finite, state.step + 1, lr, t.scaler)
        else:
            loss = norm = skip_empty_step(t, lr)
        state.step += 1
        t.average.update(t.recognizer.model, state.step)
        t.report.count(loop.global_batch)
        done = state.step >= loop.total_steps
        if done or state.step % loop.log_every == 0:
            log_scalars(t, loss, norm, lr)
        if done:
            save(t, "last")  # the final weights are on disk before anything that could fail
        if done or (loop.eval_every and state.step % loop.eval_every == 0):
            evaluate(t)
            save(t, "last")
        elif state.step % loop.checkpoint_every == 0:
            save(t, "last")
        if done:
            return
        if preemption.requested(t.env.device):
            save(t, "last")
            distributed.barrier()
            log.warning("%s: checkpoint written at step %d",
                        "Ctrl-C" if preemption.interrupted else "preemption signal",
                        state.step)  # fmt: skip
            raise Preempted(state.step, preemption.exit_code(loop.preempt_exit_code),
                            preemption.interrupted)  # fmt: skip


def skip_empty_step(t: Training, lr: float) -> torch.Tensor:
    """A step with no trainable batch: the schedule moves on, the weights do not. Returns NaN
    for the logged loss and norm (there are none); it is not a non-finite step."""
    t.state.skipped_batches += 1
    t.scheduler.step()
    log.warning("step %d: no batch of >= %d readable images, step skipped (%d in all, lr %.3e)",
                t.state.step + 1, MIN_BATCH, t.state.skipped_batches, lr)  # fmt: skip
    return torch.tensor(float("nan"))


def log_scalars(t: Training, loss: torch.Tensor, norm: torch.Tensor, lr: float) -> None:
    """The step's TensorBoard scalars (and, without a progress bar, a log line)."""
    scalars = {"loss": loss.item(), "lr": lr, "grad_norm": norm.item(),
               "skipped_steps": t.guard.skipped, "skipped_samples": t.state.skipped_samples,
               "skipped_batches": t.state.skipped_batches}  # fmt: skip
    t.report.train_scalars(t.state.step, {**scalars, **t.recognizer.criterion.scalars()})


def device_batch(
    t: Training, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader batch on the training device, without its unreadable images (label -1)."""
    keep = labels >= 0
    if not bool(keep.all()):
        t.state.skipped_samples += int((~keep).sum())
        images, labels = images[keep], labels[keep]
    images = images.to(t.env.device, non_blocking=True)
    labels = labels.to(t.env.device, non_blocking=True)
    return images.contiguous(memory_format=t.loop.memory_format), labels
