"""MagFace: margin and regulariser on the feature magnitude (Meng et al., arXiv 2103.06627)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from facerec.heads.arcface import ArcFaceFallback, additive_angular_margin, check_fallback
from facerec.heads.base import MarginHead

__all__ = ["MagFace"]


class MagFace(MarginHead):
    """Target logit ``s · cos(θ_y + m(a))`` with ``a = ‖x‖``, others ``s · cos θ_j``.

    The magnitude ``a`` of the un-normalised embedding, clipped to ``[l_a, u_a]``, sets a
    per-sample margin that grows linearly from ``l_m`` to ``u_m``:

        ``m(a) = (u_m - l_m) / (u_a - l_a) · (a - l_a) + l_m``.

    A larger margin costs cross-entropy, so the loss alone would shrink ``a``; the regulariser
    ``g(a) = 1/a + a/u_a²`` (decreasing on ``[l_a, u_a]``) pushes it up, and at equilibrium
    easy, high-quality faces end with large norms: the norm becomes a quality score.
    ``g`` is not a logit; :meth:`regularizer` returns ``lambda_g · mean(g(a))`` for the
    trainer to add to the cross-entropy (contract in :mod:`facerec.heads.base`). The paper's
    convergence condition is ``lambda_g ≥ s·k·u_a²·l_a² / (u_a² - l_a²)`` with
    ``k = (u_m - l_m)/(u_a - l_a)``: 22.6 with the defaults.

    The gradient flows through ``a`` in both the margin and the regulariser (that is the
    method), and is zero outside ``[l_a, u_a]`` (clipped, as the official code). The backbone
    must output un-normalised embeddings whose norm is free to move (facerec's embedding layer
    ends in ``BatchNorm1d``).

    Where ``θ_y + m(a) > π``, ``fallback`` chooses as in
    :class:`~facerec.heads.arcface.ArcFace`, with the per-sample margin; the default
    ``"easy_margin"`` (margin only where ``cos θ_y > 0``) is what the official ``MagLinear``
    uses.

    Args:
        embedding_size: Dimension ``D`` of the embeddings.
        num_classes: Number of classes ``C``.
        s: Scale.
        l_a: Lower bound of the magnitude, ``> 0``.
        u_a: Upper bound of the magnitude, ``> l_a``.
        l_m: Margin at ``a = l_a`` (radians).
        u_m: Margin at ``a = u_a`` (radians).
        lambda_g: Weight of the regulariser.
        fallback: ``"easy_margin"``, ``"th_mm"`` or ``"none"``.

    Raises:
        ValueError: If ``0 < l_a < u_a`` does not hold or ``fallback`` is unknown.
    """

    # Valid hyper-parameter ranges, checked at start-up (facerec.training.validate): `head.<key>`.
    bounds: ClassVar[dict[str, tuple[float, float]]] = {
        "l_m": (0.0, math.pi / 2),
        "u_m": (0.0, math.pi / 2),
        "l_a": (0.0, math.inf),
        "u_a": (0.0, math.inf),
        "lambda_g": (0.0, math.inf),
    }

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        s: float = 64.0,
        l_a: float = 10.0,
        u_a: float = 110.0,
        l_m: float = 0.45,
        u_m: float = 0.8,
        lambda_g: float = 35.0,
        fallback: ArcFaceFallback = "easy_margin",
    ) -> None:
        if not 0.0 < l_a < u_a:
            raise ValueError(f"l_a and u_a must satisfy 0 < l_a < u_a, got {l_a!r}, {u_a!r}")
        check_fallback(fallback)
        super().__init__(embedding_size, num_classes, s=s)
        self.l_a = float(l_a)
        self.u_a = float(u_a)
        self.l_m = float(l_m)
        self.u_m = float(u_m)
        self.lambda_g = float(lambda_g)
        self.fallback = fallback

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, s={self.s}, l_a={self.l_a}, u_a={self.u_a}, "
            f"l_m={self.l_m}, u_m={self.u_m}, lambda_g={self.lambda_g}, "
            f"fallback={self.fallback!r}"
        )

    def magnitude(self, embeddings: Tensor) -> Tensor:
        """``a = ‖x‖`` clipped to ``[l_a, u_a]``, with its gradient.

        Args:
            embeddings: Un-normalised embeddings, shape ``(B, D)``.

        Returns:
            Shape ``(B, 1)``.
        """
        return torch.linalg.vector_norm(embeddings, dim=1, keepdim=True).clamp(self.l_a, self.u_a)

    def margin(self, magnitude: Tensor) -> Tensor:
        """``m(a)``, linear from ``l_m`` at ``l_a`` to ``u_m`` at ``u_a``.

        Args:
            magnitude: Clipped magnitudes ``a``, any shape.

        Returns:
            Margins in radians, same shape.
        """
        slope = (self.u_m - self.l_m) / (self.u_a - self.l_a)
        return slope * (magnitude - self.l_a) + self.l_m

    def apply_margin(
        self, logits: Tensor, cos_target: Tensor, embeddings: Tensor
    ) -> tuple[Tensor, Tensor]:
        m = self.margin(self.magnitude(embeddings))  # (B, 1), with its gradient
        cos_m = torch.cos(m)
        # ArcFace's margin and fallback with a per-sample m; cos(π - m) = -cos m.
        target = additive_angular_margin(cos_target, m, cos_m, torch.sin(m), -cos_m, self.fallback)
        return logits, target

    def regularizer(self, embeddings: Tensor) -> Tensor:
        """``lambda_g · mean_i g(a_i)`` with ``g(a) = 1/a + a/u_a²``.

        Args:
            embeddings: The un-normalised embeddings given to ``forward``, shape ``(B, D)``.

        Returns:
            0-d tensor, float32 (float64 for float64 embeddings).
        """
        dtype = torch.promote_types(embeddings.dtype, torch.float32)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            a = self.magnitude(embeddings.to(dtype))
            return self.lambda_g * (1.0 / a + a / self.u_a**2).mean()
