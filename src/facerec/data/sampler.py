"""A distributed sampler that can start in the middle of an epoch."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[tuple[int, int]]):
    """Shuffles per epoch like ``DistributedSampler`` and can skip what was already trained.

    Yields ``(index, sample_seed)``: the seed makes each sample's random augmentation a pure
    function of (seed, epoch, index), independent of worker count and of interruptions.

    Every rank draws the same permutation (seeded by ``seed + epoch``), pads it by wrapping
    around to a multiple of ``num_replicas`` and takes every ``num_replicas``-th index from
    ``rank``. ``set_epoch(epoch, start)`` skips the first ``start`` indices of this rank's
    share, so a run resumed mid-epoch sees exactly the samples the interrupted run had left,
    without loading the skipped ones.
    """

    def __init__(
        self, size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.size = size
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.num_samples = math.ceil(size / num_replicas)
        self.epoch = 0
        self.start = 0

    @classmethod
    def build(
        cls, dataset: Sized, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0
    ) -> ResumableSampler:
        """The loader's factory (``configs/sampler/uniform.yaml``): every sample of ``dataset``
        once per epoch, whatever the batch size."""
        return cls(len(dataset), num_replicas, rank, seed)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        total = self.num_samples * self.num_replicas
        order = order.repeat(math.ceil(total / self.size))[:total]
        mine = order[self.rank :: self.num_replicas][self.start :].tolist()
        base = (self.seed * 1_000_003 + self.epoch) * self.size
        return iter([(index, base + index) for index in mine])

    def __len__(self) -> int:
        return self.num_samples - self.start
