"""AdaCos: adaptive scale, no margin (Zhang et al., arXiv 1905.00292)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from facerec.heads.base import MarginHead

__all__ = ["AdaCos"]


class AdaCos(MarginHead):
    """Logits ``s · cos θ_j`` with ``s`` set from the data instead of tuned.

    * Fixed AdaCos (``dynamic=False``): ``s = √2 · ln(C - 1)``.
    * Dynamic AdaCos (``dynamic=True``): starting from that value, every training forward sets
      ``s ← ln(B_avg) / cos(min(π/4, θ_med))`` *before* computing its logits, where ``B_avg`` is
      the batch mean over samples of ``Σ_{j≠y} exp(s · cos θ_j)`` with the previous ``s`` and
      ``θ_med`` the (lower) median target angle of the batch.

    ``s`` is the buffer ``s`` (in ``state_dict``), is never differentiated through, and changes
    only in ``train()`` mode. Under DDP each rank computes ``s`` from its own batch.

    Args:
        embedding_size: Dimension ``D`` of the embeddings.
        num_classes: Number of classes ``C`` (at least 3: ``ln(C - 1)`` must be positive).
        dynamic: Update ``s`` every training step (True) or keep the fixed value (False).

    Raises:
        ValueError: If ``num_classes < 3``.
    """

    s: Tensor

    # Not on a shard of the classes (Partial FC): the dynamic s needs Σ_{j≠y} exp(s·cos θ_j)
    # over *every* class, and the fixed one ln(C - 1) of the full C; no shard has either.
    shardable: bool = False

    def __init__(self, embedding_size: int, num_classes: int, dynamic: bool = True) -> None:
        if num_classes < 3:
            raise ValueError(f"AdaCos needs num_classes >= 3, got {num_classes}")
        super().__init__(embedding_size, num_classes, s=None)
        self.dynamic = bool(dynamic)
        self.register_buffer("s", torch.tensor(math.sqrt(2.0) * math.log(num_classes - 1)))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dynamic={self.dynamic}"

    def scale(self, embeddings: Tensor) -> Tensor:
        return self.s

    def update_state(
        self, cos: Tensor, cos_target: Tensor, index: Tensor, embeddings: Tensor
    ) -> None:
        if not self.dynamic:
            return
        # ln B_avg = logsumexp over all (i, j ≠ y_i) of s·cos θ_ij, minus ln B: no overflow of
        # exp(s·cos) and no (B, C) one-hot, the target column is simply masked with -inf.
        others = (self.s.to(cos.dtype) * cos).scatter(1, index, -math.inf)
        log_b_avg = torch.logsumexp(others.flatten(), dim=0) - math.log(cos.shape[0])
        theta_med = torch.acos(cos_target).median()  # lower median for even B, as the paper code
        s = log_b_avg / torch.cos(theta_med.clamp(max=math.pi / 4))
        self.s.copy_(s)
