"""The margin-head loss: cross-entropy of the head's logits, plus the head's own regulariser."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facerec.criteria.base import Criterion

__all__ = ["MarginLoss", "add_regularizer"]


def add_regularizer(head: nn.Module, embeddings: Tensor, loss: Tensor) -> Tensor:
    """``loss + head.regularizer(embeddings)`` for heads whose paper adds a term (MagFace).

    The one place this sum is written: :class:`MarginLoss` and Partial FC both call it.
    """
    regularizer = getattr(head, "regularizer", None)
    return loss if regularizer is None else loss + regularizer(embeddings)


class MarginLoss(Criterion):
    """Any margin head of :mod:`facerec.heads` over all classes, replicated on every rank.

    Args:
        head: ``head(embeddings (B, D), labels (B,)) -> logits (B, C)``.
        label_smoothing: mass in [0, 1) spread uniformly over all classes (0: plain
            cross-entropy). The margin stays on the true class's logit.
    """

    def __init__(self, head: nn.Module, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"criterion.label_smoothing={label_smoothing} must be in [0, 1)")
        self.head = head
        self.label_smoothing = float(label_smoothing)

    @classmethod
    def build(
        cls,
        make_head: Callable[[int], nn.Module],
        num_classes: int,
        embedding_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        label_smoothing: float = 0.0,
    ) -> MarginLoss:
        """The trainer's factory (``configs/criterion/margin.yaml``): every rank holds every
        class, so the rank, world size and seed do not matter here."""
        return cls(make_head(num_classes), label_smoothing)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Scalar loss of ``embeddings`` ``(B, D)`` with ``labels`` ``(B,)``."""
        logits = self.head(embeddings, labels)
        # At least float32: under autocast the logits may be bf16/fp16 (float64 stays float64).
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return add_regularizer(self.head, embeddings, loss)
