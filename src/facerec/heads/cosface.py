"""CosFace / AM-Softmax: additive cosine margin (arXiv 1801.09414, 1801.05599)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from facerec.heads.base import MarginHead

__all__ = ["CosFace"]


class CosFace(MarginHead):
    """Target logit ``s · (cos θ_y - m)``, other logits ``s · cos θ_j``.

    CosFace (LMCL) and AM-Softmax are the same formula; they differ only in their defaults
    (``configs/head/cosface.yaml`` s=64, m=0.35; ``amsoftmax.yaml`` s=30, m=0.35).

    Args:
        embedding_size: Dimension ``D`` of the embeddings.
        num_classes: Number of classes ``C``.
        s: Scale.
        m: Additive cosine margin.
    """

    # Valid hyper-parameter ranges, checked at start-up (facerec.training.validate): `head.<key>`.
    bounds: ClassVar[dict[str, tuple[float, float]]] = {"m": (0.0, 1.0)}

    def __init__(
        self, embedding_size: int, num_classes: int, s: float = 64.0, m: float = 0.35
    ) -> None:
        super().__init__(embedding_size, num_classes, s=s)
        self.m = float(m)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s={self.s}, m={self.m}"

    def target_logit(self, cos_target: Tensor) -> Tensor:
        return cos_target - self.m
