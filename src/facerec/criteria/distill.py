"""Knowledge distillation: a margin loss plus ``λ ×`` the distance to a teacher's embedding.

The student learns its classes as usual (any margin head, ``head=...``) and, on the same
images, is pulled towards the embedding a trained teacher gives them (Hinton et al. 2015 in
spirit; matching embeddings rather than logits, as the teacher's classes need not be the
student's). The teacher is a plain callable here, ``uint8 images (B, 3, H, W) -> (B, D)``: it
is run, never trained, and is deliberately *not* a submodule — its parameters are not in the
recognizer's ``state_dict``, the optimizer, DDP's buckets or any checkpoint. Loading it (any
model file facerec reads) and checking that it sees the student's images is the training
side's (:mod:`facerec.training.teacher`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facerec.criteria.base import Criterion

__all__ = ["DISTANCES", "DistillationLoss", "embedding_distance"]

Teacher = Callable[[Tensor], Tensor]


def _cosine(student: Tensor, teacher: Tensor) -> Tensor:
    return 1.0 - (student * teacher).sum(dim=1)


def _squared_l2(student: Tensor, teacher: Tensor) -> Tensor:
    return (student - teacher).pow(2).sum(dim=1)


# d(ŝ, t̂) per sample, of L2-normalised embeddings: cosine = 1 - cos in [0, 2]; l2 = |ŝ - t̂|²
# in [0, 4], which for unit vectors is exactly 2 × cosine (a recipe's λ may be stated for either).
DISTANCES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "cosine": _cosine,
    "l2": _squared_l2,
}


def embedding_distance(student: Tensor, teacher: Tensor, distance: str) -> Tensor:
    """Mean over the batch of ``distance`` between the L2-normalised rows.

    Args:
        student, teacher: ``(B, D)`` float embeddings, not normalised.
        distance: ``cosine`` (``1 - cos``) or ``l2`` (squared Euclidean of unit vectors).

    Returns:
        0-d, in the promoted dtype of the two (at least float32).
    """
    dtype = torch.promote_types(torch.promote_types(student.dtype, teacher.dtype), torch.float32)
    s = F.normalize(student.to(dtype), dim=1)
    t = F.normalize(teacher.to(dtype), dim=1)
    return DISTANCES[distance](s, t).mean()


def _teacher_autocast(device: torch.device) -> torch.autocast:
    """bf16 on CUDA (fp16 where the card has no bf16); off on the CPU, even inside the
    student's CPU autocast: the teacher runs plain there."""
    if device.type != "cuda":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


class DistillationLoss(Criterion):
    """``base(student, labels) + weight × d(student, teacher(images))`` -> 0-d loss.

    Args:
        base: the margin loss (its head is the one trained, saved and reported).
        teacher: ``uint8 images (B, 3, H, W) -> embeddings (B, D)`` on the images' device; run
            under ``no_grad`` (and bf16 autocast on CUDA). Kept out of the module tree.
        weight: λ >= 0 (0: the margin loss alone, the teacher still run).
        distance: a key of :data:`DISTANCES`.

    Raises:
        ValueError: ``base`` is sharded, ``weight`` not finite and >= 0, or ``distance`` unknown
            (naming the key).
    """

    def __init__(self, base: Criterion, teacher: Teacher, weight: float, distance: str) -> None:
        super().__init__()
        if not base.replicated:
            raise ValueError("criterion=distill: the margin loss must be replicated")
        if not (math.isfinite(float(weight)) and float(weight) >= 0):
            raise ValueError(f"criterion.weight={weight} must be a finite number >= 0")
        if distance not in DISTANCES:
            raise ValueError(
                f"criterion.distance={distance!r} is not one of {', '.join(DISTANCES)}"
            )
        self.base = base
        # object.__setattr__: an nn.Module teacher would otherwise become a submodule (its
        # weights trained, saved, synchronised); it is only ever run.
        object.__setattr__(self, "teacher", teacher)
        self.weight = float(weight)
        self.distance = distance
        self._last: dict[str, Tensor] = {}

    @property
    def head(self) -> nn.Module:
        """The base loss's margin head (a property, so it is registered once, under ``base``);
        the checkpoint's ``head`` entry is its ``state_dict`` as for ``criterion=margin``."""
        return self.base.head

    def loss(self, model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
        """The student's embeddings with gradient, the teacher's without, then :meth:`forward`.

        Args:
            model: the student, ``images -> (B, D)``.
            images: ``(B, 3, H, W)`` uint8, as the loaders ship them (each model normalises
                its own input).
            labels: ``(B,)`` int64.
        """
        student = model(images)
        with torch.no_grad(), _teacher_autocast(images.device):
            target = self.teacher(images)
        return self(student, labels, target.detach())

    def forward(self, embeddings: Tensor, labels: Tensor, teacher: Tensor) -> Tensor:
        """``base(embeddings, labels) + weight × distance(embeddings, teacher)``.

        Args:
            embeddings: ``(B, D)`` student embeddings, not normalised.
            labels: ``(B,)`` int64.
            teacher: ``(B, D)`` teacher embeddings (no gradient), not normalised.
        """
        margin = self.base(embeddings, labels)
        distance = embedding_distance(embeddings, teacher, self.distance)
        self._last = {"margin_loss": margin.detach(), "distance": distance.detach()}
        return margin + self.weight * distance.to(margin.dtype)

    def scalars(self) -> dict[str, float]:
        """The base's scalars, its loss and the distance to the teacher (``distill/...``)."""
        out = self.base.scalars()
        out.update({f"distill/{key}": float(value) for key, value in self._last.items()})
        return out
