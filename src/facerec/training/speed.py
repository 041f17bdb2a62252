"""What the speed switches mean on the device found: ``auto`` values and kernel settings.

``trainer.amp=auto`` and ``trainer.compile=auto`` are the defaults, so a run is as fast as the
machine allows without the user knowing which switch pays where (docs/performance.md has the
measurements behind each choice):

- autocast to bf16 on a CUDA GPU with bf16 tensor cores (Ampere and later); fp32 on the CPU,
  where bf16 autocast made the demo's MobileFaceNet training (batch 128, 2 threads) 4-5x
  *slower* than fp32;
- ``torch.compile`` on CUDA (fuses BatchNorm + PReLU + residual adds, which dominate a face
  ResNet at 112x112); off on the CPU, where minutes of compilation never pay back in a short run.
"""

from __future__ import annotations

import torch

AMP_DTYPES: dict[str, torch.dtype | None] = {
    "none": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
AMP_CHOICES = ("auto", *AMP_DTYPES)


def resolve_amp(name: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on a bf16-capable CUDA device, else ``none``; others unchanged."""
    if name != "auto":
        return name
    if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return "bf16"
    return "none"


def resolve_compile(value: bool | str, device: torch.device) -> bool:
    """``auto`` -> on for CUDA devices only; ``true``/``false`` are taken as given."""
    if value == "auto":
        return device.type == "cuda"
    return bool(value)


def configure_kernels(device: torch.device, deterministic: bool, tf32: bool) -> None:
    """Process-wide kernel choices for fixed-size 112x112 training batches.

    cuDNN autotuning (``benchmark``) picks the fastest convolution algorithm once per input
    shape, which never changes in training; it is off for deterministic runs because the
    chosen algorithm may differ between runs. TF32 lets fp32 matrix products and convolutions
    use the tensor cores (10-bit mantissa products, fp32 accumulation).
    """
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32


def compile_backbone(model: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile`` of the face model (backbone + embedding), for the training step only.

    Returns a compiled wrapper that shares every parameter and buffer with ``model``; train
    through it (``Recognizer(compile_backbone(r.model), r.criterion)``) and keep ``model`` itself
    eager for verification (eval mode and odd batch sizes would each cost a recompilation)
    and for checkpoints (plain state-dict keys).

    The head is not compiled. The backbone is where compilation pays (BatchNorm + PReLU +
    residual fusion); the head is one matrix product already fused by hand. And compiling
    the whole recognizer was wrong on torch 2.11 + CUDA: the loss was right but *every*
    gradient came back zero, with the inductor and with the aot_eager backend alike, while
    the backbone alone compiled correctly (docs/performance.md).
    """
    return torch.compile(model)
