"""AdaFace: margin adapted to the feature norm (Kim et al., arXiv 2204.00964)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from facerec.heads.base import MarginHead
from facerec.heads.functional import safe_acos

__all__ = ["AdaFace"]


class AdaFace(MarginHead):
    """Target logit ``s · (cos(clip(θ_y - m·g, ε, π - ε)) - (m + m·g))``, others ``s · cos θ_j``.

    The feature norm ``‖x‖`` is a proxy for image quality: ``g`` in ``[-1, 1]`` is the norm
    standardised by running batch statistics,

        ``g = clip(h · (‖x‖ - μ) / (σ + ε), -1, 1)``,  ``‖x‖`` clipped to ``[0.001, 100]``,

    and it sets an angular margin ``g_angle = -m·g`` and an additive one ``g_add = m·g + m``.
    Low-norm (low-quality) samples, ``g = -1``, get ArcFace's ``cos(θ_y + m)``, which gives
    hard (large-θ) samples a smaller gradient; high-norm ones, ``g = 1``, get
    ``cos(θ_y - m) - 2m``, a negative angular margin that gives hard samples a larger one;
    ``g = 0`` gives CosFace's ``cos θ_y - m``. So hard samples are emphasised only where the
    image is good enough to learn from them.

    As the official code: the norm is taken from the (un-normalised) embeddings this head is
    given and detached, so no gradient flows through ``g``; ``ε = 1e-3``; ``μ`` and ``σ`` are
    the buffers ``batch_mean`` (20 at construction) and ``batch_std`` (100), moving averages of
    the batch mean and unbiased standard deviation of the clipped norms,
    ``μ ← momentum · mean + (1 - momentum) · μ``. They are updated once per forward in
    ``train()`` mode only, before that forward's margin uses them, and kept in ``state_dict``.
    A batch of one sample has no standard deviation: it updates ``μ`` only. Under DDP each rank
    uses its own batch.

    One deliberate difference: the official code clamps *every* cosine to
    ``[-1 + ε, 1 - ε]`` "for stability", which moves the logits at ``|cos θ| > 1 - ε`` by up
    to ``s·ε`` and cuts their gradient; here ``safe_acos`` has a finite gradient at ±1, so only
    the angle clip of the formula above is applied. With ``m = 0`` the head is NormFace except
    for that angle clip (target ``cos ε`` instead of ``cos θ_y`` for ``θ_y < ε``, ``-cos ε``
    for ``θ_y > π - ε``).

    Args:
        embedding_size: Dimension ``D`` of the embeddings.
        num_classes: Number of classes ``C``.
        s: Scale.
        m: Margin (both the angular and the additive part are proportional to it).
        h: Concentration of the standardised norm: about 68 % of the batch lands in
            ``[-h, h]``.
        momentum: Weight of the new batch statistics in the moving averages (the official
            ``t_alpha``).

    Raises:
        ValueError: If ``momentum`` is not in ``[0, 1]``.
    """

    # Valid hyper-parameter ranges, checked at start-up (facerec.training.validate): `head.<key>`.
    bounds: ClassVar[dict[str, tuple[float, float]]] = {
        "m": (0.0, 1.0),
        "h": (0.0, 1.0),
        "momentum": (0.0, 1.0),
    }

    batch_mean: Tensor
    batch_std: Tensor

    eps: float = 1e-3
    norm_min: float = 1e-3
    norm_max: float = 100.0

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        s: float = 64.0,
        m: float = 0.4,
        h: float = 0.333,
        momentum: float = 0.01,
    ) -> None:
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        super().__init__(embedding_size, num_classes, s=s)
        self.m = float(m)
        self.h = float(h)
        self.momentum = float(momentum)
        self.register_buffer("batch_mean", torch.tensor(20.0))
        self.register_buffer("batch_std", torch.tensor(100.0))

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, s={self.s}, m={self.m}, h={self.h}, momentum={self.momentum}"
        )

    def margin_scaler(self, embeddings: Tensor) -> Tensor:
        """``g``: the clipped feature norm standardised by the running statistics.

        Args:
            embeddings: Un-normalised embeddings, shape ``(B, D)``.

        Returns:
            ``g`` in ``[-1, 1]``, shape ``(B, 1)``, detached.
        """
        norms = self._norms(embeddings)
        g = self.h * (norms - self.batch_mean) / (self.batch_std + self.eps)
        return g.clamp(-1.0, 1.0)

    def _norms(self, embeddings: Tensor) -> Tensor:
        norms = torch.linalg.vector_norm(embeddings.detach(), dim=1, keepdim=True)
        return norms.clamp(self.norm_min, self.norm_max)

    def update_state(
        self, cos: Tensor, cos_target: Tensor, index: Tensor, embeddings: Tensor
    ) -> None:
        norms = self._norms(embeddings)
        self.batch_mean.mul_(1.0 - self.momentum).add_(self.momentum * norms.mean())
        if norms.shape[0] > 1:  # the unbiased std of one sample is NaN
            self.batch_std.mul_(1.0 - self.momentum).add_(self.momentum * norms.std())

    def apply_margin(
        self, logits: Tensor, cos_target: Tensor, embeddings: Tensor
    ) -> tuple[Tensor, Tensor]:
        g = self.margin_scaler(embeddings)
        angle = (safe_acos(cos_target) - self.m * g).clamp(self.eps, math.pi - self.eps)
        return logits, torch.cos(angle) - (self.m + self.m * g)
