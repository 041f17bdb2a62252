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

import itertools
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from facerec import checkpoint, distributed
from facerec.checkpoint import TrainState
from facerec.engine import NonFiniteGuard, Preemption, train_step
from facerec.evaluate import Verifier
from facerec.model import Recognizer, build_face_model
from facerec.optim import param_groups
from facerec.report import Reporter
from facerec.speed import (
    AMP_CHOICES,
    AMP_DTYPES,
    compile_backbone,
    configure_kernels,
    resolve_amp,
    resolve_compile,
)

__all__ = ["Preempted", "Recognizer", "Training", "build", "fit", "run"]

log = logging.getLogger("facerec")


class Preempted(Exception):
    """Raised after the preemption checkpoint is written; carries the exit status."""

    def __init__(self, step: int, exit_code: int) -> None:
        super().__init__(f"preempted: checkpoint written at step {step}, exit {exit_code}")
        self.step = step
        self.exit_code = exit_code


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def target_name(node: DictConfig) -> str:
    """``facerec.heads.arcface.ArcFace`` -> ``arcface``: a short label for a config choice."""
    return str(node.get("_target_", "x")).rsplit(".", 1)[-1].lower()


# Values the loop does arithmetic with: a wrong type stops the run at start-up, naming the key.
NUMBERS = (int, float)
CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "seed": (int,),
    "optim.lr": NUMBERS,
    "data.batch_size": (int,),
    "data.num_workers": (int,),
    "trainer.epochs": (int,),
    "trainer.max_steps": (int, type(None)),
    "trainer.log_every": (int,),
    "trainer.eval_every": (int,),
    "trainer.checkpoint_every": (int,),
    "trainer.accumulate": (int,),
    "trainer.keep_checkpoints": (int,),
    "trainer.max_nonfinite_steps": (int,),
    "trainer.grad_clip": (*NUMBERS, type(None)),
    "trainer.lr_reference_batch": (int, type(None)),
    "trainer.compile": (bool, str),
    "trainer.tf32": (bool,),
    "trainer.channels_last": (bool,),
}


def check_config(cfg: DictConfig, device: torch.device) -> None:
    """Impossible combinations stop here, before anything is built or written."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(
            f"missing required config value(s): {', '.join(missing)}"
            f" (set them on the command line, e.g. {missing[0]}=...)"
        )
    for key, types in CONFIG_TYPES.items():
        value = OmegaConf.select(cfg, key)
        # bool is an int subclass: `trainer.epochs=true` must not pass as 1.
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ValueError(f"{key}={value!r} must be {names}")
    tcfg = cfg.trainer
    if tcfg.amp not in AMP_CHOICES:
        raise ValueError(f"trainer.amp={tcfg.amp!r}: choose one of {list(AMP_CHOICES)}")
    if tcfg.compile not in (True, False, "auto"):
        raise ValueError(f"trainer.compile={tcfg.compile!r}: choose true, false or auto")
    if tcfg.amp == "fp16" and device.type == "cpu":
        raise ValueError("trainer.amp=fp16 needs a GPU; on the CPU use trainer.amp=bf16 or none")
    if tcfg.max_steps is None and int(tcfg.epochs) < 1:
        raise ValueError("set trainer.epochs >= 1 or trainer.max_steps")
    if tcfg.sync_bn and device.type == "cpu":
        raise ValueError("trainer.sync_bn=true needs GPUs: PyTorch's SyncBatchNorm has no CPU path")
    if int(tcfg.accumulate) < 1:
        raise ValueError(f"trainer.accumulate={tcfg.accumulate} must be >= 1")


def resolve_run_dir(
    cfg: DictConfig, env: distributed.Dist
) -> tuple[Path, tuple[Path, dict[str, Any]] | None]:
    """The run directory (same on every rank) and the checkpoint to resume from, if any."""
    name = cfg.name or f"{target_name(cfg.backbone)}-{target_name(cfg.head)}"
    run_root = Path(cfg.paths.output_dir) / name
    resume = cfg.trainer.resume
    found = None
    if resume == "auto":
        found = checkpoint.load_latest(run_root)
        if found is None:
            log.info("trainer.resume=auto: no checkpoint under %s, starting a new run", run_root)
    elif resume:
        found = Path(resume), checkpoint.load(resume)
    if found is not None:
        return found[0].parent.parent, found
    # One timestamp for all ranks: rank 0's, broadcast (a per-rank ${now:} would give one
    # folder per process).
    run_dir = run_root / time.strftime("%Y%m%d-%H%M%S")
    suffix = 1
    while env.is_main and run_dir.exists():  # two runs started in the same second
        run_dir = run_dir.with_name(f"{run_dir.name.split('+')[0]}+{suffix}")
        suffix += 1
    return Path(distributed.broadcast(str(run_dir))), None


@dataclass(frozen=True)
class HeadFactory:
    """``factory(num_classes) -> head``: the head's config bound to the embedding size.

    A criterion builds its head(s) with it, for all classes or for its shard of them.
    """

    config: DictConfig
    embedding_size: int

    def __call__(self, num_classes: int) -> nn.Module:
        return instantiate(self.config, embedding_size=self.embedding_size, num_classes=num_classes)


def build(cfg: DictConfig, num_classes: int, env: distributed.Dist | None = None) -> Recognizer:
    """Backbone -> embedding, then the criterion (``cfg.criterion``) around the head.

    Args:
        cfg: the composed training config.
        num_classes: identities in the training data.
        env: this process's rank and world size (a sharded criterion builds its shard).
    """
    size = int(cfg.embedding.embedding_size)
    rank, world = (env.rank, env.world_size) if env else (0, 1)
    make_criterion = instantiate(cfg.criterion, _partial_=True)
    criterion = make_criterion(make_head=HeadFactory(cfg.head, size), num_classes=num_classes,
                               embedding_size=size, rank=rank, world_size=world,
                               seed=int(cfg.seed))  # fmt: skip
    return Recognizer(build_face_model(cfg), criterion)


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
    stepper: nn.Module  # what the step trains through (compiled/DDP; shares every parameter)
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


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train as ``cfg`` says; returns what ``metrics.json`` holds.

    Raises:
        Preempted: after SIGTERM/SIGUSR1, once the checkpoint is written.
    """
    env = distributed.init(cfg.trainer.device)
    try:
        return fit(cfg, env)[0]
    finally:
        distributed.cleanup()


def fit(cfg: DictConfig, env: distributed.Dist) -> tuple[dict[str, Any], Recognizer]:
    """The training run on this process; returns the metrics and the trained modules."""
    training = setup(cfg, env)
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

    Everything that can fail on bad input happens before the run directory is touched.
    """
    check_config(cfg, env.device)
    seed_everything(cfg.seed)
    tcfg = cfg.trainer
    if tcfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    configure_kernels(env.device, tcfg.deterministic, tcfg.tf32)
    amp = resolve_amp(tcfg.amp, env.device)
    data = instantiate(cfg.data)
    scan = data.setup()
    verifiers = {
        name: Verifier(s, tcfg.eval_batch_size, data.num_workers, tcfg.eval_fusion)
        for name, s in data.val.items()
    }
    run_dir, resume_from = resolve_run_dir(cfg, env)
    recognizer = build(cfg, len(scan.classes), env)
    if tcfg.sync_bn and env.enabled:
        recognizer = nn.SyncBatchNorm.convert_sync_batchnorm(recognizer)
    loader = data.train_loader(env.rank, env.world_size, cfg.seed, show_progress=env.is_main)
    loop = loop_settings(tcfg, env, len(loader), data.batch_size, amp, best_metric(tcfg, verifiers))
    recognizer.to(env.device, memory_format=loop.memory_format)
    compile_step = resolve_compile(tcfg.compile, env.device)
    stepper = step_module(recognizer, compile_step, env)
    lr = scaled_lr(cfg, loop.global_batch)
    optimizer = instantiate(cfg.optim, lr=lr)(param_groups([recognizer], cfg.optim.weight_decay))
    scheduler = instantiate(cfg.sched)(
        optimizer, steps_per_epoch=loop.steps_per_epoch, total_steps=loop.total_steps
    )
    scaler = torch.amp.GradScaler(env.device.type, enabled=loop.amp_dtype is torch.float16)
    guard = NonFiniteGuard(tcfg.max_nonfinite_steps)
    state = TrainState()
    if resume_from is not None:
        state = resume(*resume_from, recognizer, scan.classes, optimizer,
                       scheduler=scheduler, scaler=scaler, guard=guard)  # fmt: skip
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        # The resolved config of this invocation; a resumed run keeps the original beside it.
        name = f"config.resume-{state.step}.yaml" if state.step else "config.yaml"
        (run_dir / name).write_text(OmegaConf.to_yaml(cfg, resolve=True))
        log.info("run dir %s | %s | %s", run_dir, scan.summary(),
                 describe(loop, env, lr, tcfg.lr_reference_batch, amp, compile_step))  # fmt: skip
    report = Reporter(run_dir, env.is_main, loop.total_steps, state.step, tcfg.progress)
    return Training(env, loop, run_dir, recognizer, stepper, loader, verifiers, optimizer,
                    scheduler, scaler, guard, state, report, scan.classes,
                    OmegaConf.to_container(cfg, resolve=True))  # fmt: skip


def resume(
    path: Path, ckpt: dict[str, Any], recognizer: Recognizer, classes: list[str],
    optimizer: torch.optim.Optimizer, **stateful: Any,
) -> TrainState:  # fmt: skip
    """Load checkpoint ``path`` into the run's objects; the criterion loads its own part."""
    state = checkpoint.restore_training(ckpt, path, recognizer.model, classes, **stateful)
    recognizer.criterion.restore(ckpt, path, optimizer)
    log.info("resumed from %s at step %d", path, state.step)
    return state


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


def best_metric(tcfg: DictConfig, verifiers: dict[str, Verifier]) -> str | None:
    """The verification set that picks ``best.pt``: ``trainer.best_metric`` or the first."""
    name = tcfg.best_metric or next(iter(verifiers), None)
    if name is not None and name not in verifiers:
        raise ValueError(f"trainer.best_metric={name!r} is not in data.val {list(verifiers)}")
    return name


def loop_settings(
    tcfg: DictConfig, env: distributed.Dist, batches: int, batch_size: int, amp: str,
    best: str | None,
) -> Loop:  # fmt: skip
    """The :class:`Loop` of ``trainer`` for a loader of ``batches`` batches per epoch."""
    accumulate = int(tcfg.accumulate)
    steps_per_epoch = batches // accumulate
    return Loop(
        total_steps=int(tcfg.max_steps or tcfg.epochs * steps_per_epoch),
        steps_per_epoch=steps_per_epoch,
        accumulate=accumulate,
        batch_size=batch_size,
        global_batch=batch_size * env.world_size * accumulate,
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


def scaled_lr(cfg: DictConfig, global_batch: int) -> float:
    """``optim.lr``, scaled linearly from ``trainer.lr_reference_batch`` when that is set
    (Goyal et al. 2017)."""
    lr = float(cfg.optim.lr)
    if cfg.trainer.lr_reference_batch:
        lr *= global_batch / float(cfg.trainer.lr_reference_batch)
    return lr


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
        Preempted: a rank got SIGTERM/SIGUSR1; the checkpoint is written first.
    """
    loop, state = t.loop, t.state
    epoch, offset = divmod(state.step, loop.steps_per_epoch)
    t.loader.sampler.set_epoch(epoch, offset * loop.accumulate * loop.batch_size)
    batches = iter(t.loader)
    for _ in range(offset, loop.steps_per_epoch):
        micro = [device_batch(t, *batch) for batch in itertools.islice(batches, loop.accumulate)]
        lr = t.optimizer.param_groups[0]["lr"]
        loss, norm, finite = train_step(t.stepper, micro, t.optimizer, t.scheduler, t.scaler,
                                        loop.amp_dtype, loop.grad_clip,
                                        t.recognizer.clip_grad_norm_)  # fmt: skip
        state.step += 1
        t.report.count(loop.global_batch)
        t.guard.update(finite, state.step, lr, t.scaler)
        done = state.step >= loop.total_steps
        if done or state.step % loop.log_every == 0:
            scalars = {"loss": loss.item(), "lr": lr, "grad_norm": norm.item(),
                       "skipped_steps": t.guard.skipped,
                       "skipped_samples": state.skipped_samples}  # fmt: skip
            t.report.train_scalars(state.step, {**scalars, **t.recognizer.criterion.scalars()})
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
            log.warning("preemption signal: checkpoint written at step %d", state.step)
            raise Preempted(state.step, loop.preempt_exit_code)


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


def evaluate(t: Training) -> None:
    """Rank 0 verifies on every set; the others wait at the barrier; a new best is saved."""
    t.report.pause()
    improved = False
    if t.env.is_main:
        for name, verifier in t.verifiers.items():
            result = verifier.evaluate(t.recognizer.model, t.env.device,
                                       amp_dtype=t.loop.amp_dtype,
                                       channels_last=t.loop.channels_last,
                                       show_progress=t.loop.progress)  # fmt: skip
            t.state.results[name] = result.summary()
            t.report.verification(name, result, t.state.step, verifier)
            if name == t.loop.best_metric and result.accuracy > t.state.best:
                t.state.best, t.state.best_step = result.accuracy, t.state.step
                improved = True
    if distributed.broadcast(improved):  # on every rank: a criterion may write per-rank files
        save(t, "best")
    distributed.barrier()
    t.report.resume()


def save(t: Training, tag: str) -> None:
    """Write ``best.pt`` (``tag="best"``) or the next step checkpoint (``"last"``)."""
    t.report.pause()
    folder = t.run_dir / "checkpoints"
    name = "best" if tag == "best" else f"step_{t.state.step:09d}"
    entries = t.recognizer.criterion.checkpoint_entries(
        t.optimizer, folder, name, t.state.step, t.loop.keep_checkpoints
    )
    if t.env.is_main:
        ckpt = checkpoint.training_checkpoint(
            t.recognizer.model, t.state, t.state.step // t.loop.steps_per_epoch, t.classes,
            t.config, {"scheduler": t.scheduler, "scaler": t.scaler, "guard": t.guard}, entries,
        )  # fmt: skip
        if tag == "best":
            checkpoint.save(ckpt, folder / "best.pt")
        else:
            checkpoint.save_step(ckpt, folder, keep=t.loop.keep_checkpoints)
    t.report.resume()


def finish(t: Training) -> dict[str, Any]:
    """Synchronise the ranks' buffers and write ``metrics.json``; returns the metrics."""
    t.recognizer.broadcast_buffers()
    state = t.state
    metrics = {
        "step": state.step,
        "epoch": state.step / t.loop.steps_per_epoch,
        "images_per_sec": t.report.images_per_sec,
        "skipped_steps": t.guard.skipped,
        "skipped_samples": state.skipped_samples,
        "best": {"set": t.loop.best_metric, "accuracy": state.best, "step": state.best_step},
        "val": state.results,
    }
    if t.loop.best_metric in state.results:
        result = state.results[t.loop.best_metric]
        metrics.update({k: result[k] for k in ("accuracy", "accuracy_std", "threshold")})
    if t.env.is_main:
        (t.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("metrics: %s", t.run_dir / "metrics.json")
    metrics["run_dir"] = str(t.run_dir)
    return metrics
