"""Parameter groups and LR schedules, checked against hand-computed values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facerec.optim import WarmupMultiStep, WarmupPoly, param_groups


def lrs(scheduler, optimizer, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def sgd(lr: float = 0.1) -> torch.optim.SGD:
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def test_no_weight_decay_on_batchnorm_prelu_and_biases():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.PReLU(4), nn.Linear(4, 2))
    decay, no_decay = param_groups([model], weight_decay=5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    expected = {id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[2].weight),
                id(model[3].bias)}  # fmt: skip
    assert {id(p) for p in no_decay["params"]} == expected


def test_multistep_in_epochs_with_linear_warmup():
    optimizer = sgd()
    scheduler = WarmupMultiStep(
        optimizer, steps_per_epoch=4, total_steps=20, milestones=[2, 4], warmup=1, unit="epoch"
    )
    got = lrs(scheduler, optimizer, 20)
    expected = [0.1 * (s + 1) / 4 for s in range(4)] + [0.1] * 4 + [0.01] * 8 + [0.001] * 4
    assert got == pytest.approx(expected)


def test_multistep_in_steps():
    optimizer = sgd()
    scheduler = WarmupMultiStep(
        optimizer, steps_per_epoch=100, total_steps=10, milestones=[3, 7], unit="step"
    )
    assert lrs(scheduler, optimizer, 10) == pytest.approx([0.1] * 3 + [0.01] * 4 + [0.001] * 3)


def test_poly_decays_to_zero():
    optimizer = sgd()
    scheduler = WarmupPoly(optimizer, steps_per_epoch=5, total_steps=10, power=2.0, unit="step")
    assert lrs(scheduler, optimizer, 10) == pytest.approx(
        [0.1 * (1 - s / 10) ** 2 for s in range(10)]
    )


def test_bad_unit_is_named():
    with pytest.raises(ValueError, match=r"sched\.unit"):
        WarmupMultiStep(sgd(), steps_per_epoch=1, total_steps=1, unit="epochs")


def test_scheduler_state_holds_the_step_not_the_length():
    """A run resumed with more steps follows the new length; only the step is restored."""
    optimizer = sgd()
    short = WarmupPoly(optimizer, steps_per_epoch=1, total_steps=10, unit="step")
    lrs(short, optimizer, 5)
    optimizer2 = sgd()
    longer = WarmupPoly(optimizer2, steps_per_epoch=1, total_steps=20, unit="step")
    longer.load_state_dict(short.state_dict())
    assert longer.last_epoch == 5
    assert longer.get_last_lr()[0] == pytest.approx(0.1 * (1 - 5 / 10) ** 2)  # restored value
    optimizer2.step()
    longer.step()
    assert optimizer2.param_groups[0]["lr"] == pytest.approx(0.1 * (1 - 6 / 20) ** 2)
