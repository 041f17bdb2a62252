"""Decoding on the training device (``data=packed data.decode=device``): nvjpeg on a GPU.

The loader workers then only slice JPEG bytes out of the memory-mapped shards and draw the
flip; the batch is decoded where it is trained, in one ``torchvision.io.decode_jpeg`` call.

The trainer needs no branch for it: a batch of bytes is an :class:`EncodedBatch`, which
answers the two things the loop does with an image batch, ``batch[keep]`` (drop unreadable
samples) and ``batch.to(device)``, which here *decodes* on ``device`` and returns the uint8
``(B, 3, S, S)`` images a decoded batch would have been.

Measured on an H100 (docs/performance.md): nvjpeg is bit-identical to libjpeg-turbo for
4:4:4 JPEGs but upsamples 4:2:0 chroma more crudely (2.5x the error against the source, no
bias), so packs meant for device decoding are best written with ``--chroma 444``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from facerec.data.decode import UnreadableImage, check_header, decode_image
from facerec.data.encoded import EncodedSource
from facerec.data.transforms import to_tensor
from facerec.data.unreadable import UNREADABLE, read_or_blank
from facerec.messages import first_line

log = logging.getLogger(__name__)


def decode_batch(data: Sequence[torch.Tensor], device: torch.device | str = "cpu") -> torch.Tensor:
    """Decode a batch of JPEGs with torchvision, on ``device`` (nvjpeg when it is a GPU).

    Args:
        data: B uint8 ``(L_i,)`` tensors of JPEG bytes, all decoding to the same size.
        device: where to decode.

    Returns:
        uint8 ``(B, 3, H, W)`` on ``device``.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    images = decode_jpeg(list(data), mode=ImageReadMode.RGB, device=device)
    return torch.stack(images)


def decode_cpu(data: torch.Tensor) -> torch.Tensor:
    """One JPEG decoded on the CPU as the loader workers do: uint8 ``(3, H, W)`` RGB.

    Raises:
        OSError: the bytes do not decode.
    """
    return to_tensor(decode_image(data.numpy(), "JPEG record"))


@dataclass
class EncodedBatch:
    """B JPEGs and their flips, decoded by :meth:`to`.

    The bytes travel as one tensor (not B small ones): a worker hands each tensor to the main
    process through its own shared-memory segment, and hundreds per batch would cost more
    than the decoding saves.

    Attributes:
        data: uint8 ``(sum L_i,)``: the B JPEGs back to back, all of one image size.
        lengths: int64 ``(B,)``: the byte length of each.
        flips: bool ``(B,)``: mirror image ``i`` after decoding.
    """

    data: torch.Tensor
    lengths: torch.Tensor
    flips: torch.Tensor

    @classmethod
    def of(cls, parts: Sequence[torch.Tensor], flips: Sequence[bool]) -> EncodedBatch:
        """From B uint8 ``(L_i,)`` byte tensors and their flips."""
        lengths = torch.tensor([len(p) for p in parts], dtype=torch.int64)
        data = torch.cat(list(parts)) if parts else torch.empty(0, dtype=torch.uint8)
        return cls(data, lengths, torch.tensor(list(flips), dtype=torch.bool))

    def parts(self) -> list[torch.Tensor]:
        """The B JPEGs as uint8 ``(L_i,)`` views."""
        return list(torch.split(self.data, self.lengths.tolist()))

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, keep: torch.Tensor) -> EncodedBatch:
        """The samples where the bool ``(B,)`` mask ``keep`` is true."""
        parts = self.parts()
        kept = torch.nonzero(keep).flatten().tolist()
        return EncodedBatch.of([parts[i] for i in kept], self.flips[keep].tolist())

    def pin_memory(self) -> EncodedBatch:
        # Called by the DataLoader's pinning thread; the decoder reads host bytes as they are.
        return self

    def to(self, device: torch.device | str, non_blocking: bool = False) -> torch.Tensor:
        """Decode on ``device`` (nvjpeg on CUDA) and flip: uint8 ``(B, 3, S, S)`` there.

        A JPEG the device decoder rejects (one torchvision/nvjpeg cannot handle but OpenCV
        could when it was packed) does not stop training: that batch is decoded with OpenCV
        on the CPU instead, and the fallback is logged.
        """
        parts = self.parts()
        try:
            images = decode_batch(parts, device)
        except RuntimeError as error:
            log.warning("device JPEG decoding failed (%s); this batch is decoded on the CPU",
                        first_line(error))  # fmt: skip
            images = torch.stack([decode_cpu(p) for p in parts])
        # Off CUDA, torchvision decodes on the CPU whatever the device: move the result.
        images = images.to(device, non_blocking=non_blocking)
        flips = self.flips.to(images.device).view(-1, 1, 1, 1)
        return torch.where(flips, images.flip(-1), images)


class EncodedView(Dataset):
    """An encoded dataset's samples (a pack) as JPEG bytes + a flip drawn from the sample's seed.

    Items: ``(index, seed) -> ((bytes uint8 (L,), flip), label)``. A record that fails its CRC
    or is not a JPEG of the dataset's size comes back as a black image with label -1 (logged),
    which the trainer drops before decoding, as with CPU decoding.

    Args:
        dataset: the pack, or any :class:`facerec.data.encoded.EncodedSource` of JPEGs.
        hflip: draw random horizontal flips (probability 1/2).
    """

    def __init__(self, dataset: EncodedSource, hflip: bool) -> None:
        self.dataset = dataset
        self.hflip = hflip
        self._blank: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def blank(self) -> torch.Tensor:
        """A valid black JPEG of the pack's size, standing in for an unreadable record."""
        if self._blank is None:
            size = self.dataset.image_size
            ok, buf = cv2.imencode(".jpg", np.zeros((size, size, 3), np.uint8))
            assert ok, "OpenCV cannot encode JPEG"
            self._blank = torch.from_numpy(buf.reshape(-1))
        return self._blank

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[tuple[torch.Tensor, bool], int]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        # The flip is a pure function of the sampler's seed, as CPU augmentation is.
        flip = self.hflip and bool(np.random.default_rng(seed).random() < 0.5)
        (data, label), ok = read_or_blank(
            lambda: self.checked(index), lambda: (self.blank, UNREADABLE)
        )
        return (data, flip and ok), label

    def checked(self, index: int) -> tuple[torch.Tensor, int]:
        """Sample ``index``'s bytes and label, its header checked here in the worker: the
        batch decoder stacks its images, so each must be a JPEG of the dataset's size (and a
        header claiming 65000x65000 never reaches the device).

        Raises:
            OSError: naming the record: corrupt, or not a JPEG of that size.
        """
        data, label = self.dataset.encoded(index)
        where = self.dataset.where(index)
        header = check_header(data.numpy(), where)
        size = self.dataset.image_size
        if header.format != "JPEG" or (header.width, header.height) != (size, size):
            raise UnreadableImage(
                f"{where}: a {header.width}x{header.height} {header.format}, not the"
                f" {size}x{size} JPEG that device decoding takes"
            )
        return data, label


def collate_encoded(
    items: Sequence[tuple[tuple[torch.Tensor, bool], int]],
) -> tuple[EncodedBatch, torch.Tensor]:
    """DataLoader ``collate_fn`` for :class:`EncodedView`: ``(EncodedBatch, labels (B,))``."""
    batch = EncodedBatch.of([d for (d, _), _ in items], [f for (_, f), _ in items])
    return batch, torch.tensor([label for _, label in items], dtype=torch.int64)
