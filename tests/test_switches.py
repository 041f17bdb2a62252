"""Speed switches change speed, not results: each gives the plain path's loss and gradients."""

from __future__ import annotations

import copy

import pytest
import torch

from facerec.model import Recognizer
from facerec.model import build_recognizer as build
from facerec.training.speed import compile_backbone, resolve_amp, resolve_compile


@pytest.fixture
def base(compose_train):
    """MobileFaceNet + ArcFace for 10 classes, initialised from seed 0, in training mode."""
    cfg = compose_train("backbone=mobilefacenet", "head=arcface")
    torch.manual_seed(0)
    return build(cfg, num_classes=10).train()


def loss_and_grads(model, images, labels, channels_last=False, amp=None):
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
        loss = model(images, labels)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    ("switch", "kwargs", "rtol"),
    [
        ("channels_last", {"channels_last": True}, 1e-10),  # same math, another memory order
        ("bf16 autocast", {"amp": torch.bfloat16}, 5e-2),  # 8-bit mantissa: a loose match
    ],
)
def test_switch_gives_the_plain_loss(switch, kwargs, rtol, base):
    torch.manual_seed(1)
    images, labels = torch.randn(8, 3, 112, 112), torch.randint(0, 10, (8,))
    if switch == "channels_last":
        # float64: the memory order must not change the math, only the summation order, whose
        # rounding float32 amplifies through BatchNorm at batch 8 (1e-3 of the gradient).
        base, images = base.double(), images.double()
    plain_loss, plain_grads = loss_and_grads(copy.deepcopy(base), images, labels)
    loss, grads = loss_and_grads(copy.deepcopy(base), images, labels, **kwargs)
    torch.testing.assert_close(loss, plain_loss, rtol=rtol, atol=0)
    if switch == "channels_last":
        # The whole gradient, not entries that should be 0 (BatchNorm biases followed by
        # BatchNorm get pure rounding noise).
        flat = torch.cat([g.flatten() for g in plain_grads.values()])
        other = torch.cat([grads[name].flatten() for name in plain_grads])
        assert (other - flat).norm() / flat.norm() < 1e-9


@pytest.mark.slow  # compiling takes over a minute on a 2-core CPU
def test_compile_gives_the_plain_loss_and_gradients(base):
    # float64: fused kernels reorder sums and compute BatchNorm statistics their own way
    # (4e-8 of the gradient here); a wrong kernel would be off by far more than 1e-6.
    base = base.double()
    torch.manual_seed(1)
    images, labels = torch.randn(8, 3, 112, 112).double(), torch.randint(0, 10, (8,))
    plain_loss, plain_grads = loss_and_grads(copy.deepcopy(base), images, labels)
    model = copy.deepcopy(base)
    # What trainer.compile steps through; the gradients land in `model`'s parameters.
    loss = Recognizer(compile_backbone(model.model), model.criterion)(images, labels)
    loss.backward()
    torch.testing.assert_close(loss.detach(), plain_loss, rtol=1e-10, atol=0)
    flat = torch.cat([g.flatten() for g in plain_grads.values()])
    other = torch.cat([p.grad.flatten() for _, p in model.named_parameters()])
    assert (other - flat).norm() / flat.norm() < 1e-6


def test_auto_switches_on_the_cpu_keep_fp32_and_eager():
    # bf16 autocast was 4-5x slower than fp32 on this CPU; compilation never pays in a CPU run.
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == "none"
    assert resolve_compile("auto", cpu) is False
    assert resolve_amp("bf16", cpu) == "bf16" and resolve_compile(True, cpu) is True
