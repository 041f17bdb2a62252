"""``data=packed``: training data from a pack folder, decoded by the workers or on the device."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import albumentations as A
from torch.utils.data import Dataset

from facerec.data.device_decode import EncodedView, collate_encoded
from facerec.data.encoded import DatasetInfo
from facerec.data.indexed_module import IndexedDataModule
from facerec.data.module import PairsSet
from facerec.data.packed import PackedDataset

__all__ = ["PackedDataModule"]


class PackedDataModule(IndexedDataModule):
    """Training data from a pack folder (``scripts/pack_dataset.py``).

    Args:
        root: the pack folder.
        image_size: side of the training images; must be the pack's (checked), since the
            verification sets are resized to it too.
        hflip: random horizontal flips.
        augment: further random transforms after the flip (``augment=...``; not with
            ``decode=device``).
        batch_size: images per step on each process.
        num_workers: DataLoader worker processes per training process.
        verify: check each record's CRC before decoding.
        decode: ``workers`` (OpenCV in the DataLoader workers) or ``device`` (the workers only
            slice bytes; each batch is decoded on the training device, with nvjpeg on a GPU:
            :mod:`facerec.data.device_decode`). With ``device`` the only augmentation is the
            flip.
        val: verification sets by name.
    """

    DECODE = ("workers", "device")

    def __init__(
        self,
        root: str,
        image_size: int = 112,
        hflip: bool = True,
        batch_size: int = 128,
        num_workers: int = 2,
        verify: bool = True,
        decode: str = "workers",
        val: Mapping[str, PairsSet] | None = None,
        augment: A.BaseCompose | None = None,
    ) -> None:
        super().__init__(root, image_size, hflip, batch_size, num_workers, val, augment)
        if decode == "device" and augment is not None and augment.transforms:
            raise ValueError(
                "data.decode=device decodes whole batches on the device and can only flip them;"
                " use augment=none or data.decode=workers"
            )
        if decode not in self.DECODE:
            raise ValueError(f"data.decode={decode!r}: choose one of {list(self.DECODE)}")
        if decode == "device" and not verify:
            # The workers only slice bytes: the CRC is the one check before the batch decode.
            raise ValueError(
                "data.decode=device needs data.verify=true: without the CRC check a corrupt"
                " record is only found when its whole batch fails to decode"
            )
        self.verify = verify
        self.decode = decode

    def make(self) -> PackedDataset:
        return PackedDataset(self.root, self.augmentation, self.verify)

    def check(self, dataset: PackedDataset) -> None:
        if dataset.image_size != self.image_size:
            raise ValueError(
                f"{self.root}: the pack holds {dataset.image_size}x{dataset.image_size} images,"
                f" data.image_size is {self.image_size}"
            )

    def train_dataset(self, scan: DatasetInfo, show_progress: bool) -> Dataset:
        dataset = self.dataset()
        return EncodedView(dataset, self.hflip) if self.decode == "device" else dataset

    @property
    def collate_fn(self) -> Callable | None:
        return collate_encoded if self.decode == "device" else None
