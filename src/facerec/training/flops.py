"""Model cost: multiply-accumulates (MACs) of one forward pass and parameter counts.

Only ``nn.Conv1d/2d/3d`` (grouped and depthwise included) and ``nn.Linear`` are counted, one MAC
per weight use: a conv contributes ``output.numel() * in_channels / groups * prod(kernel_size)``
and a linear layer ``output.numel() * in_features``. Biases, BatchNorm, activations, pooling,
additions and attention's matmuls (``F.scaled_dot_product_attention``, ``@``) are not counted,
matching the "MAdds" of the MobileNet/MobileFaceNet papers. FLOPs are about 2 x MACs; a training
step (forward + backward) is about 3 x the forward cost. For transformers from timm the hand
count is a lower bound.

:func:`count_flops` is PyTorch's own counter (``torch.utils.flop_counter.FlopCounterMode``:
per-operator formulas for convolutions, matrix products and attention, 2 FLOPs per
multiply-add) -- a well-kept library doing the same job, so it is the cross-check of the hand
count (the tests hold ``count_flops == 2 * count_macs`` for every convolutional backbone) and the
figure to use for transformers, whose attention it counts.
"""

import contextlib

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "count_macs", "count_parameters"]


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def count_macs(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 112, 112)) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on a zero tensor of ``input_shape``.

    The count is for the whole batch in ``input_shape`` (batch 1 by default). The model runs once
    in eval mode under ``torch.no_grad()`` on the device and dtype of its first parameter; its
    train/eval mode is restored afterwards.

    Args:
        model: any module; Conv1d/2d/3d and Linear submodules are counted (see module docstring).
        input_shape: shape of the single input tensor, batch dimension included.

    Returns:
        The number of MACs.
    """
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, _CONVS):
            per_output = module.in_channels // module.groups
            for k in module.kernel_size:
                per_output *= k
            total += output.numel() * per_output
        else:  # nn.Linear
            total += output.numel() * module.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (*_CONVS, nn.Linear))
    ]
    try:
        _forward_once(model, input_shape)
    finally:
        for h in handles:
            h.remove()
    return total


def _forward_once(
    model: nn.Module,
    input_shape: tuple[int, ...],
    context: contextlib.AbstractContextManager | None = None,
) -> None:
    """One eval-mode, no-grad forward of a zero tensor on the model's device and dtype, inside
    ``context`` if given; the train/eval mode is restored afterwards."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), context or contextlib.nullcontext():
            model(torch.zeros(input_shape, device=device, dtype=dtype))
    finally:
        model.train(was_training)


def count_flops(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 112, 112)) -> int:
    """FLOPs of one forward pass as ``torch.utils.flop_counter.FlopCounterMode`` counts them.

    Convolutions, linear layers, batched matrix products and
    ``F.scaled_dot_product_attention`` are counted (2 per multiply-add); normalisation,
    activations and additions are not, as in :func:`count_macs`. Same run as there: eval mode,
    no grad, a zero tensor of ``input_shape`` (batch included), mode restored.
    """
    counter = FlopCounterMode(display=False)
    # The CPU's fused attention kernel has no formula in FlopCounterMode (it would count 0);
    # the math backend runs attention as two matrix products, which are counted -- the same
    # number the formulas of the CUDA kernels give.
    with sdpa_kernel(SDPBackend.MATH):
        _forward_once(model, input_shape, counter)
    return int(counter.get_total_flops())


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``model`` (shared parameters counted once).

    Args:
        model: any module.
        trainable_only: count only parameters with ``requires_grad``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
