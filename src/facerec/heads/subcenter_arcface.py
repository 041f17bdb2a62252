"""Sub-center ArcFace: k centres per class (Deng et al., ECCV 2020; insightface)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from facerec.heads.arcface import ArcFace, ArcFaceFallback

__all__ = ["SubcenterArcFace"]


class SubcenterArcFace(ArcFace):
    """ArcFace on ``cos θ_c = max_i cos θ_{c,i}``, the nearest of each class's ``k`` sub-centres.

    A class's clean faces gather around one dominant sub-centre while noisy or atypical
    samples can sit at another one instead of pulling the class centre away, which makes the
    head robust to label noise in large web-crawled datasets. Target logit
    ``s · cos(θ_y + m)`` (with ArcFace's ``fallback``), other logits ``s · cos θ_j``, both on
    the max-pooled cosines. With ``k = 1`` it is ArcFace.

    The one exception to the ``(C, D)`` rule of the head contract: ``weight`` has shape
    ``(C · k, D)``, laid out class-major (rows ``c·k … c·k + k - 1`` are the sub-centres of
    class ``c``), as insightface's reshape of the ``C · k`` logits to ``(C, k)``.
    :meth:`sub_centers` returns it as ``(C, k, D)``. The paper's later step (drop the
    non-dominant sub-centres and the samples far from the dominant one, then retrain) needs
    the training data and is left to a script.

    The gradient of the max goes to the sub-centre attaining it (on an exact tie, to one of
    them, as ``torch.max`` picks); the others get a zero gradient for that sample. One index
    instead of ``amax``'s even split: its (B, C, k) mask backward cost more than the margin.

    Args:
        embedding_size: Dimension ``D`` of the embeddings.
        num_classes: Number of classes ``C``.
        s: Scale.
        m: Additive angular margin in radians.
        k: Number of sub-centres per class, ``>= 1``.
        fallback: Behaviour where ``θ_y + m > π``, as :class:`~facerec.heads.arcface.ArcFace`.

    Raises:
        ValueError: If ``k`` is not a positive integer or ``fallback`` is unknown.

    Attributes:
        weight: Sub-centres, shape ``(C · k, D)``, class-major.
    """

    # Valid hyper-parameter ranges, checked at start-up (facerec.training.validate): `head.<key>`.
    bounds: ClassVar[dict[str, tuple[float, float]]] = {"m": (0.0, math.pi / 2), "k": (1, 64)}

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        s: float = 64.0,
        m: float = 0.5,
        k: int = 3,
        fallback: ArcFaceFallback = "th_mm",
    ) -> None:
        if int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        super().__init__(embedding_size, num_classes, s=s, m=m, fallback=fallback)
        self.k = int(k)
        # Replaces the (C, D) centres the base class made; same initialisation.
        self.weight = nn.Parameter(torch.empty(num_classes * self.k, embedding_size))
        self.reset_parameters()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k={self.k}"

    def sub_centers(self) -> Tensor:
        """The sub-centres grouped by class.

        Returns:
            A view of ``weight``, shape ``(C, k, D)``.
        """
        return self.weight.view(self.num_classes, self.k, self.embedding_size)

    def cosine(self, embeddings: Tensor) -> Tensor:
        """Cosine between each embedding and the nearest sub-centre of each class.

        Args:
            embeddings: Shape ``(B, D)``, any float dtype.

        Returns:
            ``max_i cos θ_{c,i}``, shape ``(B, C)``, in the compute dtype, not clamped.
        """
        cos = super().cosine(embeddings)  # (B, C·k)
        if self.k == 1:
            return cos
        return cos.view(cos.shape[0], self.num_classes, self.k).max(dim=2).values
