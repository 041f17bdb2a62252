"""Datasets of encoded images in memory-mapped files (packs, RecordIO): the shared base.

:class:`EncodedImages` decodes, crops and augments a sample whose bytes a subclass finds;
:class:`EncodedSource` is what the device decoder needs of such a dataset (both formats
satisfy it); :class:`DatasetInfo` is what such a dataset reports of itself. The data-module
set-up both formats share is :mod:`facerec.data.indexed_module`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from facerec.data.decode import decode_image
from facerec.data.transforms import augmentation, geometry, seed_augmentation, to_tensor
from facerec.data.unreadable import UNREADABLE, blank_image, read_or_blank

__all__ = ["DatasetInfo", "EncodedImages", "EncodedSource"]


@dataclass(frozen=True)
class DatasetInfo:
    """What ``setup()`` of an indexed dataset (pack, RecordIO) found.

    Attributes:
        source: the pack folder or ``.rec`` file.
        kind: ``"pack"`` or ``"recordio"`` (messages).
        classes: identity names; class index = position in this list.
        num_images: samples in the set.
        details: extra words for :meth:`summary` (shards, image size, ...).
    """

    source: Path
    kind: str
    classes: list[str]
    num_images: int
    details: str = ""

    @property
    def paths(self) -> range:
        """One entry per sample (sample ids), as :class:`FolderScan.paths` has one per image."""
        return range(self.num_images)

    def summary(self) -> str:
        extra = f" ({self.details})" if self.details else ""
        return f"{len(self.classes)} identities, {self.num_images} images in a {self.kind}{extra}"


class EncodedImages(Dataset):
    """Base of datasets whose samples are encoded images in memory-mapped files.

    Items are ``(image uint8 (3, S, S), label int)``; an item may be ``(index, seed)`` to fix
    that sample's augmentation (see :class:`facerec.data.sampler.ResumableSampler`). A sample
    whose record is corrupt (:meth:`record` or decoding raises ``OSError``) is logged and comes
    back blank with label -1, which the trainer drops, as :class:`FaceFolder` does.

    Subclasses implement :meth:`_open` (memory maps, opened lazily once per process: after a
    DataLoader forks its workers, each maps the files itself) and :meth:`record`.

    Args:
        augment: random part, applied per sample (None: none).
        image_size: side ``S`` of the images returned.
        center_crop: centre crop taken before resizing images that are not already ``S x S``
            (None: none).
    """

    def __init__(
        self,
        augment: A.Compose | None = None,
        image_size: int = 112,
        center_crop: int | None = None,
    ) -> None:
        self.augment = augment if augment is not None else augmentation(False)
        self.image_size = image_size
        self.center_crop = center_crop
        self.geometry = geometry(image_size, center_crop)
        self._maps: object = None
        self._pid: int | None = None

    def _open(self) -> object:
        """Map the files; called in each process that reads (never pickled to workers)."""
        raise NotImplementedError

    @property
    def maps(self) -> object:
        """This process's memory maps, opened on first use."""
        if self._maps is None or self._pid != os.getpid():
            self._maps, self._pid = self._open(), os.getpid()
        return self._maps

    def __getstate__(self) -> dict:
        # Spawned workers get the paths, not the parent's maps; they map the files themselves.
        state = self.__dict__.copy()
        state["_maps"], state["_pid"] = None, None
        return state

    def record(self, index: int) -> tuple[np.ndarray, int]:
        """Encoded bytes uint8 ``(L,)`` and label of sample ``index``.

        Raises:
            OSError: naming the file and record, when the record is corrupt.
        """
        raise NotImplementedError

    def where(self, index: int) -> str:
        """How to name sample ``index`` in messages."""
        return f"sample {index}"

    def encoded(self, index: int) -> tuple[torch.Tensor, int]:
        """Encoded bytes of sample ``index`` as an owned uint8 ``(L,)`` tensor (for decoding
        elsewhere: the memory-map slice is copied, a worker can hand it on) and its label.

        Raises:
            OSError: naming the file and record, when the record is corrupt.
        """
        data, label = self.record(index)
        return torch.from_numpy(np.array(data)), label

    def load(self, index: int) -> tuple[np.ndarray, int]:
        """Decoded image ``index``, uint8 ``(S, S, 3)`` RGB, and its label.

        Raises:
            OSError: the record is corrupt or does not decode.
        """
        data, label = self.record(index)
        image = decode_image(data, self.where(index))
        size = self.image_size
        if self.center_crop or image.shape[:2] != (size, size):
            image = self.geometry(image=image)["image"]
        return image, label

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """``item``: an index, or ``(index, seed)`` to fix this sample's augmentation."""
        index, seed = item if isinstance(item, tuple) else (item, None)
        (image, label), ok = read_or_blank(lambda: self.load(index), lambda: (None, UNREADABLE))
        if not ok:
            return blank_image(self.image_size), UNREADABLE
        if self.augment.transforms:  # an empty Compose still costs a call per sample
            if seed is not None:
                seed_augmentation(self.augment, seed)
            image = self.augment(image=image)["image"]
        return to_tensor(image), label


class EncodedSource(Protocol):
    """What :class:`facerec.data.device_decode.EncodedView` needs of a dataset."""

    image_size: int

    def __len__(self) -> int: ...

    def encoded(self, index: int) -> tuple[torch.Tensor, int]:
        """Encoded bytes uint8 ``(L,)`` of sample ``index`` and its label (``OSError`` if
        corrupt)."""
        ...

    def where(self, index: int) -> str:
        """How to name sample ``index`` in messages."""
        ...
