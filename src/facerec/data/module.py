"""What every ``data=...`` config shares: the data-module base (loader, sharding), verification
sets over an image folder and the unlabelled image lists they and the tools read.

The data modules themselves: :mod:`facerec.data.folder_module` (identity folders, LFW),
:mod:`facerec.data.packed_module` and :mod:`facerec.data.recordio` (indexed files).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from facerec.data.decode import read_image
from facerec.data.pairs import read_pairs
from facerec.data.sampler import ResumableSampler
from facerec.data.transforms import geometry, to_tensor
from facerec.data.unreadable import blank_image, read_or_blank


class ImageList(Dataset):
    """Images without labels, geometry only: uint8 ``(3, H, W)`` per item (evaluation, caching)."""

    def __init__(self, paths: list[Path], image_size: int, center_crop: int | None) -> None:
        self.paths = paths
        self.image_size = image_size
        self.geometry = geometry(image_size, center_crop)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_tensor(self.geometry(image=read_image(self.paths[index]))["image"])


class TolerantImages(Dataset):
    """``(image, True)``, or a blank image and False for an unreadable file (logged)."""

    def __init__(self, images: ImageList) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, bool]:
        size = self.images.image_size
        return read_or_blank(lambda: self.images[index], lambda: blank_image(size))


@dataclass(frozen=True)
class Pairs:
    """A loaded verification list: each distinct image once, pairs as indices into it.

    Attributes:
        images: the M distinct images, as keys the set's ``dataset()`` takes: file paths for
            :class:`PairsSet`, positions in the pack for :class:`facerec.data.binpack.BinSet`.
        index: ``(N, 2)`` int64 positions in ``images`` of each pair.
        issame: ``(N,)`` bool, True for same-identity pairs.
    """

    images: list[Path] | list[int]
    index: np.ndarray
    issame: np.ndarray


class PairsSet:
    """A verification set: an LFW-format pairs file over an image folder.

    Args:
        pairs_file: ``pairs.txt``-style list (see :func:`facerec.data.pairs.read_pairs`).
        image_root: folder holding ``<name>/<name>_<NNNN>.jpg``.
        center_crop: side of the centre crop taken before resizing (None: no crop).
        image_size: side of the square images given to the model.
    """

    def __init__(
        self,
        pairs_file: str,
        image_root: str,
        center_crop: int | None = None,
        image_size: int = 112,
    ) -> None:
        self.pairs_file = Path(pairs_file)
        self.image_root = Path(image_root)
        self.center_crop = center_crop
        self.image_size = image_size

    @property
    def name(self) -> str:
        """The pairs file's name (progress bars, messages)."""
        return self.pairs_file.name

    def load(self) -> Pairs:
        """Parse the pairs file; every image is listed once however many pairs use it."""
        pairs, issame = read_pairs(self.pairs_file, self.image_root)
        position: dict[Path, int] = {}
        index = np.array(
            [[position.setdefault(p, len(position)) for p in pair] for pair in pairs],
            dtype=np.int64,
        )
        return Pairs(list(position), index, np.asarray(issame, dtype=bool))

    def dataset(self, images: list[Path]) -> Dataset:
        return ImageList(images, self.image_size, self.center_crop)


class DataModule:
    """What the trainer uses of a ``data=...`` config; subclasses say where the samples come from.

    The trainer calls ``setup()`` (returns a scan with ``classes``, ``paths`` (one entry per
    sample) and ``summary()``), ``train_loader(...)`` and reads ``batch_size``, ``num_workers``
    and ``val``. A subclass implements ``setup()`` and ``train_dataset()``; the loader
    construction (sharding, resumable sampler, full batches) is shared here.

    Args:
        batch_size: images per step on each process.
        num_workers: DataLoader worker processes per training process.
        val: verification sets by name.
    """

    def __init__(
        self, batch_size: int, num_workers: int, val: Mapping[str, PairsSet] | None
    ) -> None:
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val = dict(val or {})
        self.scan = None

    @property
    def source(self) -> Path:
        """Where the training samples are read from (named in messages)."""
        raise NotImplementedError

    @property
    def loader_workers(self) -> int:
        """Worker processes the training loader uses (``num_workers`` unless nothing to do)."""
        return self.num_workers

    def setup(self):
        """Index the training samples (fast: no image is decoded) and report what was found."""
        raise NotImplementedError

    def train_dataset(self, scan, show_progress: bool) -> Dataset:
        """The training set for ``scan``: items ``(index, seed) -> (uint8 (3,H,W), label)``."""
        raise NotImplementedError

    @property
    def collate_fn(self) -> Callable | None:
        """How the loader batches items (None: PyTorch's default stacking)."""
        return None

    @property
    def classes(self) -> list[str]:
        if self.scan is None:
            raise RuntimeError("call setup() first")
        return self.scan.classes

    def train_loader(
        self, rank: int = 0, world_size: int = 1, seed: int = 0, show_progress: bool = True,
        sampler: Callable[..., Sampler] | None = None,
    ) -> DataLoader:  # fmt: skip
        """Shuffled, sharded loader of ``(images uint8 (B,3,H,W), labels (B,))``, full batches only.

        Args:
            sampler: ``sampler(dataset, batch_size=, num_replicas=, rank=, seed=)`` (the
                ``sampler=...`` config group); default the uniform :class:`ResumableSampler`.
                Either way call ``loader.sampler.set_epoch(epoch, start)``.
        """
        scan = self.scan or self.setup()
        if len(scan.paths) < self.batch_size * world_size:
            raise ValueError(
                f"{self.source}: {len(scan.paths)} images cannot fill one batch of"
                f" {self.batch_size} on each of {world_size} process(es); lower data.batch_size"
            )
        dataset = self.train_dataset(scan, show_progress)
        make_sampler = sampler or ResumableSampler.build
        sampler = make_sampler(dataset, batch_size=self.batch_size, num_replicas=world_size,
                               rank=rank, seed=seed)  # fmt: skip
        workers = self.loader_workers
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=workers,
            collate_fn=self.collate_fn,
            pin_memory=torch.cuda.is_available(),
            drop_last=True,  # equal batches on all ranks; BatchNorm needs more than one sample
            persistent_workers=workers > 0,
        )
