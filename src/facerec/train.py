"""Training: ``run(cfg)`` builds everything from the config, then plain functions train.

Launch (see README.md):
    python train.py                                   # single process, device auto
    python train.py head=cosface head.s=30 head.m=0.35 backbone=resnet50
    torchrun --nproc_per_node=8 train.py data=folder data.root=/data/casia
    sbatch --ntasks-per-node=8 scripts/slurm_train.sh data=folder data.root=/data/casia
    python train.py trainer.resume=auto               # continue the latest run of this name
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from facerec import checkpoint, distributed
from facerec.data.transforms import normalize
from facerec.engine import NonFiniteGuard, Preemption, train_step
from facerec.evaluate import Verifier
from facerec.inference import build_face_model
from facerec.model import FaceModel
from facerec.optim import param_groups
from facerec.partial_fc import PartialFC
from facerec.partial_fc import clip_grad_norm_ as pfc_clip_grad_norm_
from facerec.report import Reporter
from facerec.speed import (
    AMP_CHOICES,
    AMP_DTYPES,
    compile_backbone,
    configure_kernels,
    resolve_amp,
    resolve_compile,
)

log = logging.getLogger("facerec")


class Recognizer(nn.Module):
    """Face model + margin head in one module, so one DDP wrapper syncs both."""

    def __init__(self, model: FaceModel, head: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch.

        Args:
            images: ``(B, 3, H, W)`` float, normalised.
            labels: ``(B,)`` int64 class indices.

        Returns:
            Scalar: cross-entropy of the head's logits (in float32), plus the head's
            ``regularizer(embeddings)`` for heads that have one (MagFace).
        """
        embeddings = self.model(images)
        if isinstance(self.head, PartialFC):  # sharded centres: the head computes the loss
            return self.head(embeddings, labels)
        loss = F.cross_entropy(self.head(embeddings, labels).float(), labels)
        regularizer = getattr(self.head, "regularizer", None)
        if regularizer is not None:
            loss = loss + regularizer(embeddings)
        return loss

    def no_sync(self) -> contextlib.AbstractContextManager:
        """DDP's no_sync of the model when only the model is DDP-wrapped (Partial FC)."""
        no_sync = getattr(self.model, "no_sync", None)
        return no_sync() if no_sync is not None else contextlib.nullcontext()


@dataclass
class TrainState:
    """What moves during training besides the modules, optimizer and scheduler."""

    step: int = 0
    best: float = -1.0
    best_step: int = -1
    skipped_samples: int = 0
    results: dict[str, dict[str, float]] = field(default_factory=dict)


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


def build(cfg: DictConfig, num_classes: int, env: distributed.Dist | None = None) -> Recognizer:
    """Backbone -> embedding -> head, each from its own config group.

    With ``trainer.head_parallel.partial_fc`` the head holds only this rank's shard of the
    class centres (:class:`facerec.partial_fc.PartialFC`).
    """
    size = int(cfg.embedding.embedding_size)

    def make_head(classes: int) -> nn.Module:
        return instantiate(cfg.head, embedding_size=size, num_classes=classes)

    parallel = OmegaConf.select(cfg, "trainer.head_parallel") or {}
    if parallel.get("partial_fc"):
        rank, world = (env.rank, env.world_size) if env else (0, 1)
        rate = float(parallel.get("sample_rate", 1.0))
        head = PartialFC.build(make_head, num_classes, size, rate, rank=rank, world_size=world,
                               seed=int(cfg.seed))  # fmt: skip
    else:
        head = make_head(num_classes)
    return Recognizer(build_face_model(cfg), head)


def restore(
    ckpt: dict[str, Any], path: Path, recognizer: Recognizer, classes: list[str], **stateful: Any
) -> TrainState:
    """Load a checkpoint into the modules and ``stateful`` objects (optimizer, scheduler ...)."""
    if ckpt.get("classes") != classes:
        saved = len(ckpt.get("classes") or [])
        raise ValueError(
            f"checkpoint {path} was trained on {saved} identities, this data has {len(classes)}"
            " (or their names differ): resume with the same data"
        )
    sharded = isinstance(recognizer.head, PartialFC)
    for name, module in (("model", recognizer.model), ("head", recognizer.head)):
        if name == "head" and sharded:
            continue  # each rank's shard comes from its own file (restore_shard)
        try:
            module.load_state_dict(ckpt[name])
        except RuntimeError as error:
            saved = ckpt.get("config", {}).get("backbone", {}).get("_target_")
            raise ValueError(
                f"checkpoint {path} does not fit this {name} (it was saved with backbone"
                f" {saved}): {str(error).splitlines()[0]}"
            ) from error
    for name, obj in stateful.items():
        obj.load_state_dict(ckpt[name])
    checkpoint.set_rng_state(ckpt["rng"])
    return TrainState(**ckpt["state"])


def shard_path(folder: Path, rank: int, tag: str) -> Path:
    """This rank's Partial FC shard (head centres + optimizer state) of checkpoint ``tag``."""
    return folder / "shards" / f"rank{rank:05d}-{tag}.pt"


def restore_shard(path: Path, step: int, env: distributed.Dist, head: nn.Module,
                  optimizer: torch.optim.Optimizer) -> None:  # fmt: skip
    """Load this rank's head shard and optimizer state saved beside checkpoint ``path``."""
    shard = shard_path(path.parent, env.rank, path.stem)
    if not shard.is_file():
        raise ValueError(
            f"checkpoint {path} has no Partial FC shard for rank {env.rank} ({shard}): resume"
            " with the number of processes that wrote it"
        )
    state = checkpoint.load(shard, required=("head", "optimizer", "world_size"))
    if state["world_size"] != env.world_size or state["step"] != step:
        raise ValueError(
            f"{shard} was written at step {state['step']} by {state['world_size']} processes;"
            f" this run resumes step {step} on {env.world_size}"
        )
    head.load_state_dict(state["head"])
    optimizer.load_state_dict(state["optimizer"])


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
    check_config(cfg, env.device)
    seed_everything(cfg.seed)
    tcfg = cfg.trainer
    if tcfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    configure_kernels(env.device, tcfg.deterministic, tcfg.tf32)
    amp = resolve_amp(tcfg.amp, env.device)
    amp_dtype = AMP_DTYPES[amp]
    compile_step = resolve_compile(tcfg.compile, env.device)
    accumulate = int(tcfg.accumulate)
    memory_format = torch.channels_last if tcfg.channels_last else torch.contiguous_format

    # Everything that can fail on bad input happens before the run directory is touched.
    data = instantiate(cfg.data)
    scan = data.setup()
    verifiers = {
        name: Verifier(s, tcfg.eval_batch_size, data.num_workers, tcfg.eval_fusion)
        for name, s in data.val.items()
    }
    best_metric = tcfg.best_metric or next(iter(verifiers), None)
    if best_metric is not None and best_metric not in verifiers:
        raise ValueError(
            f"trainer.best_metric={best_metric!r} is not in data.val {list(verifiers)}"
        )
    run_dir, resume_from = resolve_run_dir(cfg, env)
    recognizer = build(cfg, len(scan.classes), env)
    sharded = isinstance(recognizer.head, PartialFC)
    if tcfg.sync_bn and env.enabled:
        recognizer = nn.SyncBatchNorm.convert_sync_batchnorm(recognizer)
    recognizer.to(env.device, memory_format=memory_format)
    # The step trains through `stepper`, which shares every parameter with `recognizer`;
    # verification and checkpoints use `recognizer` itself (eager, plain state-dict keys).
    stepper = recognizer
    if compile_step:
        stepper = Recognizer(compile_backbone(recognizer.model), recognizer.head)
    module: nn.Module = stepper
    grad_norm = None
    if env.enabled:
        ids = None if env.device.type == "cpu" else [env.device]
        if sharded:  # each rank's centres are its own: only the model is replicated
            module = Recognizer(DistributedDataParallel(stepper.model, device_ids=ids),
                                recognizer.head)  # fmt: skip
        else:
            module = DistributedDataParallel(stepper, device_ids=ids)
    if sharded:

        def grad_norm(max_norm: float | None) -> torch.Tensor:
            return pfc_clip_grad_norm_(recognizer.model.parameters(),
                                       recognizer.head.parameters(), max_norm)  # fmt: skip

    loader = data.train_loader(env.rank, env.world_size, cfg.seed, show_progress=env.is_main)
    steps_per_epoch = len(loader) // accumulate
    total_steps = int(tcfg.max_steps or tcfg.epochs * steps_per_epoch)
    global_batch = data.batch_size * env.world_size * accumulate
    lr = float(cfg.optim.lr)
    if tcfg.lr_reference_batch:  # linear scaling rule (Goyal et al. 2017)
        lr *= global_batch / float(tcfg.lr_reference_batch)
    optimizer = instantiate(cfg.optim, lr=lr)(param_groups([recognizer], cfg.optim.weight_decay))
    scheduler = instantiate(cfg.sched)(
        optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps
    )
    scaler = torch.amp.GradScaler(env.device.type, enabled=amp_dtype is torch.float16)
    guard = NonFiniteGuard(tcfg.max_nonfinite_steps)

    state = TrainState()
    if resume_from is not None:
        path, ckpt = resume_from
        stateful = {"scheduler": scheduler, "scaler": scaler, "guard": guard}
        if not sharded:
            stateful["optimizer"] = optimizer
        state = restore(ckpt, path, recognizer, scan.classes, **stateful)
        if sharded:
            restore_shard(path.resolve(), state.step, env, recognizer.head, optimizer)
        log.info("resumed from %s at step %d", path, state.step)

    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        # The resolved config of this invocation; a resumed run keeps the original beside it.
        name = f"config.resume-{state.step}.yaml" if state.step else "config.yaml"
        (run_dir / name).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    report = Reporter(run_dir, env.is_main, total_steps, state.step, tcfg.progress)
    if env.is_main:
        log.info(
            "run dir %s | %s | %d steps of %d per epoch | global batch %d = %d per process x %d"
            " process(es) x %d accumulated | lr %.4g%s | device %s, amp %s, compile %s",
            run_dir, scan.summary(), total_steps, steps_per_epoch, global_batch,
            data.batch_size, env.world_size, accumulate, lr,
            f" (linear scaling from batch {tcfg.lr_reference_batch})"
            if tcfg.lr_reference_batch else " (not scaled with the batch)",
            env.device, amp, "on" if compile_step else "off",
        )  # fmt: skip

    def save(tag: str) -> None:
        report.pause()
        folder = run_dir / "checkpoints"
        name = "best" if tag == "best" else f"step_{state.step:09d}"
        if sharded:  # every rank writes its centres and optimizer state first
            shard = {"head": recognizer.head.state_dict(), "optimizer": optimizer.state_dict(),
                     "step": state.step, "world_size": env.world_size}  # fmt: skip
            path = checkpoint.save(shard, shard_path(folder, env.rank, name))
            if tag != "best":
                pattern = f"rank{env.rank:05d}-{checkpoint.STEP_GLOB}"
                checkpoint.prune(path.parent, pattern, tcfg.keep_checkpoints)
            distributed.barrier()
        if not env.is_main:
            report.resume()
            return
        ckpt = {
            "model": recognizer.model.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "guard": guard.state_dict(),
            "step": state.step,
            "epoch": state.step // steps_per_epoch,
            "state": asdict(state),
            "rng": checkpoint.rng_state(),
            "classes": scan.classes,
            "config": OmegaConf.to_container(cfg, resolve=True),
        }
        if not sharded:  # sharded: rank 0's head and optimizer are already in its shard file
            ckpt["head"] = recognizer.head.state_dict()
            ckpt["optimizer"] = optimizer.state_dict()
        if tag == "best":
            checkpoint.save(ckpt, folder / "best.pt")
        else:
            checkpoint.save_step(ckpt, folder, keep=tcfg.keep_checkpoints)
        report.resume()

    def evaluate() -> None:
        """Rank 0 verifies on every set; the others wait at the barrier."""
        report.pause()
        improved = False
        if env.is_main:
            for name, verifier in verifiers.items():
                result = verifier.evaluate(recognizer.model, env.device, amp_dtype=amp_dtype,
                                           channels_last=tcfg.channels_last,
                                           show_progress=tcfg.progress)  # fmt: skip
                state.results[name] = result.summary()
                report.verification(name, result, state.step, verifier)
                if name == best_metric and result.accuracy > state.best:
                    state.best, state.best_step = result.accuracy, state.step
                    improved = True
        if distributed.broadcast(improved):  # every rank: Partial FC shards are per rank
            save("best")
        distributed.barrier()
        report.resume()

    preemption = Preemption()
    recognizer.train()
    try:
        while state.step < total_steps:
            epoch, offset = divmod(state.step, steps_per_epoch)
            loader.sampler.set_epoch(epoch, offset * accumulate * data.batch_size)
            batches = iter(loader)
            for _ in range(offset, steps_per_epoch):
                micro = []
                for images, labels in (next(batches) for _ in range(accumulate)):
                    keep = labels >= 0  # unreadable images come back with label -1
                    if not bool(keep.all()):
                        state.skipped_samples += int((~keep).sum())
                        images, labels = images[keep], labels[keep]
                    images = normalize(images.to(env.device, non_blocking=True))
                    labels = labels.to(env.device, non_blocking=True)
                    micro.append((images.contiguous(memory_format=memory_format), labels))
                lr_now = optimizer.param_groups[0]["lr"]
                loss, norm, finite = train_step(module, micro, optimizer, scheduler, scaler,
                                                amp_dtype, tcfg.grad_clip, grad_norm)  # fmt: skip
                state.step += 1
                report.count(global_batch)
                guard.update(finite, state.step, lr_now, scaler)
                if state.step % tcfg.log_every == 0 or state.step == total_steps:
                    scalars = {"loss": loss.item(), "lr": lr_now, "grad_norm": norm.item(),
                               "skipped_steps": guard.skipped,
                               "skipped_samples": state.skipped_samples}  # fmt: skip
                    head = getattr(recognizer.head, "head", recognizer.head)  # inside PartialFC
                    if hasattr(head, "s"):
                        scalars["head_s"] = float(head.s)
                    report.train_scalars(state.step, scalars)
                done = state.step >= total_steps
                if done or (tcfg.eval_every and state.step % tcfg.eval_every == 0):
                    evaluate()
                    save("last")
                elif state.step % tcfg.checkpoint_every == 0:
                    save("last")
                if done:
                    break
                if preemption.requested(env.device):
                    save("last")
                    distributed.barrier()
                    log.warning("preemption signal: checkpoint written at step %d", state.step)
                    raise Preempted(state.step, int(tcfg.preempt_exit_code))
    finally:
        preemption.close()
        report.close()
    # Rank 0's BatchNorm statistics everywhere (Partial FC shards keep their own state).
    distributed.broadcast_buffers(recognizer.model if sharded else recognizer)

    metrics = {
        "step": state.step,
        "epoch": state.step / steps_per_epoch,
        "images_per_sec": report.images_per_sec,
        "skipped_steps": guard.skipped,
        "skipped_samples": state.skipped_samples,
        "best": {"set": best_metric, "accuracy": state.best, "step": state.best_step},
        "val": state.results,
    }
    if best_metric in state.results:
        result = state.results[best_metric]
        metrics.update({k: result[k] for k in ("accuracy", "accuracy_std", "threshold")})
    if env.is_main:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("metrics: %s", run_dir / "metrics.json")
    metrics["run_dir"] = str(run_dir)
    return metrics, recognizer
