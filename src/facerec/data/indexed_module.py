"""The data-module set-up shared by ``data=packed`` and ``data=recordio``: one indexed dataset
(:class:`facerec.data.encoded.EncodedImages`), made once, reported, reused for training."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import albumentations as A
from torch.utils.data import Dataset

from facerec.data.encoded import DatasetInfo, EncodedImages
from facerec.data.module import DataModule, PairsSet
from facerec.data.transforms import augmentation

log = logging.getLogger(__name__)

__all__ = ["IndexedDataModule"]


class IndexedDataModule(DataModule):
    """A data module over one indexed dataset (a pack, a RecordIO file): set up once, its
    :class:`DatasetInfo` reported, reused as the training dataset.

    Subclasses implement :meth:`make` (and may check the dataset in :meth:`check`).

    Args:
        root: the pack folder or the folder of ``train.rec``.
        image_size: side of the training images.
        hflip: random horizontal flips.
        augment: further random transforms after the flip (``augment=...``; None: none).
        batch_size: images per step on each process.
        num_workers: DataLoader worker processes per training process.
        val: verification sets by name.
    """

    def __init__(self, root: str, image_size: int, hflip: bool, batch_size: int,
                 num_workers: int, val: Mapping[str, PairsSet] | None,
                 augment: A.BaseCompose | None = None) -> None:  # fmt: skip
        super().__init__(batch_size, num_workers, val)
        self.root = Path(root)
        self.image_size = image_size
        self.hflip = hflip
        self.augment = augment
        self.scan: DatasetInfo | None = None
        self._dataset: EncodedImages | None = None

    @property
    def source(self) -> Path:
        return self.root

    def make(self) -> EncodedImages:
        """A new dataset of ``root``."""
        raise NotImplementedError

    def check(self, dataset: EncodedImages) -> None:
        """Refuse a dataset that does not fit the config (raise ``ValueError``)."""

    @property
    def augmentation(self) -> A.Compose:
        """The random transforms of every training sample: the flip, then ``augment``."""
        return augmentation(self.hflip, self.augment)

    def dataset(self) -> EncodedImages:
        """The dataset, made on first use."""
        if self._dataset is None:
            self._dataset = self.make()
        return self._dataset

    def setup(self) -> DatasetInfo:
        dataset = self.dataset()
        self.check(dataset)
        self.scan = dataset.info
        log.info("training data %s: %s", self.root, self.scan.summary())
        return self.scan

    def train_dataset(self, scan: DatasetInfo, show_progress: bool) -> Dataset:
        return self.dataset()
