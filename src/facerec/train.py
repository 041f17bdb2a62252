"""Training: ``run(cfg)`` builds everything from the config, then plain functions train.

Launch (see README.md):
    python train.py                                   # single process, device auto
    python train.py head=cosface head.s=30 head.m=0.35 backbone=resnet50
    torchrun --nproc_per_node=8 train.py data=folder data.root=/data/casia
    python train.py trainer.resume=auto               # continue the latest run of this name
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from facerec import checkpoint, distributed
from facerec.data.transforms import normalize
from facerec.eval.plots import distance_histogram_image, roc_image
from facerec.evaluate import Verifier
from facerec.model import FaceModel
from facerec.optim import param_groups

log = logging.getLogger("facerec")

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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
        loss = F.cross_entropy(self.head(embeddings, labels).float(), labels)
        regularizer = getattr(self.head, "regularizer", None)
        if regularizer is not None:
            loss = loss + regularizer(embeddings)
        return loss


@dataclass
class TrainState:
    """Everything that moves during training, besides the modules' own state."""

    step: int = 0
    best: float = -1.0
    best_step: int = -1
    images_per_sec: float = 0.0
    results: dict[str, dict[str, float]] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def target_name(node: DictConfig) -> str:
    """``facerec.heads.arcface.ArcFace`` -> ``arcface``: a short label for a config choice."""
    return str(node.get("_target_", "x")).rsplit(".", 1)[-1].lower()


def train_step(
    module: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype | None,
    grad_clip: float | None = None,
) -> torch.Tensor:
    """One optimizer step on a batch; returns the (detached) loss without a device sync."""
    with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        loss = module(images, labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return loss.detach()


def check_config(cfg: DictConfig, device: torch.device) -> None:
    """Impossible combinations stop here, before anything is built or written."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(
            f"missing required config value(s): {', '.join(missing)}"
            f" (set them on the command line, e.g. {missing[0]}=...)"
        )
    if cfg.trainer.amp not in AMP_DTYPES:
        raise ValueError(f"trainer.amp={cfg.trainer.amp!r}: choose one of {list(AMP_DTYPES)}")
    if cfg.trainer.amp == "fp16" and device.type == "cpu":
        raise ValueError("trainer.amp=fp16 needs a GPU; on the CPU use trainer.amp=bf16 or none")
    if cfg.trainer.max_steps is None and int(cfg.trainer.epochs) < 1:
        raise ValueError("set trainer.epochs >= 1 or trainer.max_steps")


def resolve_run_dir(cfg: DictConfig, env: distributed.Dist) -> tuple[Path, Path | None]:
    """The run directory (same on every rank) and the checkpoint to resume from, if any."""
    name = cfg.name or f"{target_name(cfg.backbone)}-{target_name(cfg.head)}"
    run_root = Path(cfg.paths.output_dir) / name
    resume = cfg.trainer.resume
    if resume == "auto":
        ckpt = checkpoint.latest(run_root)
        if ckpt is None:
            log.info("trainer.resume=auto: no checkpoint under %s, starting a new run", run_root)
    elif resume:
        ckpt = Path(resume)
        if not ckpt.is_file():
            raise FileNotFoundError(f"trainer.resume={resume}: no such checkpoint file")
    else:
        ckpt = None
    if ckpt is not None:
        return ckpt.parent.parent, ckpt
    # One timestamp for all ranks: rank 0's, broadcast (a per-rank ${now:} would give
    # one folder per process).
    stamp = distributed.broadcast(time.strftime("%Y%m%d-%H%M%S"))
    run_dir = run_root / stamp
    suffix = 1
    while env.is_main and run_dir.exists():  # two runs started in the same second
        run_dir = run_root / f"{stamp}-{suffix}"
        suffix += 1
    return Path(distributed.broadcast(str(run_dir))), None


def build(cfg: DictConfig, num_classes: int) -> Recognizer:
    """Backbone -> embedding -> head, each from its own config group."""
    backbone = instantiate(cfg.backbone)
    embedding = instantiate(cfg.embedding, in_shape=backbone.feature_shape)
    head = instantiate(
        cfg.head, embedding_size=int(cfg.embedding.embedding_size), num_classes=num_classes
    )
    return Recognizer(FaceModel(backbone, embedding), head)


def restore(
    ckpt: dict[str, Any],
    path: Path,
    recognizer: Recognizer,
    classes: list[str],
    **stateful: Any,
) -> TrainState:
    """Load a checkpoint into the modules and ``stateful`` objects (optimizer, scheduler ...)."""
    if ckpt.get("classes") != classes:
        saved = len(ckpt.get("classes") or [])
        raise ValueError(
            f"checkpoint {path} was trained on {saved} identities, this data has {len(classes)}"
            " (or they differ): resume with the same data"
        )
    for name, module in (("model", recognizer.model), ("head", recognizer.head)):
        try:
            module.load_state_dict(ckpt[name])
        except RuntimeError as error:
            arch = OmegaConf.select(OmegaConf.create(ckpt.get("config", {})), "backbone._target_")
            raise ValueError(
                f"checkpoint {path} does not fit this {name} (checkpoint backbone: {arch}):"
                f" {str(error).splitlines()[0]}"
            ) from error
    for name, obj in stateful.items():
        obj.load_state_dict(ckpt[name])
    checkpoint.set_rng_state(ckpt["rng"])
    return TrainState(
        step=ckpt["step"], best=ckpt["best"], best_step=ckpt["best_step"], results=ckpt["results"]
    )


def log_verification(writer: SummaryWriter | None, name: str, result: Any, step: int) -> None:
    if writer is None:
        return
    for key, value in result.summary().items():
        writer.add_scalar(f"val/{name}_{key}", value, step)
    writer.add_image(f"val/{name}_roc", roc_image(result.fpr, result.tpr), step, dataformats="HWC")
    if getattr(result, "distances", None) is not None:
        image = distance_histogram_image(result.distances, result.issame)
        writer.add_image(f"val/{name}_distances", image, step, dataformats="HWC")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train as ``cfg`` says; returns what ``metrics.json`` holds."""
    env = distributed.init(cfg.trainer.device)
    try:
        return fit(cfg, env)[0]
    finally:
        distributed.cleanup()


def fit(cfg: DictConfig, env: distributed.Dist) -> tuple[dict[str, Any], Recognizer]:
    """The training run on this process; returns the metrics and the trained modules."""
    check_config(cfg, env.device)
    seed_everything(cfg.seed)
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    tcfg = cfg.trainer
    amp_dtype = AMP_DTYPES[tcfg.amp]
    show = env.is_main and tcfg.progress

    data = instantiate(cfg.data)
    scan = data.setup()
    verifiers = {
        name: Verifier(s, tcfg.eval_batch_size, data.num_workers) for name, s in data.val.items()
    }
    best_metric = tcfg.best_metric or next(iter(verifiers), None)
    if best_metric is not None and best_metric not in verifiers:
        raise ValueError(
            f"trainer.best_metric={best_metric!r} is not in data.val {list(verifiers)}"
        )

    run_dir, resume_path = resolve_run_dir(cfg, env)
    recognizer = build(cfg, len(scan.classes)).to(env.device)
    memory_format = torch.channels_last if tcfg.channels_last else torch.contiguous_format
    recognizer.to(memory_format=memory_format)
    module: nn.Module = recognizer
    if env.enabled:
        module = DistributedDataParallel(
            recognizer, device_ids=None if env.device.type == "cpu" else [env.device]
        )

    loader = data.train_loader(env.rank, env.world_size, cfg.seed, show_progress=show)
    steps_per_epoch = len(loader)
    total_steps = int(tcfg.max_steps or tcfg.epochs * steps_per_epoch)
    optimizer = instantiate(cfg.optim)(param_groups([recognizer], cfg.optim.weight_decay))
    scheduler = instantiate(cfg.sched)(
        optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps
    )
    scaler = torch.amp.GradScaler(env.device.type, enabled=amp_dtype is torch.float16)

    state = TrainState()
    if resume_path is not None:
        state = restore(
            checkpoint.load(resume_path),
            resume_path,
            recognizer,
            scan.classes,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
        )
        log.info("resumed from %s at step %d", resume_path, state.step)

    writer = None
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        # The resolved config of this invocation; a resumed run keeps the original beside it.
        config_name = f"config.resume-{state.step}.yaml" if state.step else "config.yaml"
        (run_dir / config_name).write_text(OmegaConf.to_yaml(cfg, resolve=True))
        file_log = logging.FileHandler(run_dir / "train.log")
        file_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger().addHandler(file_log)
        writer = SummaryWriter(str(run_dir / "tb"), purge_step=state.step or None)
        global_batch = data.batch_size * env.world_size
        log.info(
            "run dir %s | %d identities, %d images | %d steps (%d per epoch),"
            " global batch %d on %d process(es), device %s, amp %s",
            run_dir,
            len(scan.classes),
            len(scan.paths),
            total_steps,
            steps_per_epoch,
            global_batch,
            env.world_size,
            env.device,
            tcfg.amp,
        )

    def save(tag: str) -> None:
        if not env.is_main:
            return
        checkpoint.save(
            {
                "model": recognizer.model.state_dict(),
                "head": recognizer.head.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "step": state.step,
                "epoch": state.step // steps_per_epoch,
                "best": state.best,
                "best_step": state.best_step,
                "results": state.results,
                "rng": checkpoint.rng_state(),
                "classes": scan.classes,
                "config": OmegaConf.to_container(cfg, resolve=True),
            },
            run_dir / "checkpoints" / f"{tag}.pt",
        )

    def evaluate() -> None:
        """Rank 0 verifies on every set; the others wait at the barrier."""
        if env.is_main:
            for name, verifier in verifiers.items():
                result = verifier.evaluate(
                    recognizer.model,
                    env.device,
                    amp_dtype=amp_dtype,
                    channels_last=tcfg.channels_last,
                    show_progress=show,
                )
                state.results[name] = result.summary()
                log_verification(writer, name, result, state.step)
                log.info(
                    "step %d %s: acc %.4f ± %.4f (threshold %.2f)",
                    state.step,
                    name,
                    result.accuracy,
                    result.accuracy_std,
                    result.threshold,
                )
                if name == best_metric and result.accuracy > state.best:
                    state.best, state.best_step = result.accuracy, state.step
                    save("best")
        distributed.barrier()

    bar = tqdm(
        total=total_steps,
        initial=state.step,
        desc="train",
        unit="step",
        disable=not show,
        dynamic_ncols=True,
    )
    recognizer.train()
    timed_images, timed_seconds = 0, 0.0
    while state.step < total_steps:
        epoch, offset = divmod(state.step, steps_per_epoch)
        loader.sampler.set_epoch(epoch, offset * data.batch_size)
        tick = time.perf_counter()
        for images, labels in loader:
            images = normalize(images.to(env.device, non_blocking=True)).contiguous(
                memory_format=memory_format
            )
            labels = labels.to(env.device, non_blocking=True)
            loss = train_step(
                module, images, labels, optimizer, scheduler, scaler, amp_dtype, tcfg.grad_clip
            )
            state.step += 1
            bar.update()
            if state.step % tcfg.log_every == 0 or state.step == total_steps:
                loss_value = loss.item()  # the only device sync of a step
                now = time.perf_counter()
                timed_seconds += now - tick
                timed_images += tcfg.log_every * data.batch_size * env.world_size
                state.images_per_sec = timed_images / timed_seconds
                tick = now
                lr = optimizer.param_groups[0]["lr"]
                if env.is_main and not show:  # no bar (e.g. a batch job's log): one line
                    log.info(
                        "step %d/%d loss %.4f lr %.3e %.1f img/s",
                        state.step,
                        total_steps,
                        loss_value,
                        lr,
                        state.images_per_sec,
                    )
                bar.set_postfix(
                    loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", img_s=f"{state.images_per_sec:.1f}"
                )
                if writer is not None:
                    writer.add_scalar("train/loss", loss_value, state.step)
                    writer.add_scalar("train/lr", lr, state.step)
                    writer.add_scalar("train/images_per_sec", state.images_per_sec, state.step)
                    if hasattr(recognizer.head, "s"):
                        writer.add_scalar("train/head_s", float(recognizer.head.s), state.step)
            done = state.step >= total_steps
            if done or (tcfg.eval_every and state.step % tcfg.eval_every == 0):
                evaluate()
                save("last")
                tick = time.perf_counter()  # evaluation time is not training throughput
            elif state.step % tcfg.checkpoint_every == 0:
                save("last")
            if done:
                break
    bar.close()
    distributed.broadcast_buffers(recognizer)

    metrics = {
        "step": state.step,
        "epoch": state.step / steps_per_epoch,
        "images_per_sec": state.images_per_sec,
        "best": {"set": best_metric, "accuracy": state.best, "step": state.best_step},
        "val": state.results,
    }
    if best_metric in state.results:
        metrics.update(
            {k: state.results[best_metric][k] for k in ("accuracy", "accuracy_std", "threshold")}
        )
    if env.is_main:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        writer.close()
        logging.getLogger().removeHandler(file_log)
        file_log.close()
        log.info("metrics: %s", run_dir / "metrics.json")
    metrics["run_dir"] = str(run_dir)
    return metrics, recognizer
