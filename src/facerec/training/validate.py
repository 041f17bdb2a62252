"""Start-up checks of a composed training config: wrong types and impossible combinations stop
the run before anything is built or written, with one line naming the key; set-ups that train
but cannot learn (one identity) stop with a message, and questionable ones are warned about."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from facerec.messages import first_line
from facerec.training.ranges import (
    RANGES,
    check_finite,
    check_head,
    check_numbers,
    check_ranges,
    is_number,
)
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
    "trainer.ema.enabled": (bool,),
    "trainer.ema.decay": NUMBERS,
    "trainer.ema.warmup": (bool,),
    "trainer.ema.warmup_power": NUMBERS,
    "trainer.ema.every": (int,),
    "data.image_size": (int,),
    "data.center_crop": (int, type(None)),
}
# Keys a data module may not have (a pack knows its own crop): checked where present.
OPTIONAL = ("data.image_size", "data.center_crop")
_ABSENT = object()


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


def check_criterion(cfg: DictConfig) -> None:
    """A criterion factory with a ``check`` attribute (``criterion=distill``: its teacher) is
    checked here, before the data is read: ``check(resolved criterion section, embedding
    size)`` raises its own one-line error."""
    target = OmegaConf.select(cfg, "criterion._target_")
    try:
        factory = get_method(target) if isinstance(target, str) else None
    except (ImportError, ValueError) as error:
        raise ValueError(f"criterion._target_={target}: {first_line(error)}") from None
    check = getattr(factory, "check", None)
    if check is not None:
        section = OmegaConf.to_container(cfg.criterion, resolve=True)
        check(section, int(cfg.embedding.embedding_size))


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
            return first_line(error)
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
