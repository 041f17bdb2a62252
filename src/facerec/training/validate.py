"""Start-up checks of a composed training config: wrong types and impossible combinations stop
the run before anything is built or written, with one line naming the key."""

from __future__ import annotations

import math

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from facerec.training.speed import AMP_CHOICES

__all__ = ["CONFIG_TYPES", "check_config", "check_numbers"]

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
}


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
}
# Must be finite and > 0 where set (a NaN learning rate trains to NaN weights and exits 0).
POSITIVE = ("optim.lr", "trainer.grad_clip", "head.s")


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
        value = OmegaConf.select(cfg, key)
        # bool is an int subclass: `trainer.epochs=true` must not pass as 1.
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ValueError(f"{key}={value!r} must be {names}")
    check_numbers(cfg)
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
