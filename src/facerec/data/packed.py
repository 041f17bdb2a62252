"""Packed training sets: pre-cropped JPEG bytes in a few large shard files, read by ``np.memmap``.

A folder dataset of CASIA-WebFace size is half a million small files; opening, reading and
decoding each 250x250 JPEG per sample is what limits a DataLoader worker. A pack does the
deterministic work once (decode, centre crop, resize to 112, re-encode as JPEG) and stores the
results back to back in a few large files, so a training sample costs one slice of a memory map
and one 112x112 JPEG decode (about 5x fewer pixels than the source).

Layout of a pack folder (written by :func:`pack_images` / ``scripts/pack_dataset.py``)::

    pack.json           header: format, version, image size, JPEG quality, class names, counts,
                        shard files and their sizes, source, unreadable source files
    index.npy           int64 (N, 5): shard, offset, length, label, crc32 of each record
    shard-00000.dat     JPEG files back to back (no per-record framing: the index has it)
    shard-00001.dat     ...

``pack.json`` is written last, so a folder without it is an interrupted pack. Records are
stored in scan order (grouped by class); the sampler shuffles.

:class:`PackedDataset` has :class:`facerec.data.folder.FaceFolder`'s item contract: item
``(index, seed)`` -> ``(uint8 (3, 112, 112), label)``, the augmentation seeded per sample, a
corrupt record (CRC mismatch or undecodable) logged and returned with label -1.
:class:`facerec.data.encoded.EncodedImages` is the part shared with
:class:`facerec.data.recordio.RecordIODataset`. The writer is :mod:`facerec.data.pack_writer`,
the data module :mod:`facerec.data.packed_module`.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import albumentations as A
import numpy as np

from facerec.data.encoded import DatasetInfo, EncodedImages
from facerec.files.jsonfile import read_json

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_SHARD_BYTES", "FORMAT", "PackedDataset", "read_pack_header"]

FORMAT = "facerec-packed"
VERSION = 1
HEADER = "pack.json"
# A header lists every class name: 256 MiB holds millions of identities, not a hostile file.
PACK_HEADER_BYTES = 2**28
INDEX = "index.npy"
SHARD_FILE = "shard-{:05d}.dat"
COLUMNS = ("shard", "offset", "length", "label", "crc32")
SHARD, OFFSET, LENGTH, LABEL, CRC = range(5)
DEFAULT_SHARD_BYTES = 1 << 30


def read_pack_header(root: str | Path) -> dict:
    """Read and check a pack's ``pack.json``.

    Raises:
        FileNotFoundError: no pack folder, or no header in it (an interrupted pack).
        ValueError: naming the file: not JSON, not a facerec pack of a known version, or
            missing fields.
    """
    root = Path(root)
    path = root / HEADER
    if not root.is_dir():
        raise FileNotFoundError(f"pack folder not found: {root}")
    if not path.is_file():
        raise FileNotFoundError(
            f"pack header not found: {path} (not a pack folder, or packing was interrupted: "
            f"the header is written last)"
        )
    header = read_json(path, "pack header", max_bytes=PACK_HEADER_BYTES, expect=None)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} header")
    if header.get("version") != VERSION:
        raise ValueError(
            f"{path}: pack format version {header.get('version')}, this facerec reads {VERSION}"
        )
    missing = [k for k in ("image_size", "quality", "classes", "num_images", "shards")
               if k not in header]  # fmt: skip
    if missing:
        raise ValueError(f"{path}: corrupt pack header (no {', '.join(missing)})")
    check_header_types(header, path)
    return header


def check_header_types(header: dict, path: Path) -> None:
    """Every field the reader uses has the type it needs (a hand-edited or hostile header
    gets one line naming the field, not a traceback from deep in numpy).

    Raises:
        ValueError: naming the file and the field.
    """

    def count(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    problems = [name for name in ("image_size", "quality", "num_images") if not count(header[name])]
    classes, shards = header["classes"], header["shards"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        problems.append("classes (a list of names)")
    if not isinstance(shards, list) or not all(
        isinstance(s, dict) and isinstance(s.get("file"), str) and "/" not in s["file"]
        and ".." not in s["file"] and count(s.get("bytes")) for s in shards
    ):  # fmt: skip
        problems.append("shards (a list of {file, bytes} in the pack folder)")
    if problems:
        raise ValueError(f"{path}: corrupt pack header (wrong type: {', '.join(problems)})")


class PackedDataset(EncodedImages):
    """A pack written by :func:`pack_images`, with :class:`FaceFolder`'s item contract.

    Opening checks the header, the index (shape, labels, every record inside its shard) and the
    shard sizes, so a missing or truncated file is reported at once, by path; what cannot be
    checked without reading everything (flipped bytes) is caught per record by its CRC.

    Args:
        root: the pack folder.
        augment: random part, applied per sample (None: none).
        verify: check each record's CRC-32 before decoding (a few microseconds per 5 KB
            record): corrupt bytes that still decode would otherwise train as a garbled face.

    Raises:
        FileNotFoundError: naming the missing folder, header, index or shard.
        ValueError: naming the file: corrupt header or index, a shard shorter than the header
            says, index rows pointing outside their shard or with labels out of range.
    """

    def __init__(
        self, root: str | Path, augment: A.Compose | None = None, verify: bool = True
    ) -> None:
        self.root = Path(root)
        header = read_pack_header(self.root)
        super().__init__(augment, int(header["image_size"]))
        self.header = header
        self.classes: list[str] = list(header["classes"])
        self.verify = verify
        self.index_path = self.root / INDEX
        self.shard_paths = [self.root / s["file"] for s in header["shards"]]
        sizes = np.array([s["bytes"] for s in header["shards"]], dtype=np.int64)
        for path, size in zip(self.shard_paths, sizes, strict=True):
            if not path.is_file():
                raise FileNotFoundError(f"pack shard not found: {path}")
            if path.stat().st_size < size:
                raise ValueError(
                    f"{path}: truncated pack shard ({path.stat().st_size} bytes, the header "
                    f"says {size})"
                )
        index = self._load_index()
        n = int(header["num_images"])
        if index.shape[0] != n:
            raise ValueError(f"{self.index_path}: {index.shape[0]} rows, the header says {n}")
        shard, ends = index[:, SHARD], index[:, OFFSET] + index[:, LENGTH]
        labels = index[:, LABEL]
        if n and (shard.min() < 0 or shard.max() >= len(sizes)):
            raise ValueError(f"{self.index_path}: shard numbers outside 0..{len(sizes) - 1}")
        outside = np.flatnonzero((index[:, OFFSET] < 0) | (ends > sizes[shard]))
        if outside.size:
            raise ValueError(
                f"{self.index_path}: {outside.size} records point outside their shard, e.g. "
                f"record {outside[0]} (corrupt index, or shards from another pack)"
            )
        if n and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise ValueError(
                f"{self.index_path}: labels outside 0..{len(self.classes) - 1} (corrupt index)"
            )
        self._length = n

    def _load_index(self) -> np.ndarray:
        if not self.index_path.is_file():
            raise FileNotFoundError(f"pack index not found: {self.index_path}")
        try:
            index = np.load(self.index_path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as error:
            raise ValueError(f"{self.index_path}: corrupt pack index ({error})") from None
        if index.ndim != 2 or index.shape[1] != len(COLUMNS) or index.dtype != np.int64:
            raise ValueError(
                f"{self.index_path}: expected an int64 (N, {len(COLUMNS)}) index "
                f"({', '.join(COLUMNS)}), got {index.dtype} {index.shape}"
            )
        return index

    def _open(self) -> tuple[np.ndarray, list[np.memmap]]:
        index = self._load_index()
        shards = [np.memmap(p, dtype=np.uint8, mode="r") for p in self.shard_paths]
        return index, shards

    @property
    def info(self) -> DatasetInfo:
        h = self.header
        details = (
            f"{len(self.shard_paths)} shard(s), {sum(s['bytes'] for s in h['shards']) / 1e6:.1f}"
            f" MB, {h['image_size']}x{h['image_size']} JPEG q{h['quality']}"
        ) + (f", from {h['source']}" if h.get("source") else "")
        return DatasetInfo(self.root, "pack", self.classes, self._length, details)

    def __len__(self) -> int:
        return self._length

    @property
    def labels(self) -> np.ndarray:
        """``(N,)`` int64 label of every record, from the index (no image is read)."""
        return self._load_index()[:, LABEL]

    def where(self, index: int) -> str:
        return f"{self.root}: record {index}"

    def record(self, index: int) -> tuple[np.ndarray, int]:
        rows, shards = self.maps
        shard, offset, length, label, crc = rows[index].tolist()  # Python ints, no memmap scalars
        data = shards[shard][offset : offset + length]
        if self.verify and zlib.crc32(data) != crc:
            raise OSError(
                f"{self.shard_paths[shard]}: record {index} (bytes {offset}..{offset + length})"
                f" fails its CRC check: corrupt shard"
            )
        return data, label
