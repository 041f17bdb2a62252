"""AirFace / Li-ArcFace: logits linear in the angle (Li et al., arXiv 1907.12256)."""

from __future__ import annotations

import math
from typing import ClassVar

from torch import Tensor

from facerec.heads.base import MarginHead
from facerec.heads.functional import safe_acos

__all__ = ["AirFace"]


class AirFace(MarginHead):
    """Logits ``s · (π - 2θ_j)/π``, target ``s · (π - 2(θ_y + m))/π``.

    Replacing ``cos θ`` by the linear, strictly decreasing ``(π - 2θ)/π`` keeps the target
    logit monotone in ``θ + m`` over the whole range, so no ArcFace-style fallback is needed,
    and the gradient w.r.t. the angle does not vanish near θ = 0. Both hooks are overridden
    because the paper changes the non-target logits too.

    Args:
        embedding_size: Dimension ``D`` of the embeddings.
        num_classes: Number of classes ``C``.
        s: Scale.
        m: Additive angular margin in radians.
    """

    # Valid hyper-parameter ranges, checked at start-up (facerec.training.validate): `head.<key>`.
    bounds: ClassVar[dict[str, tuple[float, float]]] = {"m": (0.0, math.pi / 2)}

    def __init__(
        self, embedding_size: int, num_classes: int, s: float = 64.0, m: float = 0.45
    ) -> None:
        super().__init__(embedding_size, num_classes, s=s)
        self.m = float(m)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s={self.s}, m={self.m}"

    def logits(self, cos: Tensor) -> Tensor:
        # safe_acos clamps cos into [-1, 1] itself (rounding can leave it a few ulp outside).
        return 1.0 - (2.0 / math.pi) * safe_acos(cos)

    def target_logit(self, cos_target: Tensor) -> Tensor:
        return 1.0 - (2.0 / math.pi) * (safe_acos(cos_target) + self.m)
