"""Fine-tuning a trained model on new identities: its weights, per-part learning rates, and a
backbone frozen for the first steps.

``trainer.init_from=PATH`` is not ``resume``: resume continues *the same run* (same classes,
optimizer, step); ``init_from`` starts a *new* run whose backbone and embedding begin as the
trained model's, with a new criterion (a new head for new classes, or no head at all for a
triplet loss), a fresh optimizer and schedule. A run that was started from a model and then
preempted resumes from its own checkpoint; ``init_from`` is then ignored (and logged).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facerec.files import checkpoint
from facerec.inference import folder as pretrained

__all__ = ["BackboneFreeze", "init_from", "lr_scaled_groups"]

log = logging.getLogger("facerec")

# The parts of a recognizer whose learning rate can be scaled (trainer.lr_scale.<part>).
PARTS = ("backbone", "embedding", "criterion")


def _read_weights(path: Path) -> tuple[Mapping[str, torch.Tensor], str]:
    """The face model's state dict in ``path`` and a description of where it came from.

    ``path`` is a facerec checkpoint (read as plain data, never unpickled code) or a model
    folder written by ``facerec export`` (safetensors + JSON, :mod:`facerec.inference.folder`).

    Raises:
        FileNotFoundError, ValueError: one line naming ``trainer.init_from`` and the file.
    """
    key = f"trainer.init_from={path}"
    try:
        if path.is_dir():
            config, weights = pretrained.read_pretrained(path)
            described = f"{path} (exported model, backbone {_backbone(config)})"
        else:
            ckpt = checkpoint.load(path, required=("model",))
            weights, result = ckpt["model"], _get(ckpt, "state", "best")
            backbone = _backbone(ckpt.get("config"))
            described = f"{path} (step {ckpt.get('step')}, backbone {backbone}" + (
                f", best verification {result:.4f})" if isinstance(result, float) else ")"
            )
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{key}: {error}") from None
    except ValueError as error:  # the reader's own line, naming the file and why
        raise ValueError(f"{key}: {error}") from None
    except (TypeError, AttributeError, KeyError) as error:  # a reader met an odd layout
        raise ValueError(f"{key}: not a readable facerec model ({error!r})") from None
    if not isinstance(weights, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise ValueError(f"{key}: its 'model' entry is not a state dict of named tensors")
    return weights, described


def _get(node: Any, *keys: str) -> Any:
    """``node[k1][k2]...`` through dicts only; None where a level is missing or not a dict."""
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node


def _backbone(config: Any) -> str:
    """The backbone a saved config names (as text, whatever the file holds)."""
    target = _get(config, "backbone", "_target_")
    return str(target)[:200] if target is not None else "an unknown backbone"


def init_from(path: str | Path, model: nn.Module) -> str:
    """Load the backbone + embedding weights of checkpoint or exported folder ``path`` into
    ``model`` (a :class:`facerec.model.FaceModel`); the head, optimizer and step are not read.

    Returns:
        A line describing what was loaded (the log line of the run).

    Raises:
        FileNotFoundError, ValueError: one line naming the file and, for another architecture,
            the first layer that does not fit.
    """
    path = Path(path)
    weights, described = _read_weights(path)
    mine = model.state_dict()
    missing = [key for key in mine if key not in weights]
    extra = [key for key in weights if key not in mine]
    wrong = [key for key in mine if key in weights and weights[key].shape != mine[key].shape]
    if missing or extra or wrong:
        if wrong:
            key = wrong[0]
            what = (
                f"layer {key} is {tuple(weights[key].shape)} there, {tuple(mine[key].shape)} here"
            )
        else:
            what = (f"layer {missing[0]} is missing there" if missing
                    else f"layer {extra[0]} is not in this model")  # fmt: skip
        raise ValueError(
            f"trainer.init_from={described} does not fit this backbone/embedding:"
            f" {what} ({len(missing)} missing, {len(extra)} unexpected, {len(wrong)} of another"
            " shape): choose the backbone and embedding it was trained with"
        )
    model.load_state_dict(weights)  # keys and shapes checked above: it fits
    return f"initialised backbone + embedding from {described}"


def lr_scaled_groups(
    parts: Mapping[str, nn.Module], scales: Mapping[str, float], lr: float, weight_decay: float,
    groups: Callable[[Iterable[nn.Module], float], list[dict[str, Any]]],
) -> list[dict[str, Any]]:  # fmt: skip
    """The optimizer's parameter groups with a learning-rate multiplier per part.

    Parts with the same multiplier share groups (so with every multiplier 1 the groups are
    exactly ``groups(all parts)``), the largest multiplier first (the group whose ``lr`` the
    trainer logs); each group's ``lr`` is ``lr x lr_scale`` (the schedule then scales every
    group alike) and it keeps its ``lr_scale``.

    Args:
        parts: ``{"backbone": ..., "embedding": ..., "criterion": ...}``.
        scales: multiplier per part name (missing: 1); each >= 0.
        lr: the run's learning rate.
        weight_decay: passed to ``groups``.
        groups: :func:`facerec.optim.param_groups`.
    """
    unknown = sorted(set(scales) - set(parts))
    if unknown:
        raise ValueError(f"trainer.lr_scale.{unknown[0]}: not one of {sorted(parts)}")
    by_scale: dict[float, list[nn.Module]] = {}
    for name, module in parts.items():
        scale = scales.get(name, 1.0)
        if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale >= 0):
            raise ValueError(f"trainer.lr_scale.{name}={scale!r} must be a number >= 0")
        by_scale.setdefault(float(scale), []).append(module)
    out = []
    for scale, modules in sorted(by_scale.items(), key=lambda item: -item[0]):
        for group in groups(modules, weight_decay):
            out.append({**group, "lr": lr * scale, "lr_scale": scale})
    return out


class BackboneFreeze:
    """The module each training step runs through, with the backbone frozen for the first
    ``steps`` steps: no gradient is computed for it (its backward is skipped, its momentum
    untouched) and its BatchNorm layers keep their statistics (eval mode), while the embedding
    and the new head learn. Then it trains like the rest.

    Args:
        backbone: the recognizer's backbone (eager module, shared with the step module).
        steps: optimizer steps to keep it frozen (0: never).
        build: makes the step module (compiled / DDP wrapper) for the current
            ``requires_grad`` flags; called again when the backbone thaws, because DDP only
            synchronises the parameters that required a gradient when it was built.
    """

    def __init__(self, backbone: nn.Module, steps: int, build: Callable[[], nn.Module]) -> None:
        self.backbone = backbone
        self.steps = int(steps)
        self.build = build
        self._frozen: bool | None = None
        self._module: nn.Module | None = None

    def module(self, step: int) -> nn.Module:
        """The step module for optimizer step ``step + 1`` (``step`` done so far)."""
        frozen = step < self.steps
        if frozen is not self._frozen:
            self.backbone.requires_grad_(not frozen)
            self._module, self._frozen = self.build(), frozen
            if frozen:
                log.info("backbone frozen (weights and BatchNorm statistics) until step %d",
                         self.steps)  # fmt: skip
            elif self.steps and step:
                log.info("step %d: backbone unfrozen", step)
        if frozen:
            self.backbone.eval()  # again each step: verification puts the model in train mode
        return self._module
