"""Run by torchrun from test_triplet.py: the triplet loss mined over the global batch on 2 gloo
ranks (uneven batch sizes), DDP-averaged gradients saved per rank.

Usage: torchrun --nproc_per_node=2 tests/triplet_worker.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from facerec import distributed
from facerec.criteria import TripletLoss

WORLD = 2
MININGS = ("batch_all", "batch_hard", "semi_hard")
SIZES = (5, 3)
# Identity 1 spans both ranks; identity 3 exists only on rank 1: its positives and some
# negatives of rank 0's anchors are on the other rank.
LABELS = (torch.tensor([0, 0, 1, 2, 2]), torch.tensor([1, 3, 3]))


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(5, 6).double()


def inputs() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(sum(SIZES), 5, dtype=torch.float64)


def main(out: Path) -> None:
    env = distributed.init("cpu")
    rank = env.rank
    start = sum(SIZES[:rank])
    x = inputs()[start : start + SIZES[rank]]
    results = {}
    for mining in MININGS:
        ddp = DistributedDataParallel(model())
        criterion = TripletLoss(margin=0.5, mining=mining, rank=rank, world_size=WORLD)
        loss = criterion(ddp(x), LABELS[rank])
        loss.backward()
        results[mining] = {"loss": loss.detach(),
                           "grads": [p.grad.clone() for p in ddp.module.parameters()]}  # fmt: skip
    torch.save(results, out / f"rank{rank}.pt")
    distributed.cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
