"""Triplet loss with batch mining, for fine-tuning a trained model (``criterion=triplet``).

A triplet is an anchor ``a``, a positive ``p`` (same identity, another image) and a negative
``n`` (another identity); with distances ``d`` between L2-normalised embeddings the loss of
a triplet is ``max(0, d(a,p) - d(a,n) + margin)`` (``soft=True``: ``softplus(d(a,p) -
d(a,n))``, Hermans et al. 2017, no margin to tune). Which triplets of a batch count:

* ``batch_all`` — every valid triplet, averaged over those with a non-zero loss (Hermans et
  al.'s "BA≠0": averaging over all of them lets the many easy ones wash the signal out);
  with ``soft=True`` every term is non-zero and all are averaged;
* ``batch_hard`` — per anchor, its farthest positive and nearest negative (Hermans et al.
  2017, "In Defense of the Triplet Loss"), averaged over the anchors that have both;
* ``semi_hard`` — per (anchor, positive) pair, the nearest negative farther than the positive
  but inside the margin (Schroff et al. 2015, FaceNet); a pair with none takes its farthest
  negative (the convention of TensorFlow Addons' ``TripletSemiHardLoss``); averaged over the
  pairs whose anchor has a negative.

Ties pick the first index (``argmax``/``argmin``), so the gradient goes to one element (exact
ties: two copies of one embedding can get distances an ulp apart from ``x @ x.T``, whose
rounding depends on the column; the nearer by that ulp wins, still one element). An
anchor without a positive in the batch (an identity with one image) forms no triplet; a batch
without any valid triplet gives a loss of 0 whose gradient is 0 everywhere (not NaN).

Batches need several images per identity: train with ``sampler=identity`` (P x K). Under DDP
with ``gather=True`` the anchors are this rank's samples and the positives and negatives come
from the global batch (gathered with their gradient), so negatives span every rank's
identities; DDP's average is then the gradient of the mean of the ranks' losses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from facerec.criteria.base import Criterion
from facerec.criteria.collectives import gather_batch

__all__ = ["DISTANCES", "MINERS", "TripletLoss"]


def squared_euclidean(x: Tensor, y: Tensor) -> Tensor:
    """``||x_i - y_j||^2 = 2 - 2 x_i . y_j`` of unit rows ``x (n, D)``, ``y (N, D)`` -> ``(n, N)``;
    clamped at 0 (rounding can make it slightly negative for equal rows)."""
    return (2.0 - 2.0 * x @ y.T).clamp_min(0.0)


def cosine(x: Tensor, y: Tensor) -> Tensor:
    """``1 - cos(x_i, y_j)`` of unit rows -> ``(n, N)``, in ``[0, 2]``."""
    return 1.0 - x @ y.T


DISTANCES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "squared_euclidean": squared_euclidean,
    "cosine": cosine,
}


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values[mask]``; 0 (still differentiable, with a zero gradient) when empty."""
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp_min(1)


class Mined:
    """What one mining pass found: the per-term ``gap = d(a,p) - d(a,n)`` and which terms count.

    Attributes:
        gaps: float tensor of any shape.
        valid: bool tensor of the same shape: the terms that are real triplets.
    """

    def __init__(self, gaps: Tensor, valid: Tensor) -> None:
        self.gaps = gaps
        self.valid = valid


def batch_all(d: Tensor, same: Tensor, diff: Tensor, margin: float) -> Mined:
    """Every triplet: gaps ``(n, N, N)`` indexed ``[anchor, positive, negative]``."""
    gaps = d.unsqueeze(2) - d.unsqueeze(1)
    return Mined(gaps, same.unsqueeze(2) & diff.unsqueeze(1))


def batch_hard(d: Tensor, same: Tensor, diff: Tensor, margin: float) -> Mined:
    """Per anchor its farthest positive and nearest negative: gaps ``(n,)``."""
    far = torch.where(same, d, -torch.inf).argmax(dim=1, keepdim=True)
    near = torch.where(diff, d, torch.inf).argmin(dim=1, keepdim=True)
    gaps = (d.gather(1, far) - d.gather(1, near)).squeeze(1)
    return Mined(gaps, same.any(dim=1) & diff.any(dim=1))


def semi_hard(d: Tensor, same: Tensor, diff: Tensor, margin: float) -> Mined:
    """Per (anchor, positive) the nearest negative with ``d(a,p) < d(a,n) < d(a,p) + margin``,
    else the farthest negative: gaps ``(n, N)`` indexed ``[anchor, positive]``."""
    d_an = d.unsqueeze(1)  # (n, 1, N): negatives along the last axis
    d_ap = d.unsqueeze(2)  # (n, N, 1)
    negative = diff.unsqueeze(1)
    inside = negative & (d_an > d_ap) & (d_an < d_ap + margin)
    nearest_inside = torch.where(inside, d_an, torch.inf).argmin(dim=2)  # (n, N)
    farthest = torch.where(diff, d, -torch.inf).argmax(dim=1, keepdim=True)  # (n, 1)
    chosen = torch.where(inside.any(dim=2), nearest_inside, farthest)
    gaps = d - d.gather(1, chosen)
    return Mined(gaps, same & diff.any(dim=1, keepdim=True))


MINERS: dict[str, Callable[[Tensor, Tensor, Tensor, float], Mined]] = {
    "batch_all": batch_all,
    "batch_hard": batch_hard,
    "semi_hard": semi_hard,
}


class TripletLoss(Criterion):
    """``(embeddings (B, D), labels (B,)) -> 0-d loss`` over the batch's mined triplets.

    No class centres: the checkpoint holds no head and the criterion has no parameters.

    Args:
        margin: ``α`` of the hinge (and of semi-hard mining's window); > 0.
        distance: ``squared_euclidean`` (in [0, 4]) or ``cosine`` (in [0, 2]) of the
            L2-normalised embeddings.
        mining: ``batch_all``, ``batch_hard`` or ``semi_hard`` (module docstring).
        soft: ``softplus(d(a,p) - d(a,n))`` instead of the hinge.
        gather: under DDP, mine over the global batch (else over each rank's own).
        rank, world_size, group: this process in its process group.
    """

    bounds: ClassVar[dict[str, tuple[float, float]]] = {"margin": (0.0, 4.0)}

    def __init__(
        self, margin: float = 0.2, distance: str = "squared_euclidean",
        mining: str = "batch_hard", soft: bool = False, gather: bool = True, rank: int = 0,
        world_size: int = 1, group: dist.ProcessGroup | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        for key, value, choices in (("distance", distance, DISTANCES), ("mining", mining, MINERS)):
            if value not in choices:
                raise ValueError(f"criterion.{key}={value!r} is not one of {sorted(choices)}")
        low, high = self.bounds["margin"]
        if not low < float(margin) <= high:
            raise ValueError(f"criterion.margin={margin} must be in ({low:g}, {high:g}]")
        self.margin = float(margin)
        self.options = {"margin": self.margin, "distance": distance, "mining": mining,
                        "soft": bool(soft)}  # fmt: skip
        self.distance = DISTANCES[distance]
        self.mine = MINERS[mining]
        self.soft = bool(soft)
        self.gather = bool(gather) and world_size > 1
        self.rank, self.world_size, self.group = rank, world_size, group
        self._stats: dict[str, Tensor] = {}

    @classmethod
    def build(
        cls, make_head: Callable[[int], nn.Module], num_classes: int, embedding_size: int, *,
        rank: int = 0, world_size: int = 1, seed: int = 0, **options,
    ) -> TripletLoss:  # fmt: skip
        """The trainer's factory (``configs/criterion/triplet.yaml``): no head is built."""
        return cls(rank=rank, world_size=world_size, **options)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Mean loss of the mined triplets of ``embeddings (B, D)`` with ``labels (B,)``.

        Returns:
            0-d float32 (float64 for float64 input); 0 with a zero gradient when the batch has
            no valid triplet.
        """
        # At least float32: distances of bf16/fp16 unit vectors lose the small gaps mining
        # compares.
        x = F.normalize(embeddings.to(torch.promote_types(embeddings.dtype, torch.float32)))
        everything, all_labels, start = x, labels, 0
        if self.gather:
            everything, all_labels, start = gather_batch(x, labels, self.rank, self.world_size,
                                                         self.group, grad_scale=1.0)  # fmt: skip
        d = self.distance(x, everything)  # (n, N): local anchors against the (global) batch
        itself = torch.arange(len(x), device=x.device) + start
        same = labels.unsqueeze(1) == all_labels.unsqueeze(0)
        same[torch.arange(len(x), device=x.device), itself] = False
        diff = labels.unsqueeze(1) != all_labels.unsqueeze(0)
        mined = self.mine(d, same, diff, self.margin)
        terms = F.softplus(mined.gaps) if self.soft else F.relu(mined.gaps + self.margin)
        violated = mined.gaps > (0.0 if self.soft else -self.margin)
        counted = mined.valid & violated if self.averages_active else mined.valid
        loss = _masked_mean(terms, counted)
        self._remember(d, same, diff, mined, violated)
        return loss

    @property
    def averages_active(self) -> bool:
        """Batch-all with the hinge averages over the non-zero terms only (module docstring)."""
        return self.mine is batch_all and not self.soft

    def _remember(self, d: Tensor, same: Tensor, diff: Tensor, mined: Mined, violated: Tensor):
        # Detached tensors, read back only when the trainer logs (no host sync per step).
        with torch.no_grad():
            self._stats = {
                "triplets_active": _masked_mean(violated.float(), mined.valid),
                "triplets_valid": mined.valid.sum().float(),
                "distance_positive": _masked_mean(d, same),
                "distance_negative": _masked_mean(d, diff),
            }

    def scalars(self) -> dict[str, float]:
        """The fraction of mined triplets that violate the margin (``triplets_active``), how
        many were valid, and the mean anchor-positive / anchor-negative distances."""
        return {name: float(value) for name, value in self._stats.items()}
