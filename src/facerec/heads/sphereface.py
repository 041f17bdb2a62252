"""SphereFace / A-Softmax: multiplicative angular margin (Liu et al., arXiv 1704.08063)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from facerec.heads.base import MarginHead

__all__ = ["SphereFace"]


def chebyshev(cos: Tensor, m: int) -> Tensor:
    """``cos(m·θ)`` as the Chebyshev polynomial ``T_m(cos θ)``.

    A polynomial in ``cos θ`` has a finite, exact gradient everywhere on ``[-1, 1]``, unlike
    ``cos(m · acos(c))`` whose chain rule goes through ``1/sqrt(1 - c²)``.

    Args:
        cos: Cosines, any shape.
        m: Non-negative integer multiplier.

    Returns:
        ``T_m(cos)``, same shape.
    """
    previous, current = torch.ones_like(cos), cos
    if m == 0:
        return previous
    for _ in range(m - 1):
        previous, current = current, 2.0 * cos * current - previous
    return current


class SphereFace(MarginHead):
    """A-Softmax with the λ annealing of the reference Caffe implementation.

    Weights are normalised and there is no bias; the embeddings are *not* normalised, so the
    logits are scaled by ``‖x‖`` instead of a constant ``s``:

    * other classes: ``‖x‖ · cos θ_j``;
    * target: ``‖x‖ · (λ cos θ_y + ψ(θ_y)) / (1 + λ)`` with
      ``ψ(θ) = (-1)^k cos(mθ) - 2k`` for ``θ ∈ [kπ/m, (k+1)π/m]``, a monotone extension of
      ``cos(mθ)`` to ``[0, π]``.

    Pure A-Softmax does not converge from scratch, so training starts close to the plain
    softmax (large λ) and anneals:
    ``λ = max(λ_min, base · (1 + γ · iteration)^(-power))``, the iteration counted from 1 at the
    first training forward (λ ≈ 892.86 there with the defaults). The counter is the buffer
    ``iteration`` (in ``state_dict``); it advances only in ``train()`` mode, and ``eval()``
    forwards use the λ of the last training step (``base`` before any).

    Args:
        embedding_size: Dimension ``D`` of the embeddings.
        num_classes: Number of classes ``C``.
        m: Integer angular margin (multiplier of θ), ``>= 1``.
        base: λ at iteration 0.
        gamma: Decay rate of λ.
        power: Decay exponent of λ.
        lambda_min: Floor of λ.

    Raises:
        ValueError: If ``m`` is not a positive integer.
    """

    # Valid hyper-parameter ranges, checked at start-up (facerec.training.validate): `head.<key>`.
    bounds: ClassVar[dict[str, tuple[float, float]]] = {
        "m": (1, 4),
        "lambda_min": (0.0, math.inf),
        "gamma": (0.0, math.inf),
    }

    iteration: Tensor

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        m: int = 4,
        base: float = 1000.0,
        gamma: float = 0.12,
        power: float = 1.0,
        lambda_min: float = 5.0,
    ) -> None:
        if int(m) != m or m < 1:
            raise ValueError(f"m must be a positive integer, got {m!r}")
        super().__init__(embedding_size, num_classes, s=None)
        self.m = int(m)
        self.base = float(base)
        self.gamma = float(gamma)
        self.power = float(power)
        self.lambda_min = float(lambda_min)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        # cos(jπ/m) for j = 1..m-1: θ ≥ jπ/m  <=>  cos θ ≤ cos(jπ/m), so k counts the thresholds
        # at or above cos θ, which is floor(mθ/π) without an acos.
        self._k_thresholds = tuple(math.cos(j * math.pi / self.m) for j in range(1, self.m))

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, m={self.m}, base={self.base}, gamma={self.gamma}, "
            f"power={self.power}, lambda_min={self.lambda_min}"
        )

    def lambda_(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """λ at the current iteration, as a 0-d tensor (no host sync in the training step).

        Args:
            dtype: Floating dtype of the result.

        Returns:
            ``max(lambda_min, base · (1 + gamma · iteration)^(-power))``.
        """
        decayed = self.base * (1.0 + self.gamma * self.iteration.to(dtype)) ** (-self.power)
        return decayed.clamp(min=self.lambda_min)

    def update_state(
        self, cos: Tensor, cos_target: Tensor, index: Tensor, embeddings: Tensor
    ) -> None:
        self.iteration.add_(1)

    def scale(self, embeddings: Tensor) -> Tensor:
        return torch.linalg.vector_norm(embeddings, dim=1, keepdim=True)

    def target_logit(self, cos_target: Tensor) -> Tensor:
        # k is piecewise constant in θ: it carries no gradient, and ψ is continuous across its
        # jumps, so which side a cosine exactly on a threshold falls does not matter.
        k = torch.zeros_like(cos_target)
        for threshold in self._k_thresholds:
            k = k + (cos_target <= threshold).to(cos_target.dtype)
        sign = 1.0 - 2.0 * torch.remainder(k, 2.0)  # (-1)^k
        psi = sign * chebyshev(cos_target, self.m) - 2.0 * k
        lam = self.lambda_(cos_target.dtype)
        return (lam * cos_target + psi) / (1.0 + lam)
