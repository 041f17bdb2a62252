"""Combined margin of insightface: ``cos(m1·θ + m2) - m3`` on the target class."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from facerec.heads.base import MarginHead
from facerec.heads.functional import cos_plus_angle, safe_acos

__all__ = ["CombinedMargin"]


class CombinedMargin(MarginHead):
    """Target logit ``s · (cos(m1 · θ_y + m2) - m3)``, other logits ``s · cos θ_j``.

    ``m1`` is SphereFace's multiplicative angular margin (without its λ annealing or piecewise
    ψ), ``m2`` ArcFace's additive angular margin (with no fallback past ``θ + m2 > π``, as
    insightface), ``m3`` CosFace's additive cosine margin; ``(1, 0, 0)`` is NormFace.

    Args:
        embedding_size: Dimension ``D`` of the embeddings.
        num_classes: Number of classes ``C``.
        s: Scale.
        m1: Multiplicative angular margin.
        m2: Additive angular margin in radians.
        m3: Additive cosine margin.
    """

    # Valid hyper-parameter ranges, checked at start-up (facerec.training.validate): `head.<key>`.
    bounds: ClassVar[dict[str, tuple[float, float]]] = {
        "m1": (1.0, 4.0),
        "m2": (0.0, math.pi / 2),
        "m3": (0.0, 1.0),
    }

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        s: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.5,
        m3: float = 0.0,
    ) -> None:
        super().__init__(embedding_size, num_classes, s=s)
        self.m1 = float(m1)
        self.m2 = float(m2)
        self.m3 = float(m3)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s={self.s}, m1={self.m1}, m2={self.m2}, m3={self.m3}"

    def target_logit(self, cos_target: Tensor) -> Tensor:
        if self.m1 == 1.0:
            # The usual ArcFace/CosFace settings: the angle-addition form avoids acos and has
            # the same gradient as ArcFace.
            cos_theta_m = cos_plus_angle(cos_target, math.cos(self.m2), math.sin(self.m2))
        else:
            cos_theta_m = torch.cos(self.m1 * safe_acos(cos_target) + self.m2)
        return cos_theta_m - self.m3
