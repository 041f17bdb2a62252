"""ArcFace: additive angular margin (Deng et al., arXiv 1801.07698)."""

from __future__ import annotations

import math
from typing import ClassVar, Literal, get_args

import torch
from torch import Tensor

from facerec.heads.base import MarginHead
from facerec.heads.functional import cos_plus_angle

__all__ = ["ArcFace", "ArcFaceFallback", "additive_angular_margin", "check_fallback"]

ArcFaceFallback = Literal["th_mm", "easy_margin", "none"]


def check_fallback(fallback: str) -> None:
    """Raise unless ``fallback`` is one of :data:`ArcFaceFallback`.

    Raises:
        ValueError: If it is not ``"th_mm"``, ``"easy_margin"`` or ``"none"``.
    """
    if fallback not in get_args(ArcFaceFallback):
        raise ValueError(f"fallback must be 'th_mm', 'easy_margin' or 'none', got {fallback!r}")


def additive_angular_margin(
    cos_target: Tensor,
    m: Tensor | float,
    cos_m: Tensor | float,
    sin_m: Tensor | float,
    threshold: Tensor | float,
    fallback: ArcFaceFallback,
) -> Tensor:
    """``cos(θ_y + m)`` with ArcFace's ``fallback`` where ``θ_y + m > π`` (see :class:`ArcFace`).

    Shared by ArcFace (a constant ``m``, Python floats) and MagFace (a per-sample ``m(‖x‖)``,
    tensors with their gradient).

    Args:
        cos_target: Clamped target cosines, shape ``(B, 1)``.
        m: The margin in radians, a float or a tensor broadcastable to ``cos_target``.
        cos_m: ``cos m``, same kind as ``m``.
        sin_m: ``sin m``, same kind as ``m``.
        threshold: ``cos(π - m)`` (``= -cos m``): below it, ``θ_y > π - m``. Only ``"th_mm"``
            reads it.
        fallback: ``"th_mm"``, ``"easy_margin"`` or ``"none"``.

    Returns:
        The unscaled target logit, shape ``(B, 1)``.
    """
    cos_theta_m = cos_plus_angle(cos_target, cos_m, sin_m)
    if fallback == "th_mm":
        return torch.where(cos_target < threshold, cos_target - m * sin_m, cos_theta_m)
    if fallback == "easy_margin":
        return torch.where(cos_target > 0, cos_theta_m, cos_target)
    return cos_theta_m


class ArcFace(MarginHead):
    """Target logit ``s · cos(θ_y + m)``, other logits ``s · cos θ_j``.

    ``cos(θ + m)`` stops decreasing once ``θ + m > π``, so a sample far from its centre would be
    pushed *away* from it. Public implementations handle that in one of three ways, selected by
    ``fallback``:

    * ``"th_mm"`` (default, original insightface): where ``θ_y > π - m`` (``cos θ_y <
      cos(π - m)``) use ``cos θ_y - m · sin m``, the CosFace-like continuation of the curve.
    * ``"easy_margin"``: apply the margin only where ``cos θ_y > 0`` and use ``cos θ_y`` elsewhere.
    * ``"none"``: plain ``cos(θ_y + m)`` everywhere, as insightface's current code.

    ``cos(θ + m)`` is computed as ``cos θ cos m - sin θ sin m`` rather than through ``acos`` so
    the gradient stays finite (and exact elsewhere) at ``cos θ = ±1``.

    Args:
        embedding_size: Dimension ``D`` of the embeddings.
        num_classes: Number of classes ``C``.
        s: Scale.
        m: Additive angular margin in radians.
        fallback: Behaviour where ``θ_y + m > π``: ``"th_mm"``, ``"easy_margin"`` or ``"none"``.

    Raises:
        ValueError: If ``fallback`` is not one of the three options.
    """

    # Valid hyper-parameter ranges, checked at start-up (facerec.training.validate): `head.<key>`.
    bounds: ClassVar[dict[str, tuple[float, float]]] = {"m": (0.0, math.pi / 2)}

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        s: float = 64.0,
        m: float = 0.5,
        fallback: ArcFaceFallback = "th_mm",
    ) -> None:
        check_fallback(fallback)
        super().__init__(embedding_size, num_classes, s=s)
        self.m = float(m)
        self.fallback = fallback
        self.cos_m = math.cos(self.m)
        self.sin_m = math.sin(self.m)
        # θ > π - m  <=>  cos θ < cos(π - m): where θ + m would pass π.
        self.threshold = math.cos(math.pi - self.m)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s={self.s}, m={self.m}, fallback={self.fallback!r}"

    def target_logit(self, cos_target: Tensor) -> Tensor:
        return additive_angular_margin(
            cos_target, self.m, self.cos_m, self.sin_m, self.threshold, self.fallback
        )
