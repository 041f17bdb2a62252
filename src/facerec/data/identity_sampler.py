"""A P x K sampler: each batch holds P identities with K images each (``sampler=identity``).

Pair and triplet losses mine inside the batch, so every identity in it needs several images;
the uniform shuffle of :class:`facerec.data.sampler.ResumableSampler` gives most identities
one. This sampler follows the usual recipe (Hermans et al. 2017; torchreid's
``RandomIdentitySampler``): every epoch each identity's images are shuffled and cut into groups
of K; a batch takes one group from each of P identities drawn among those with groups left.

* An identity with fewer than K images is sampled *with replacement* up to K
  (``small="replace"``) or left out (``small="skip"``, counted in :attr:`skipped`);
  identities with a single image are warned about (their positives are copies), and labels
  where no identity has two images are refused: nothing could be learnt.
* Deterministic from ``(seed, epoch)``; ``set_epoch(epoch, start)`` skips the first ``start``
  samples of this rank's share, so a run resumed mid-epoch sees exactly what was left.
* Under DDP every rank draws the same sequence of *global* batches of ``world_size x P``
  distinct identities and takes its own P of them: no identity is on two ranks in one step.
* Every epoch has the same number of batches: the groups an epoch could form, divided by
  ``world_size x P``; when too few identities have groups left before that, every identity's
  groups are dealt again (a fresh shuffle).

Yields ``(index, sample_seed)`` like the uniform sampler; the seed is unique per position, so
two copies of one image drawn with replacement get different augmentations.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

log = logging.getLogger(__name__)

__all__ = ["IdentitySampler"]


class IdentitySampler(Sampler[tuple[int, int]]):
    """P x K batches of ``labels``' identities for one rank.

    Args:
        labels: ``(N,)`` identity of every sample (int; negative labels are never drawn).
        batch_size: samples per batch on each rank, ``P x K``.
        images_per_identity: K, >= 2 (a triplet needs a positive); divides ``batch_size``.
        small: ``replace`` or ``skip`` for identities with fewer than K images.
        num_replicas, rank: the DDP world size and this process's rank.
        seed: the run's seed.

    Raises:
        ValueError: naming the key, for an impossible K or too few identities to fill a batch,
            or when no identity has 2 images (no positive pair: nothing to learn).
    """

    def __init__(
        self, labels: Sequence[int] | np.ndarray, batch_size: int, images_per_identity: int = 4,
        small: str = "replace", num_replicas: int = 1, rank: int = 0, seed: int = 0,
    ) -> None:  # fmt: skip
        k = int(images_per_identity)
        if k < 2 or batch_size % k:
            raise ValueError(
                f"sampler.images_per_identity={images_per_identity} must be >= 2 and divide"
                f" data.batch_size={batch_size}"
            )
        if small not in ("replace", "skip"):
            raise ValueError(f"sampler.small={small!r} must be 'replace' or 'skip'")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        labels = np.asarray(labels, dtype=np.int64)
        order = np.argsort(labels, kind="stable")
        ids, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        if not (counts[ids >= 0] >= 2).any():
            raise ValueError(
                f"sampler=identity: no identity has 2 or more images ({int((ids >= 0).sum())}"
                " identities, one image each): a P x K batch could only pair an image with"
                " copies of itself, so no triplet is ever mined and nothing is learnt; train on"
                " identities with several images (data.min_images=2) or use sampler=uniform"
            )
        keep = (ids >= 0) & ((counts >= k) | (small == "replace"))
        self.members = [order[s : s + c] for s, c, ok in zip(starts, counts, keep, strict=True)
                        if ok]  # fmt: skip
        self.skipped = int((ids >= 0).sum() - len(self.members))
        self.k, self.p = k, batch_size // k
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.groups = sum(max(1, len(m) // k) for m in self.members)
        per_step = self.p * num_replicas
        if len(self.members) < per_step:
            raise ValueError(
                f"sampler=identity: {len(self.members)} identities with images (after"
                f" {self.skipped} skipped with fewer than K={k}) cannot fill one step of"
                f" P={self.p} x {num_replicas} process(es); lower data.batch_size or"
                " sampler.images_per_identity"
            )
        self.batches = max(1, self.groups // per_step)
        self.epoch = 0
        self.start = 0
        if self.skipped:
            log.warning("sampler=identity: %d identities with fewer than %d images skipped",
                        self.skipped, k)  # fmt: skip
        single = int(((ids >= 0) & (counts == 1)).sum()) if small == "replace" else 0
        if single:
            log.warning(
                "sampler=identity: %d of %d identities have a single image: their K=%d images"
                " are copies of it (augmented at most), positives that teach little"
                " (data.min_images=2 leaves them out)", single, len(self.members), k,
            )  # fmt: skip

    @classmethod
    def build(
        cls, dataset: Dataset, batch_size: int, num_replicas: int = 1, rank: int = 0,
        seed: int = 0, **options,
    ) -> IdentitySampler:  # fmt: skip
        """The loader's factory (``configs/sampler/identity.yaml``): the identities are the
        dataset's ``labels`` (folders, packs and RecordIO files all have them)."""
        labels = getattr(dataset, "labels", None)
        if labels is None:
            raise ValueError(f"sampler=identity needs per-sample labels; {type(dataset).__name__}"
                             " has none")  # fmt: skip
        return cls(labels, batch_size, num_replicas=num_replicas, rank=rank, seed=seed, **options)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def _deal(self, generator: torch.Generator) -> list[list[np.ndarray]]:
        """Every identity's images shuffled and cut into groups of K (padded by drawing with
        replacement when it has fewer than K)."""
        dealt = []
        for members in self.members:
            shuffled = members[torch.randperm(len(members), generator=generator).numpy()]
            if len(shuffled) < self.k:
                extra = torch.randint(len(members), (self.k - len(members),), generator=generator)
                shuffled = np.concatenate([shuffled, members[extra.numpy()]])
            whole = len(shuffled) // self.k
            dealt.append([shuffled[i * self.k : (i + 1) * self.k] for i in range(whole)])
        return dealt

    def global_batches(self) -> Iterator[list[np.ndarray]]:
        """This epoch's global batches: ``world_size x P`` groups of K, distinct identities."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        per_step = self.p * self.num_replicas
        dealt = self._deal(generator)
        for _ in range(self.batches):
            left = [i for i, groups in enumerate(dealt) if groups]
            if len(left) < per_step:
                dealt = self._deal(generator)
                left = list(range(len(dealt)))
            chosen = torch.randperm(len(left), generator=generator)[:per_step].tolist()
            yield [dealt[left[c]].pop() for c in chosen]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        mine: list[int] = []
        for groups in self.global_batches():
            for group in groups[self.rank * self.p : (self.rank + 1) * self.p]:
                mine += group.tolist()
        # A seed per position, unique across epochs and ranks (not per image: see the module
        # docstring).
        per_epoch = self.batches * self.p * self.k
        first = ((self.seed * 1_000_003 + self.epoch) * self.num_replicas + self.rank) * per_epoch
        seeds = range(first, first + len(mine))
        return iter(list(zip(mine, seeds, strict=True))[self.start :])

    def __len__(self) -> int:
        return self.batches * self.p * self.k - self.start
