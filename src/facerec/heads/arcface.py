"""ArcFace: additive angular margin (Deng et al., arXiv 1801.07698)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from facerec.heads.base import MarginHead, sin_from_cos

__all__ = ["ArcFace", "ArcFaceFallback"]

ArcFaceFallback = Literal["th_mm", "easy_margin", "none"]


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

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        s: float = 64.0,
        m: float = 0.5,
        fallback: ArcFaceFallback = "th_mm",
    ) -> None:
        if fallback not in ("th_mm", "easy_margin", "none"):
            raise ValueError(f"fallback must be 'th_mm', 'easy_margin' or 'none', got {fallback!r}")
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
        cos_theta_m = cos_target * self.cos_m - sin_from_cos(cos_target) * self.sin_m
        if self.fallback == "th_mm":
            return torch.where(
                cos_target < self.threshold, cos_target - self.m * self.sin_m, cos_theta_m
            )
        if self.fallback == "easy_margin":
            return torch.where(cos_target > 0, cos_theta_m, cos_target)
        return cos_theta_m
