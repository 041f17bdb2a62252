"""Start-up checks of a composed training config: wrong types and impossible combinations stop
the run before anything is built or written, with one line naming the key; set-ups that train
but cannot learn (one identity) stop with a message, and questionable ones are warned about."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from facerec.training.speed import AMP_CHOICES

__all__ = [
    "CONFIG_TYPES",
    "RANGES",
    "check_config",
    "check_finite",
    "check_identities",
    "check_input_size",
    "check_numbers",
    "startup_warnings",
]

log = logging.getLogger("facerec")

# Values the loop does arithmetic with: a wrong type stops the run at start-up, naming the key.
NUMBERS = (int, float)
CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "seed": (int,),
    "optim.lr": NUMBERS,
    "data.batch_size": (int,),
    "data.num_workers": (int,),
    "trainer.epochs": (int,),
    "trainer.max_steps": (int, type(None)),
    "trainer.max_images": (int, type(None)),
    "trainer.log_every": (int,),
    "trainer.eval_every": (int,),
    "trainer.checkpoint_every": (int,),
    "trainer.accumulate": (int,),
    "trainer.keep_checkpoints": (int,),
    "trainer.max_nonfinite_steps": (int,),
    "trainer.grad_clip": (*NUMBERS, type(None)),
    "trainer.lr_reference_batch": (int, type(None)),
    "trainer.compile": (bool, str),
    "trainer.malloc": (bool, str),
    "trainer.tf32": (bool,),
    "trainer.channels_last": (bool,),
    "trainer.init_from": (str, type(None)),
    "trainer.freeze_backbone_steps": (int,),
    "trainer.eval_batch_size": (int,),
    "trainer.preempt_exit_code": (int,),
    "data.image_size": (int,),
    "data.center_crop": (int, type(None)),
}
# Keys a data module may not have (a pack knows its own crop): checked where present.
OPTIONAL = ("data.image_size", "data.center_crop")
_ABSENT = object()


# Lower bounds (inclusive) of the numbers above; null passes where the type allows it.
MINIMUMS: dict[str, int] = {
    "data.batch_size": 1,
    "data.num_workers": 0,
    "trainer.max_steps": 1,
    "trainer.max_images": 1,
    "trainer.log_every": 1,
    "trainer.eval_every": 0,  # 0: verify at the end only
    "trainer.checkpoint_every": 1,
    "trainer.accumulate": 1,
    "trainer.keep_checkpoints": 1,
    "trainer.max_nonfinite_steps": 1,
    "trainer.lr_reference_batch": 1,
    "trainer.freeze_backbone_steps": 0,
    "trainer.eval_batch_size": 1,
}
# Must be finite and > 0 where set (a NaN learning rate trains to NaN weights and exits 0).
POSITIVE = ("optim.lr", "trainer.grad_clip", "head.s")


@dataclass(frozen=True)
class Range:
    """An interval of allowed values; ``low_open``/``high_open`` exclude the ends."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return (f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")  # fmt: skip


# The image sides facerec trains at: face models take 112 (some 96 to 384); a side of 1e5 would
# allocate 30 GB per image before failing.
IMAGE_SIZES = Range(16, 1024)
# A centre crop is taken from the stored images (padded when they are smaller).
CENTER_CROPS = Range(1, 4096)

# Ranges of numbers where set (a list: each element). A value outside stops the run at start-up.
RANGES: dict[str, Range] = {
    "optim.momentum": Range(0, 1, high_open=True),  # 1 never forgets a gradient
    "optim.dampening": Range(0, 1),
    "optim.weight_decay": Range(0),
    "optim.betas": Range(0, 1, high_open=True),
    "optim.eps": Range(0, low_open=True),
    "sched.gamma": Range(0, low_open=True),  # the factor at each milestone
    "sched.power": Range(0),  # a negative power divides by zero at the last step
    "sched.warmup": Range(0),
    "sched.milestones": Range(0),
    "embedding.dropout": Range(0, 1, high_open=True),
    "data.image_size": IMAGE_SIZES,
    "data.center_crop": CENTER_CROPS,
    "trainer.preempt_exit_code": Range(0, 255),
}


def numbers(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """``("sched.milestones[1]", 18), ...``: every leaf of a plain container, with its key."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from numbers(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from numbers(value, f"{prefix}[{i}]")
    else:
        yield prefix, node


def check_finite(cfg: DictConfig) -> None:
    """Every number of the config finite: a NaN ``sched.gamma``, ``optim.momentum`` or
    ``optim.weight_decay`` (or an infinite anything) would train to NaN weights and exit 0.

    Raises:
        ValueError: naming the first key with a NaN or infinite value.
    """
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        raise ValueError(f"config: {(str(error).splitlines() or ['unresolvable'])[0]}") from None
    for key, value in numbers(plain, ""):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{key}={value} must be a finite number")


def check_ranges(cfg: DictConfig, ranges: dict[str, Range] = RANGES) -> None:
    """The values of :data:`RANGES` (and each verification set's image size and crop).

    Raises:
        ValueError: naming the key and its range.
    """
    checks = dict(ranges)
    for name in (OmegaConf.select(cfg, "data.val") or {}) if "data" in cfg else ():
        checks[f"data.val.{name}.image_size"] = IMAGE_SIZES
        checks[f"data.val.{name}.center_crop"] = CENTER_CROPS
    for key, allowed in checks.items():
        value = OmegaConf.select(cfg, key)
        values = (
            list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
        )
        for item in values:
            if item is None:
                continue
            if not is_number(item):
                raise ValueError(f"{key}={value!r} must be a number {allowed}")
            if item not in allowed:
                raise ValueError(f"{key}={value} must be {allowed}")


def is_number(value: object) -> bool:
    """An int or float, and not a bool (``head.s=true`` must not pass as 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_numbers(cfg: DictConfig) -> None:
    """Impossible values: one line naming the key, before anything is built.

    A head's own ranges (its margin) are checked by :func:`check_head`.
    """
    for key, low in MINIMUMS.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and value < low:
            raise ValueError(f"{key}={value} must be >= {low}")
    for key in POSITIVE:
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        if not is_number(value):
            raise ValueError(f"{key}={value!r} must be a number")
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{key}={value} must be a finite number > 0")


def check_head(head: DictConfig) -> None:
    """The head's hyper-parameters inside the ranges its class declares (``bounds``), e.g.
    ``head.m=-1`` for ArcFace: one line naming the key, instead of training to nonsense."""
    target = head.get("_target_")
    cls = get_class(target) if isinstance(target, str) else None
    for key, (low, high) in getattr(cls, "bounds", {}).items():
        value = head.get(key)
        if value is None:
            continue
        if not is_number(value):
            raise ValueError(f"head.{key}={value!r} must be a number")
        if not low <= value <= high:
            raise ValueError(
                f"head.{key}={value}: {cls.__name__}'s {key} must be in [{low:g}, {high:g}]"
            )


def check_config(cfg: DictConfig, device: torch.device) -> None:
    """Impossible combinations stop here, before anything is built or written."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(
            f"missing required config value(s): {', '.join(missing)}"
            f" (set them on the command line, e.g. {missing[0]}=...)"
        )
    for key, types in CONFIG_TYPES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT and key in OPTIONAL:
            continue
        value = None if value is _ABSENT else value
        # bool is an int subclass: `trainer.epochs=true` must not pass as 1.
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ValueError(f"{key}={value!r} must be {names}")
    check_finite(cfg)
    check_numbers(cfg)
    check_ranges(cfg)
    check_head(cfg.head)
    tcfg = cfg.trainer
    if tcfg.amp not in AMP_CHOICES:
        raise ValueError(f"trainer.amp={tcfg.amp!r}: choose one of {list(AMP_CHOICES)}")
    if tcfg.compile not in (True, False, "auto"):
        raise ValueError(f"trainer.compile={tcfg.compile!r}: choose true, false or auto")
    if tcfg.amp == "fp16" and device.type == "cpu":
        raise ValueError("trainer.amp=fp16 needs a GPU; on the CPU use trainer.amp=bf16 or none")
    if tcfg.get("max_images") is not None and tcfg.max_steps is not None:
        raise ValueError(
            f"trainer.max_images={tcfg.max_images} and trainer.max_steps={tcfg.max_steps}:"
            " set one length, not both (max_images=null or max_steps=null)"
        )
    if tcfg.max_steps is None and tcfg.get("max_images") is None and int(tcfg.epochs) < 1:
        raise ValueError("set trainer.epochs >= 1, trainer.max_steps or trainer.max_images")
    if tcfg.sync_bn and device.type == "cpu":
        raise ValueError("trainer.sync_bn=true needs GPUs: PyTorch's SyncBatchNorm has no CPU path")


def check_input_size(cfg: DictConfig) -> None:
    """The backbone takes ``data.image_size`` images: a shape-only forward pass of the model
    built on the ``meta`` device (no memory, no arithmetic; a fraction of a second).

    IResNets and MobileFaceNet are sized for 112x112 (their last layers expect a 7x7 map);
    another size would fail at step 1, after the run folder exists.

    Raises:
        ValueError: naming ``data.image_size``, the backbone and the size it takes.
    """
    from facerec.model import build_face_model  # the backbones import timm: not for --help

    size = OmegaConf.select(cfg, "data.image_size")
    if not is_number(size):
        return

    def fails(side: int) -> str | None:
        with torch.device("meta"):
            model = build_face_model(cfg).eval()
        try:
            with torch.no_grad():
                model(torch.empty(2, 3, side, side, device="meta"))
        except RuntimeError as error:  # a shape that does not fit
            return str(error).strip().splitlines()[0]
        return None

    try:
        error = fails(int(size))
        if error is None or fails(112) is not None:
            return  # it fits, or the probe cannot tell (a layer without a meta kernel)
    except Exception:  # a backbone that cannot be built on meta: not checked here
        return
    backbone = target_label(cfg.backbone)
    raise ValueError(
        f"data.image_size={size}: backbone {backbone} does not take {size}x{size} images"
        f" ({error}); it is built for 112x112 (data.image_size=112)"
    )


def target_label(node: DictConfig) -> str:
    """``facerec.backbones.iresnet.iresnet50`` -> ``iresnet50``."""
    return str(node.get("_target_", "?")).rsplit(".", 1)[-1]


def check_identities(classes: Sequence[str], source: object) -> None:
    """A training set of one identity trains with a loss of 0 from step 1 and learns nothing.

    Raises:
        ValueError: naming the data and the one identity.
    """
    if len(classes) < 2:
        only = f" ({classes[0]})" if classes else ""
        raise ValueError(
            f"{source}: {len(classes)} identit{'y' if len(classes) == 1 else 'ies'}{only}:"
            " a face model learns to tell people apart and needs 2 or more (with one, every"
            " loss is 0 from step 1); check data.root, data.people_file and data.min_images"
        )


def startup_warnings(cfg: DictConfig, resuming: bool = False) -> list[str]:
    """Set-ups that train but are probably not what was meant, one line each:

    * ``criterion=triplet`` from random weights (no ``trainer.init_from``, not resuming).
      Warned, not refused: FaceNet trained with triplets from scratch, so it is a legitimate
      experiment; but facerec's triplet loss is meant for fine-tuning (docs/finetune.md): from
      random weights it learns far slower than a margin head and can collapse.
    * ``criterion=triplet`` with ``sampler=uniform``: a shuffled batch rarely holds two images of
      one identity, so most batches mine no triplet.
    """
    target = str(OmegaConf.select(cfg, "criterion._target_") or "")
    if "TripletLoss" not in target.split("."):
        return []
    warnings = []
    if not cfg.trainer.get("init_from") and not resuming:
        warnings.append(
            "warning: criterion=triplet without trainer.init_from: a triplet loss from random"
            " weights learns far slower than a margin head and can collapse (every embedding"
            " alike); it is meant for fine-tuning a trained model (trainer.init_from=<checkpoint"
            " or model folder>, docs/finetune.md); from scratch use criterion=margin_triplet"
        )
    sampler = str(OmegaConf.select(cfg, "sampler._target_") or "")
    if "IdentitySampler" not in sampler.split("."):
        warnings.append(
            "warning: criterion=triplet without sampler=identity: a shuffled batch rarely holds"
            " two images of one identity, so most batches mine no triplet; add sampler=identity"
        )
    return warnings
