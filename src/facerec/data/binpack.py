"""insightface verification packs (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``) without mxnet.

A pack is one pickle of ``(bins, issame_list)``:

* ``bins``: ``2 * N`` encoded images (JPEG or PNG file contents), the two images of pair ``i``
  at positions ``2i`` and ``2i + 1``; insightface's own packs hold aligned 112x112 faces.
* ``issame_list``: ``N`` booleans, True for same-identity pairs, in the protocol's order (so
  :func:`facerec.eval.make_folds` recovers the folds).

insightface reads them with ``pickle.load(f, encoding="bytes")`` (the released packs were
written by Python 2, whose ``str`` becomes ``bytes`` that way), then ``mx.image.imdecode`` on each
entry. :func:`read_bin` does the same with OpenCV, through an unpickler that only rebuilds plain
containers, bytes and numpy arrays (:mod:`facerec.data.pack_pickle`): a pickle can run arbitrary
code, a ``.bin`` from the internet should not be able to. :func:`write_bin` writes the same
format (as insightface's ``lfw2pack.py``), :func:`pack_pairs` turns an LFW-format pairs list
into a pack and :class:`BinSet` is a verification set next to
:class:`facerec.data.module.PairsSet`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from facerec.data.decode import check_decodes, decode_image
from facerec.data.module import Pairs
from facerec.data.pack_pickle import load_pack_pickle
from facerec.data.transforms import geometry, to_tensor

__all__ = ["BinPack", "BinSet", "read_bin"]


@dataclass(frozen=True)
class BinPack:
    """The contents of a verification pack.

    Attributes:
        images: ``2N`` encoded images (bytes), pair ``i`` at ``2i`` and ``2i + 1``.
        issame: ``(N,)`` bool, True for same-identity pairs.
    """

    images: list[bytes]
    issame: np.ndarray

    def __len__(self) -> int:
        return int(self.issame.size)


def _as_bytes(item: object) -> bytes | None:
    """An image entry as bytes: ``bytes``/``bytearray``, a 1-D uint8 array, or a ``str``.

    A ``str`` appears when a Python-2 pack is read without ``encoding="bytes"`` (or re-pickled
    after such a read); ``latin-1`` maps its code points 0..255 back to the original bytes.
    """
    if isinstance(item, bytes):
        return item
    if isinstance(item, (bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, str):
        try:
            return item.encode("latin-1")
        except UnicodeEncodeError:
            return None
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        return item.tobytes()
    return None


def _as_bool(value: object) -> bool | None:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    return None


def read_bin(path: str | Path, check_images: bool = True) -> BinPack:
    """Read an insightface verification pack.

    Args:
        path: the ``.bin`` file.
        check_images: decode every image once at reduced size (an 8x smaller JPEG decode
            still parses the whole stream), so a broken image is reported here, naming its
            position, rather than midway through an evaluation.

    Returns:
        A :class:`BinPack` with ``2N`` encoded images and ``(N,)`` bool ``issame``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file: not a pickle (or one referencing other objects, or
            building a bytearray from a number or text with a codec other than latin-1), not a
            ``(bins, issame_list)`` pair, an odd number of images, images and labels that do
            not match (``2N`` images for ``N`` labels), an entry that is not image bytes or a
            label that is not a boolean.
        OSError: naming the file, the image's position and its pair: an image that does not
            decode, or whose header claims more pixels than the budget
            (:func:`facerec.data.decode.max_pixels`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"verification pack not found: {path}")
    bins, labels = _pair(load_pack_pickle(path), path)
    issame = _issame(labels, path)  # before the images: a bad label is found without decoding
    return BinPack(_images(bins, path, check_images), issame)


def _pair(obj: object, path: Path) -> tuple[Sequence, Sequence]:
    """``(bins, labels)`` of an unpickled pack: ``2N`` entries and ``N`` labels, ``N > 0``."""
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise ValueError(
            f"{path}: expected a pickled (bins, issame_list) pair, got {type(obj).__name__}"
            + (f" of length {len(obj)}" if isinstance(obj, (tuple, list)) else "")
        )
    bins, labels = obj
    if not isinstance(bins, (list, tuple)):
        raise ValueError(f"{path}: bins must be a list of encoded images, got {type(bins)}")
    if isinstance(labels, np.ndarray):
        labels = labels.tolist()
    if not isinstance(labels, (list, tuple)):
        raise ValueError(f"{path}: issame_list must be a list of booleans, got {type(labels)}")
    if len(bins) % 2:
        raise ValueError(f"{path}: holds {len(bins)} images, an odd number (two per pair)")
    if len(bins) != 2 * len(labels):
        raise ValueError(
            f"{path}: holds {len(bins)} images ({len(bins) // 2} pairs) but {len(labels)} "
            f"issame labels"
        )
    if not labels:
        raise ValueError(f"{path}: holds no pairs")
    return bins, labels


def _issame(labels: Sequence, path: Path) -> np.ndarray:
    """``(N,)`` bool from ``N`` labels, each a bool or 0/1."""
    issame = np.empty(len(labels), dtype=bool)
    for i, value in enumerate(labels):
        flag = _as_bool(value)
        if flag is None:
            raise ValueError(f"{path}: issame label {i} is {value!r}, not a boolean")
        issame[i] = flag
    return issame


def _images(bins: Sequence, path: Path, check_images: bool) -> list[bytes]:
    """The ``2N`` entries as encoded-image bytes, each checked to decode if ``check_images``."""
    # An entry the pickle lists many times (a memo reference costs it 2 bytes) is converted
    # and checked once: otherwise a 1 MB pack naming one array 500,000 times makes as many
    # copies, or decodes one image as many times.
    seen: dict[int, bytes] = {}
    images: list[bytes] = []
    for k, item in enumerate(bins):
        data = seen.get(id(item))
        if data is None:
            data = _as_bytes(item)
            if data is None:
                raise ValueError(
                    f"{path}: image {k} (pair {k // 2}) is a {type(item).__name__}, not encoded "
                    f"image bytes"
                )
            if check_images:
                check_decodes(data, f"{path}: image {k} (pair {k // 2})")
            seen[id(item)] = data
        images.append(data)
    return images


class _PackImages(Dataset):
    """Some images of a pack, geometry only: uint8 ``(3, H, W)`` per item."""

    def __init__(
        self, source: Path, images: list[bytes], positions: Sequence[int], transform
    ) -> None:
        self.source = source
        self.images = images
        self.positions = list(positions)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> torch.Tensor:
        k = self.positions[index]
        image = decode_image(self.images[k], f"{self.source}: image {k} (pair {k // 2})")
        return to_tensor(self.transform(image=image)["image"])


class BinSet:
    """A verification set read from an insightface pack; used like :class:`PairsSet`.

    ``load()`` gives :class:`Pairs` whose ``images`` are positions in the pack (identical
    entries, e.g. an LFW image used by several pairs, are listed once), and ``dataset(images)``
    decodes them to uint8 ``(3, H, W)``.

    Args:
        bin_file: the ``.bin`` file.
        center_crop: side of the centre crop taken before resizing (None: none; insightface's
            packs are already aligned 112x112 crops).
        image_size: side of the square images given to the model.
    """

    def __init__(
        self, bin_file: str, center_crop: int | None = None, image_size: int = 112
    ) -> None:
        self.bin_file = Path(bin_file)
        self.center_crop = center_crop
        self.image_size = image_size
        self._pack: BinPack | None = None

    @property
    def name(self) -> str:
        return self.bin_file.name

    def pack(self) -> BinPack:
        """The pack's contents, read (and checked) on first use."""
        if self._pack is None:
            self._pack = read_bin(self.bin_file)
        return self._pack

    def load(self) -> Pairs:
        """Read the pack; every distinct image is listed once however many pairs use it."""
        pack = self.pack()
        position: dict[bytes, int] = {}
        first: list[int] = []
        slots = np.empty(len(pack.images), dtype=np.int64)
        for k, data in enumerate(pack.images):
            slot = position.setdefault(data, len(position))
            if slot == len(first):
                first.append(k)
            slots[k] = slot
        return Pairs(first, slots.reshape(-1, 2), pack.issame.copy())

    def dataset(self, images: Sequence[int]) -> Dataset:
        """The pack's images at positions ``images``, as uint8 ``(3, H, W)``."""
        transform = geometry(self.image_size, self.center_crop)
        return _PackImages(self.bin_file, self.pack().images, images, transform)

    def __repr__(self) -> str:
        return f"BinSet({str(self.bin_file)!r}, center_crop={self.center_crop})"
