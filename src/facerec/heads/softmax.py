"""Plain softmax classifier: ``W x + b``, the baseline every margin head is compared with."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Softmax"]


class Softmax(nn.Module):
    """Fully connected classifier with bias; no normalisation, no scale, no margin.

    Args:
        embedding_size: Dimension ``D`` of the embeddings.
        num_classes: Number of classes ``C``.

    Attributes:
        weight: Class weights, shape ``(C, D)``.
        bias: Class biases, shape ``(C,)``.
        shardable: True: each logit needs only its own class's row and bias, so a shard of
            the classes computes its columns alone (Partial FC).
    """

    shardable: bool = True

    def __init__(self, embedding_size: int, num_classes: int) -> None:
        super().__init__()
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        self.bias = nn.Parameter(torch.empty(num_classes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as ``nn.Linear`` does (Kaiming-uniform weight, uniform bias)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(self.embedding_size)
        nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return f"embedding_size={self.embedding_size}, num_classes={self.num_classes}"

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        share_target: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """Compute ``W x + b``.

        Args:
            embeddings: Shape ``(B, D)``, float.
            labels: Shape ``(B,)``; unused, accepted so all heads share one call signature
                (``-1`` for another shard's class is fine: nothing reads it).
            share_target: Ignored: there is no margin, so no target cosine to share. Accepted
                so a caller passes it to any shardable head alike
                (:meth:`facerec.heads.base.MarginHead.forward`).

        Returns:
            Logits, shape ``(B, C)``, at least float32.
        """
        # No margin arithmetic here, so the matmul may run under the caller's autocast; only
        # the output is promoted so every head hands cross-entropy the same dtype.
        logits = F.linear(embeddings, self.weight, self.bias)
        return logits.to(torch.promote_types(logits.dtype, torch.float32))
