"""Numeric start-up checks of a training config: finite numbers, lower bounds, the allowed
:data:`RANGES` and a head's declared bounds; each failure is one line naming the key."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from facerec.messages import first_line

__all__ = ["RANGES", "Range", "check_finite", "check_head", "check_head_keys", "check_numbers",
           "check_ranges", "is_number"]  # fmt: skip

# Lower bounds (inclusive) of numbers typed in validate.CONFIG_TYPES; null passes where the
# type allows it.
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
    "trainer.ema.every": 1,
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
    "trainer.ema.decay": Range(0, 1, high_open=True),  # 1 never leaves the initial weights
    "trainer.ema.warmup_power": Range(0, low_open=True),  # 0: a decay of 0, no averaging
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


def check_head_keys(head: DictConfig, cls: type | None) -> None:
    """Every key of ``head`` is an argument of its class: a scale given to a head that has none
    stops here in one line, not in a traceback when the head is built after the data loaded."""
    try:
        parameters = inspect.signature(cls).parameters.values() if cls is not None else None
    except (TypeError, ValueError):  # a class whose signature cannot be read: not checked here
        parameters = None
    if parameters is None or any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    keywords = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    given = {k for k in head if not (isinstance(k, str) and k.startswith("_"))}
    for key in sorted(given - keywords):
        takes = sorted(keywords - {"self", "embedding_size", "num_classes"})
        # experiment=demo sets head.s for every head; the heads without a scale need it removed
        # (in a sweep, their own sweep: ~head.s would take the scale from the others too).
        hint = ("; remove it with ~head.s (in a sweep: the heads without a scale in a sweep of"
                " their own, docs/studies.md)") if key == "s" else ""  # fmt: skip
        raise ValueError(f"head.{key}: {cls.__name__} takes no {key} (it takes: "
                         f"{', '.join(takes) or 'nothing'}){hint}")  # fmt: skip


def check_head(head: DictConfig) -> None:
    """The head's hyper-parameters inside the ranges its class declares (``bounds``), e.g.
    ``head.m=-1`` for ArcFace: one line naming the key, instead of training to nonsense."""
    target = head.get("_target_")
    try:
        cls = get_class(target) if isinstance(target, str) else None
    except (ImportError, ValueError) as error:  # a user's --config-dir head that does not import
        raise ValueError(f"head._target_={target}: {first_line(error)}") from None
    check_head_keys(head, cls)
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
