"""CurricularFace: ArcFace target, curriculum on hard negatives (Huang et al., arXiv 2004.00288)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from facerec.heads.arcface import ArcFace
from facerec.heads.functional import cos_plus_angle

__all__ = ["CurricularFace"]


class _HardNegatives(torch.autograd.Function):
    """``where(cos > threshold, cos · (t + cos), cos)``, differentiated w.r.t. ``cos`` only.

    The same values and gradient as the ``torch.where`` expression, but the backward is one
    fused ``grad · (t + 2cos or 1)`` instead of autograd's separate ``where``/``mul``/``add``
    backwards over the ``(B, C)`` matrix, which made the head 1.3x a plain linear layer on CPU.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, cos: Tensor, threshold: Tensor, t: Tensor
    ) -> Tensor:
        ctx.save_for_backward(cos, threshold, t)
        return torch.where(cos > threshold, cos * (t + cos), cos)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor, None, None]:
        cos, threshold, t = ctx.saved_tensors
        # d/dc [c · (t + c)] = t + 2c on the hard negatives, 1 elsewhere. No gradient for the
        # threshold (the switch is piecewise constant) nor for t (a buffer, by design).
        slope = torch.where(cos > threshold, torch.add(t, cos, alpha=2.0), 1.0)
        return grad * slope, None, None


class CurricularFace(ArcFace):
    """Target logit ``s · cos(θ_y + m)``, hard negatives ``s · cos θ_j · (t + cos θ_j)``.

    * Target: ArcFace's ``cos(θ_y + m)`` with the ``th_mm`` fallback of the paper's code
      (``cos θ_y - m · sin m`` where ``θ_y > π - m``).
    * A negative class ``j`` is *hard* when ``cos θ_j > cos(θ_y + m)``, the plain angle-sum
      value without the fallback, exactly as the paper (``T(cos θ_y)``) and its code define it;
      its logit becomes ``s · cos θ_j · (t + cos θ_j)``. Early in training ``t ≈ 0`` shrinks
      the hard negatives (an easy curriculum); as ``t`` grows towards 1 they are amplified.
      Other negatives keep ``s · cos θ_j``. The hard/easy split is piecewise constant: no
      gradient flows through it.
    * ``t`` is the buffer ``t`` (in ``state_dict``, 0 at construction), an exponential moving
      average of the batch mean of the clamped target cosines,
      ``t ← momentum · mean(cos θ_y) + (1 - momentum) · t``. It is updated once per forward in
      ``train()`` mode only, *before* that forward's logits (as the paper's code), never
      differentiated through, and in ``eval()`` mode the last value is used. Under DDP each rank
      averages its own batch.

    With ``m = 0`` the target is the plain ``cos θ_y`` but this is *not* NormFace: negatives
    with ``cos θ_j > cos θ_y`` are still reweighted by ``t + cos θ_j``.

    Args:
        embedding_size: Dimension ``D`` of the embeddings.
        num_classes: Number of classes ``C``.
        s: Scale.
        m: Additive angular margin in radians.
        momentum: Weight of the new batch mean in the update of ``t`` (the paper's α).

    Raises:
        ValueError: If ``momentum`` is not in ``[0, 1]``.
    """

    # Valid hyper-parameter ranges, checked at start-up (facerec.training.validate): `head.<key>`.
    bounds: ClassVar[dict[str, tuple[float, float]]] = {
        "m": (0.0, math.pi / 2),
        "momentum": (0.0, 1.0),
    }

    t: Tensor

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        s: float = 64.0,
        m: float = 0.5,
        momentum: float = 0.01,
    ) -> None:
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        super().__init__(embedding_size, num_classes, s=s, m=m, fallback="th_mm")
        self.momentum = float(momentum)
        self.register_buffer("t", torch.zeros(()))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, momentum={self.momentum}"

    def update_state(
        self, cos: Tensor, cos_target: Tensor, index: Tensor, embeddings: Tensor
    ) -> None:
        self.t.mul_(1.0 - self.momentum).add_(self.momentum * cos_target.mean())

    def apply_margin(
        self, logits: Tensor, cos_target: Tensor, embeddings: Tensor
    ) -> tuple[Tensor, Tensor]:
        # The target: ArcFace's target_logit (th_mm), through the default hook.
        logits, target = super().apply_margin(logits, cos_target, embeddings)
        with torch.no_grad():
            # cos(θ_y + m) without the fallback: only a threshold, so no gradient is needed.
            threshold = cos_plus_angle(cos_target, self.cos_m, self.sin_m)
        # The target column is overwritten afterwards, so whether it counts as "hard" is moot.
        return _HardNegatives.apply(logits, threshold, self.t.to(logits.dtype)), target
