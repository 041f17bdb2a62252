"""Safe maths of the cosine heads: ``sin θ``, ``θ`` and ``cos(θ + m)`` from ``cos θ``, and the
product with the normalised class centres.

``sqrt(1 - cos²)`` and ``acos`` have infinite derivatives at ``cos = ±1``, which is exactly where
a well-trained embedding sits (θ = 0); :func:`sin_from_cos` and :func:`safe_acos` keep the exact
value and floor ``1 - cos²`` in the *backward* only. :func:`normalized_linear` is the cosine
matrix's ``x @ Ŵᵀ`` as one autograd Function, with a backward that makes fewer passes over the
largest tensors of a head than autograd's. Pure tensor functions: no module state, no config.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["cos_plus_angle", "normalized_linear", "safe_acos", "sin_from_cos"]


def _floor(dtype: torch.dtype) -> float:
    # Floor under 1 - cos² in the *backward* only. finfo.eps is the resolution of cos just
    # below 1, so the derivative at cos = ±1 exactly (1/sqrt(eps): 2.9e3 in float32) matches the
    # one at the neighbouring representable cosine instead of jumping to inf (or to 0, which is
    # what a clamp inside the forward would give).
    return torch.finfo(dtype).eps


class _SinFromCos(torch.autograd.Function):
    """``sqrt(1 - c²)`` with its exact value and a derivative that stays finite at ``c = ±1``.

    ``|c|`` a few ulp above 1 gives 0, not NaN.

    Clamping ``1 - c²`` to ``eps`` in the forward would move the value by ``sqrt(eps)``
    (3.5e-4 in float32: cos(θ + m) off by 1.7e-4 at θ = 0), so the floor is applied in the
    backward only.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, cos: Tensor) -> Tensor:
        ctx.save_for_backward(cos)
        return torch.sqrt((1.0 - cos * cos).clamp(min=0.0))

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        (cos,) = ctx.saved_tensors
        return -grad * cos * torch.rsqrt((1.0 - cos * cos).clamp(min=_floor(cos.dtype)))


class _Acos(torch.autograd.Function):
    """``acos`` with its exact value and a derivative that stays finite at ``c = ±1``.

    ``d acos(c)/dc = -1/sqrt(1 - c²)`` is infinite at ``c = ±1``, which is exactly where a
    well-trained embedding sits (θ = 0). Clamping the *input* to ``[-1 + eps, 1 - eps]`` would
    move the value by ``sqrt(2·eps)`` (5e-4 rad in float32), so only the backward is floored.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, cos: Tensor) -> Tensor:
        ctx.save_for_backward(cos)
        # Clamped here rather than by the caller: outside autograd, so a (B, C) input does not
        # pay for clamp's masked backward.
        return torch.acos(cos.clamp(-1.0, 1.0))

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        (cos,) = ctx.saved_tensors
        # -grad / sqrt(max(1 - cos², eps)), in place on one temporary: this runs on all (B, C)
        # entries for AirFace.
        factor = cos.square().neg_().add_(1.0).clamp_(min=_floor(cos.dtype)).rsqrt_()
        return factor.mul_(grad).neg_()


# F.normalize's default: a centre whose norm is below it is divided by it instead.
_NORM_EPS = 1e-12


class _NormalizedLinear(torch.autograd.Function):
    """``(x @ Wᵀ) / max(‖w_c‖, eps)``: the product with the *normalised* rows of ``W``.

    The same value as ``F.linear(x, W) / vector_norm(W, dim=1).clamp(min=eps)`` (the division
    is the same one), with a hand-written backward. Besides the two matmuls, autograd's
    backward of that expression makes several elementwise passes over the ``(B, C)`` product
    and the ``(C, D)`` weight (the division's two gradients, the norm's backward, the sum of
    ``W``'s two gradients); this one makes two elementwise ``(B, C)`` passes, a column sum and
    one in-place ``(C, D)`` pass. With ``n_c = max(‖w_c‖, eps)``, ``p = x Wᵀ``,
    ``out = p / n`` and ``g' = g / n`` (per column):

    * ``∂L/∂x = g' W``;
    * ``∂L/∂W = g'ᵀ x - W · diag(Σ_b g'_bc out_bc / n_c)``, from
      ``∂n_c/∂w_c = w_c / n_c``; the second term is dropped for the rows where the clamp is
      active (``‖w_c‖ < eps``, zero gradient through ``max``, as ``F.normalize``), so a zero
      centre gets ``g'ᵀ x`` and no NaN.

    ``out`` is saved for the backward: callers must not modify it in place (autograd's
    version counter would raise).
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, weight: Tensor) -> Tensor:
        norm = torch.linalg.vector_norm(weight, dim=1)
        out = F.linear(x, weight).div_(norm.clamp(min=_NORM_EPS))
        ctx.save_for_backward(x, weight, norm, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None]:
        x, weight, norm, out = ctx.saved_tensors
        clamped = norm.clamp(min=_NORM_EPS)
        grad = grad / clamped  # g', a fresh tensor: reused in place below
        grad_x = grad @ weight if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = grad.t() @ x
            # Σ_b g'_bc out_bc / n_c, zero where the clamp is active (and so for zero rows).
            coef = grad.mul_(out).sum(dim=0).div_(clamped)
            coef = torch.where(norm >= _NORM_EPS, coef, 0.0)
            grad_weight.addcmul_(weight, coef.unsqueeze(1), value=-1.0)
        return grad_x, grad_weight


def normalized_linear(x: Tensor, weight: Tensor) -> Tensor:
    """``x`` times the L2-normalised rows of ``weight``: ``(x @ Wᵀ) / max(‖w_c‖, 1e-12)``.

    Args:
        x: Shape ``(B, D)``.
        weight: Shape ``(C, D)``, same dtype as ``x``; a row of norm below ``1e-12`` is divided
            by ``1e-12`` (as ``F.normalize``): a zero row gives a zero column, not NaN.

    Returns:
        Shape ``(B, C)``. Differentiable once (no double backward); do not modify it in place
        before the backward.
    """
    return _NormalizedLinear.apply(x, weight)


def sin_from_cos(cos: Tensor) -> Tensor:
    """``sin θ = sqrt(1 - cos² θ)`` for θ in [0, π], with a finite gradient at ``cos = ±1``.

    Args:
        cos: Cosines in ``[-1, 1]``, any shape.

    Returns:
        ``sin θ``, same shape. Exact value; the derivative ``-cos/sqrt(1 - cos²)`` is evaluated
        with ``1 - cos²`` floored at the dtype's machine epsilon.
    """
    return _SinFromCos.apply(cos)


def safe_acos(cos: Tensor) -> Tensor:
    """θ = acos(cos) with a finite gradient everywhere on ``[-1, 1]``.

    Args:
        cos: Cosines, any shape; values a few ulp outside ``[-1, 1]`` are clamped.

    Returns:
        Angles in ``[0, π]``, same shape. Exact value; the derivative ``-1/sqrt(1 - cos²)`` is
        evaluated with ``1 - cos²`` floored at the dtype's machine epsilon.
    """
    return _Acos.apply(cos)


def cos_plus_angle(cos: Tensor, cos_m: Tensor | float, sin_m: Tensor | float) -> Tensor:
    """``cos(θ + m) = cos θ cos m - sin θ sin m`` from ``cos θ``, without an ``acos``.

    Args:
        cos: Clamped cosines ``cos θ`` in ``[-1, 1]``, θ in ``[0, π]``, any shape.
        cos_m: ``cos m``: a Python float or a tensor broadcastable to ``cos``.
        sin_m: ``sin m``, as ``cos_m``.

    Returns:
        ``cos(θ + m)``, the broadcast shape. Its derivative in ``cos`` is finite at ``±1``
        (through :func:`sin_from_cos`) and exact elsewhere; no fallback past ``θ + m > π``.
    """
    return cos * cos_m - sin_from_cos(cos) * sin_m
