"""Model cost: multiply-accumulates (MACs) of one forward pass and parameter counts.

Only ``nn.Conv1d/2d/3d`` (grouped and depthwise included) and ``nn.Linear`` are counted, one MAC
per weight use: a conv contributes ``output.numel() * in_channels / groups * prod(kernel_size)``
and a linear layer ``output.numel() * in_features``. Biases, BatchNorm, activations, pooling,
additions and attention's matmuls (``F.scaled_dot_product_attention``, ``@``) are not counted,
matching the "MAdds" of the MobileNet/MobileFaceNet papers. FLOPs are about 2 x MACs; a training
step (forward + backward) is about 3 x the forward cost. For transformers from timm the count is
a lower bound.
"""

import torch
from torch import nn

__all__ = ["count_macs", "count_parameters"]

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
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_shape, device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``model`` (shared parameters counted once).

    Args:
        model: any module.
        trainable_only: count only parameters with ``requires_grad``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
