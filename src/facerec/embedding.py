"""Embedding layer: backbone features -> face embedding (the "output layer" of ArcFace)."""

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Embedding"]


class Embedding(nn.Module):
    """BN -> Dropout -> flatten -> Linear -> BN1d, mapping backbone features to an embedding.

    This is the insightface output layer ("E" in the ArcFace paper) kept outside the backbones
    so that every backbone shares it: BatchNorm2d over the channels of a ``(C, H, W)`` map (or
    BatchNorm1d for a ``(C,)`` vector), element-wise dropout, a fully connected layer over all of
    ``prod(in_shape)`` inputs, and a final BatchNorm1d. The embedding is not L2-normalised; the
    margin head and the verification code do that.

    Args:
        in_shape: per-sample shape of the backbone output, ``backbone.feature_shape``, e.g.
            ``(512, 7, 7)`` or ``(512,)``.
        embedding_size: output dimension ``D``.
        dropout: dropout probability applied to the normalised features (train mode only).
        freeze_scale: fix the weight (gamma) of the final BatchNorm1d at 1, as insightface's
            IResNet does; its bias stays trainable.

    Shapes:
        input ``(B, *in_shape)`` -> output ``(B, embedding_size)``.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        embedding_size: int = 512,
        dropout: float = 0.0,
        freeze_scale: bool = False,
    ) -> None:
        super().__init__()
        in_shape = tuple(int(d) for d in in_shape)
        if len(in_shape) == 3:
            self.bn_in: nn.Module = nn.BatchNorm2d(in_shape[0])
        elif len(in_shape) == 1:
            self.bn_in = nn.BatchNorm1d(in_shape[0])
        else:
            raise ValueError(f"in_shape must be (C,) or (C, H, W), got {in_shape}")
        self.in_shape = in_shape
        self.dropout = nn.Dropout(dropout)
        # No bias: the BatchNorm1d right after would cancel it.
        self.fc = nn.Linear(math.prod(in_shape), embedding_size, bias=False)
        self.bn_out = nn.BatchNorm1d(embedding_size)
        if freeze_scale:
            self.bn_out.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *in_shape) -> (B, embedding_size)``."""
        x = self.dropout(self.bn_in(x))
        return self.bn_out(self.fc(x.flatten(1)))
