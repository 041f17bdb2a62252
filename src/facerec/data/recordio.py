"""insightface training sets (MXNet RecordIO ``train.rec`` + ``train.idx``) without mxnet.

The format, as dmlc-core's ``recordio.h`` writes it and insightface's ``MXFaceDataset`` reads it:

* ``train.idx``: text lines ``key<TAB>offset``, the byte offset in ``train.rec`` of record
  ``key``'s first part.
* ``train.rec``: records of parts; each part is a little-endian uint32 magic ``0xced7230a``, a
  uint32 ``lrec`` (top 3 bits: continuation flag, low 29 bits: part length) and the part's
  bytes, padded with zeros to a multiple of 4. Flag 0 is a whole record; 1, 2, 3 are the first,
  middle and last parts of a record that contained the magic word at a 4-byte-aligned position:
  the writer cut it out there, so a reader puts it back between the parts.
* A record's payload: ``IRHeader`` = struct ``IfQQ`` (flag uint32, label float32, id uint64,
  id2 uint64); when ``flag > 0``, ``flag`` float32 labels follow and replace ``label``; then the
  encoded image.
* Record 0 is a header whose labels ``(a, b)`` (``flag == 2``) say that images are records
  ``1 .. a-1`` and records ``a .. b-1`` are per-identity ranges: ``b - a`` identities. Without
  it (``flag == 0``) every key in the index is an image and the classes are counted from the
  labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import albumentations as A
import numpy as np

from facerec.data.encoded import DatasetInfo, EncodedImages
from facerec.data.indexed_module import IndexedDataModule
from facerec.data.module import PairsSet
from facerec.data.recordio_format import (
    MIN_RECORD,
    class_label,
    read_idx,
    read_record,
    unpack,
)

__all__ = ["RecordIODataModule", "RecordIODataset"]


class _KeyLookup:
    """Offsets of record keys through the index sorted once (``.idx`` lines need not be)."""

    def __init__(self, keys: np.ndarray, offsets: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        self.keys, self.offsets = keys[order], offsets[order]

    def __call__(self, wanted: np.ndarray) -> np.ndarray:
        """Offsets of ``wanted`` keys, -1 where the index has no such key."""
        at = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
        return np.where(self.keys[at] == wanted, self.offsets[at], -1)


class RecordIODataset(EncodedImages):
    """An insightface ``train.rec``/``train.idx`` pair, with :class:`FaceFolder`'s item contract.

    Items are ``(image uint8 (3, S, S), label int)`` (``(index, seed)`` items seed the
    augmentation); a corrupt record or one whose label is out of range is logged and comes back
    with label -1. Class names are the label numbers (RecordIO stores none).

    Args:
        root: folder holding ``<name>.rec`` and ``<name>.idx``.
        augment: random part, applied per sample (None: none).
        image_size: side ``S`` of the returned images (insightface's sets: 112, as stored).
        center_crop: centre crop before resizing (None: none; the stored faces are aligned).
        name: file stem (``train``).

    Raises:
        FileNotFoundError: naming the missing ``.rec`` or ``.idx``.
        ValueError: naming the file: a malformed index, offsets past the end of the ``.rec``,
            an unreadable header record, a header whose ranges the index cannot hold (checked
            before anything is allocated from them), labels beyond the number of records, or
            image keys missing from the index.
    """

    def __init__(
        self,
        root: str | Path,
        augment: A.Compose | None = None,
        image_size: int = 112,
        center_crop: int | None = None,
        name: str = "train",
    ) -> None:
        super().__init__(augment, image_size, center_crop)
        self.root = Path(root)
        self.rec_path = self.root / f"{name}.rec"
        self.idx_path = self.root / f"{name}.idx"
        if not self.rec_path.is_file():
            raise FileNotFoundError(f"RecordIO file not found: {self.rec_path}")
        keys, offsets = read_idx(self.idx_path)
        size = self.rec_path.stat().st_size
        if offsets.min() < 0 or offsets.max() + 8 > size:
            raise ValueError(
                f"{self.idx_path}: offsets past the end of {self.rec_path} ({size} bytes): "
                f"the index belongs to another file, or the .rec is truncated"
            )
        lookup = _KeyLookup(keys, offsets)
        header_offset = int(lookup(np.array([0]))[0])
        if header_offset < 0:
            raise ValueError(f"{self.idx_path}: no record 0 (the header record)")
        try:
            flag, labels, *_ = unpack(read_record(self._map(), header_offset, "header record 0"))
        except OSError as error:
            raise ValueError(f"{self.rec_path}: unreadable header record: {error}") from None
        if flag > 0:
            num_classes = self._images_from_header(labels, lookup)
        else:
            num_classes = self._images_from_labels(keys, offsets)
        self.classes = [str(c) for c in range(num_classes)]

    def _images_from_header(self, labels: np.ndarray, lookup: _KeyLookup) -> int:
        """insightface's layout: images are keys ``1..a-1``, then ``b-a`` identity records;
        sets ``keys``/``offsets`` and returns the number of classes."""
        first_identity, end = self._layout(labels)
        self.keys = np.arange(1, first_identity, dtype=np.int64)
        self.offsets = lookup(self.keys)
        missing = self.keys[self.offsets < 0]
        if missing.size:
            raise ValueError(
                f"{self.idx_path}: the header record says images are keys 1.."
                f"{first_identity - 1} but {missing.size} are not in the index, e.g. "
                f"{missing[:3].tolist()}"
            )
        return end - first_identity

    def _images_from_labels(self, keys: np.ndarray, offsets: np.ndarray) -> int:
        """No header: every record is an image and the labels give the classes (one pass);
        sets ``keys``/``offsets`` and returns the number of classes."""
        rec = self._map()
        labels = [self._label(rec, o, k) for k, o in zip(keys.tolist(), offsets.tolist(),
                                                         strict=True)]  # fmt: skip
        num_classes = 1 + max(labels)
        if num_classes > len(keys):  # a list of that many class names would come next
            raise ValueError(
                f"{self.rec_path}: a record's label is {num_classes - 1}, but the file holds"
                f" {len(keys)} records: labels must lie in 0..{len(keys) - 1}"
            )
        self.keys, self.offsets = keys, offsets
        return num_classes

    def _layout(self, labels: np.ndarray) -> tuple[int, int]:
        """The header record's ``(a, b)``: images are keys ``1..a-1``, identities ``a..b-1``.

        Checked before anything is allocated from them: each of those ``b - 1`` records takes
        at least :data:`MIN_RECORD` bytes of the ``.rec``, so a 16 KB file cannot claim a
        billion images.

        Raises:
            ValueError: naming the file: fewer than two labels, non-integral values, or more
                records than the file can hold.
        """
        values = labels[:2].astype(np.float64)
        if values.size < 2 or not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise ValueError(
                f"{self.rec_path}: the header record's labels {labels[:2].tolist()} are not"
                f" two whole numbers (first identity record, end of the identity records)"
            )
        first, end = (int(v) for v in values)
        size = self.rec_path.stat().st_size
        if not 1 <= first <= end or (end - 1) * MIN_RECORD > size:
            raise ValueError(
                f"{self.rec_path}: refused: the header record says images are keys 1..{first - 1}"
                f" and identities keys {first}..{end - 1}, more records than its {size:,} bytes"
                f" can hold ({MIN_RECORD} bytes each at least)"
            )
        return first, end

    def _map(self) -> np.memmap:
        return np.memmap(self.rec_path, dtype=np.uint8, mode="r")

    def _open(self) -> np.memmap:
        return self._map()

    def _label(self, rec: np.ndarray, offset: int, key: int) -> int:
        _, labels, *_ = unpack(read_record(rec, offset, f"{self.rec_path}: record {key}"))
        return class_label(labels, f"{self.rec_path}: record {key}")

    @property
    def info(self) -> DatasetInfo:
        details = f"{self.rec_path.stat().st_size / 1e6:.1f} MB {self.rec_path.name}"
        return DatasetInfo(self.rec_path, "RecordIO file", self.classes, len(self), details)

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def labels(self) -> np.ndarray:
        """``(N,)`` int64 label of every image record: one pass over the record headers (the
        images are not decoded), for ``sampler=identity``."""
        rec = self._map()
        pairs = zip(self.keys.tolist(), self.offsets.tolist(), strict=True)
        return np.array([self._label(rec, o, k) for k, o in pairs], dtype=np.int64)

    def where(self, index: int) -> str:
        return f"{self.rec_path}: record {int(self.keys[index])}"

    def record(self, index: int) -> tuple[np.ndarray, int]:
        payload = read_record(self.maps, int(self.offsets[index]), self.where(index))
        try:
            _, labels, _, _, image = unpack(payload)
        except OSError as error:
            raise OSError(f"{self.where(index)}: {error}") from None
        label = class_label(labels, self.where(index))
        if not 0 <= label < len(self.classes):
            raise OSError(f"{self.where(index)}: label {label} outside 0..{len(self.classes) - 1}")
        return np.frombuffer(image, dtype=np.uint8), label


class RecordIODataModule(IndexedDataModule):
    """Training data from an insightface ``train.rec``/``train.idx`` (MS1M, Glint360K, ...).

    Args:
        root: folder holding ``train.rec`` and ``train.idx``.
        image_size: side of the training images.
        center_crop: centre crop before resizing (None: none).
        hflip: random horizontal flips.
        batch_size: images per step on each process.
        num_workers: DataLoader worker processes per training process.
        val: verification sets by name.
        augment: further random transforms after the flip (``augment=...``; None: none).
    """

    def __init__(
        self,
        root: str,
        image_size: int = 112,
        center_crop: int | None = None,
        hflip: bool = True,
        batch_size: int = 128,
        num_workers: int = 2,
        val: Mapping[str, PairsSet] | None = None,
        augment: A.BaseCompose | None = None,
    ) -> None:
        super().__init__(root, image_size, hflip, batch_size, num_workers, val, augment)
        self.center_crop = center_crop

    def make(self) -> RecordIODataset:
        return RecordIODataset(self.root, self.augmentation, self.image_size, self.center_crop)
