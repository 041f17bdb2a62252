"""Run by torchrun from test_distill.py: ``criterion=distill`` through the recognizer's own DDP
wrapper on 2 gloo ranks (uneven batches), the averaged gradients saved per rank.

Usage: torchrun --nproc_per_node=2 tests/distill_worker.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from facerec import distributed
from facerec.criteria import MarginLoss
from facerec.criteria.distill import DistillationLoss
from facerec.heads.cosface import CosFace
from facerec.model import Recognizer

WORLD, SIZES, CLASSES, DIM, WEIGHT = 2, (5, 3), 5, 8, 0.7


class Pixels(nn.Module):
    """uint8 ``(B, 3, 4, 4)`` -> ``(B, DIM)`` float64, one linear layer."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(48, DIM).double()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.flatten(1).double() / 255.0)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch: images ``(8, 3, 4, 4)`` uint8 and labels ``(8,)``."""
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (sum(SIZES), 3, 4, 4), dtype=torch.uint8, generator=gen)
    return images, torch.randint(0, CLASSES, (sum(SIZES),), generator=gen)


def head() -> CosFace:
    torch.manual_seed(3)
    return CosFace(DIM, CLASSES, s=30.0, m=0.35).double()


def main(out: Path) -> None:
    env = distributed.init("cpu")
    start = sum(SIZES[: env.rank])
    images, labels = (t[start : start + SIZES[env.rank]] for t in batch())
    teacher = Pixels(seed=2)
    criterion = DistillationLoss(MarginLoss(head()), teacher, WEIGHT, "cosine")
    recognizer = Recognizer(Pixels(seed=1), criterion)
    ddp = recognizer.data_parallel(None)  # held: a collected wrapper syncs nothing
    loss = ddp(images, labels)
    loss.backward()
    torch.save({"loss": loss.detach(), "grads": [p.grad for p in recognizer.parameters()],
                "teacher_grads": [p.grad for p in teacher.parameters()]},
               out / f"rank{env.rank}.pt")  # fmt: skip
    distributed.cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
