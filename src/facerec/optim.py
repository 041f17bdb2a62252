"""Optimizer parameter groups and learning-rate schedules (warmup + step or polynomial decay)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def param_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict]:
    """Split parameters into a decayed group and one without weight decay.

    BatchNorm and PReLU weights and all biases are 1-D: decaying them only pulls the
    normalisation scales towards zero, so (as in the ArcFace/CosFace recipes) they get none.
    """
    decay, no_decay = [], []
    for module in modules:
        for param in module.parameters():
            if param.requires_grad:
                (no_decay if param.ndim <= 1 else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class _Schedule:
    """LR multiplier as a function of the optimizer step, with a linear warmup.

    ``unit`` says whether ``warmup`` (and the subclass's milestones) count epochs or
    steps; epochs are converted with ``steps_per_epoch``.
    """

    def __init__(self, steps_per_epoch: int, total_steps: int, warmup: float, unit: str) -> None:
        if unit not in ("epoch", "step"):
            raise ValueError(f"sched.unit must be 'epoch' or 'step', got {unit!r}")
        self.per_unit = steps_per_epoch if unit == "epoch" else 1
        self.total_steps = total_steps
        self.warmup_steps = round(warmup * self.per_unit)

    def decay(self, step: int) -> float:
        raise NotImplementedError

    def __call__(self, step: int) -> float:
        factor = self.decay(step)
        if step < self.warmup_steps:
            factor *= (step + 1) / self.warmup_steps
        return factor


class _MultiStep(_Schedule):
    def __init__(self, milestones: Sequence[float], gamma: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.milestones = sorted(round(m * self.per_unit) for m in milestones)
        self.gamma = gamma

    def decay(self, step: int) -> float:
        return self.gamma ** sum(step >= m for m in self.milestones)


class _Poly(_Schedule):
    def __init__(self, power: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.power = power

    def decay(self, step: int) -> float:
        return max(0.0, 1.0 - step / max(1, self.total_steps)) ** self.power


def _lambda_lr(optimizer: torch.optim.Optimizer, schedule: _Schedule) -> LambdaLR:
    # A plain function, not the schedule object: LambdaLR would save the object's fields in
    # its state_dict and a resumed run would keep the old length. The schedule comes from the
    # config; the checkpoint only holds the step, so a run can be resumed with more steps.
    return LambdaLR(optimizer, lambda step: schedule(step))


def WarmupMultiStep(
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    total_steps: int,
    milestones: Sequence[float] = (10, 18, 22),
    gamma: float = 0.1,
    warmup: float = 0,
    unit: str = "epoch",
) -> LambdaLR:
    """Multiply the LR by ``gamma`` at each milestone (in ``unit``s), after linear warmup."""
    schedule = _MultiStep(
        milestones,
        gamma,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        warmup=warmup,
        unit=unit,
    )
    return _lambda_lr(optimizer, schedule)


def WarmupPoly(
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    total_steps: int,
    power: float = 2.0,
    warmup: float = 0,
    unit: str = "epoch",
) -> LambdaLR:
    """Decay the LR as ``(1 - step/total)^power`` to zero, after linear warmup."""
    schedule = _Poly(
        power, steps_per_epoch=steps_per_epoch, total_steps=total_steps, warmup=warmup, unit=unit
    )
    return _lambda_lr(optimizer, schedule)
