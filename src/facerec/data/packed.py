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
:class:`EncodedImages` is the part shared with :class:`facerec.data.recordio.RecordIODataset`.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from facerec.data.device_decode import EncodedView, collate_encoded
from facerec.data.folder import scan_folder
from facerec.data.module import DataModule, PairsSet
from facerec.data.transforms import augmentation, decode_rgb, geometry, to_tensor

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "DatasetInfo",
    "EncodedImages",
    "PackedDataModule",
    "PackedDataset",
    "pack_folder",
    "pack_images",
    "read_pack_header",
]

FORMAT = "facerec-packed"
VERSION = 1
HEADER = "pack.json"
INDEX = "index.npy"
SHARD_FILE = "shard-{:05d}.dat"
COLUMNS = ("shard", "offset", "length", "label", "crc32")
SHARD, OFFSET, LENGTH, LABEL, CRC = range(5)
DEFAULT_SHARD_BYTES = 1 << 30


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

    def load(self, index: int) -> tuple[np.ndarray, int]:
        """Decoded image ``index``, uint8 ``(S, S, 3)`` RGB, and its label.

        Raises:
            OSError: the record is corrupt or does not decode.
        """
        data, label = self.record(index)
        image = decode_rgb(data)
        if image is None:
            raise OSError(f"{self.where(index)}: cannot decode ({data.size} bytes; corrupt)")
        size = self.image_size
        if self.center_crop or image.shape[:2] != (size, size):
            image = self.geometry(image=image)["image"]
        return image, label

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """``item``: an index, or ``(index, seed)`` to fix this sample's augmentation."""
        index, seed = item if isinstance(item, tuple) else (item, None)
        try:
            image, label = self.load(index)
        except OSError as error:
            # One broken record must not kill a multi-day run: label -1, the trainer drops it.
            log.warning("skipping sample: %s", error)
            size = self.image_size
            return to_tensor(np.zeros((size, size, 3), dtype=np.uint8)), -1
        if self.augment.transforms:  # an empty Compose still costs a call per sample
            if seed is not None:
                self.augment.set_random_seed(seed)
            image = self.augment(image=image)["image"]
        return to_tensor(image), label


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
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: corrupt pack header ({error})") from None
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
    return header


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

    def encoded(self, index: int) -> tuple[torch.Tensor, int]:
        """JPEG bytes of sample ``index`` as uint8 ``(L,)`` (for decoding elsewhere), label.

        Raises:
            OSError: naming the file and record, when the record is corrupt.
        """
        data, label = self.record(index)
        return torch.from_numpy(np.array(data)), label


# --------------------------------------------------------------------------------- packing


def jpeg_sampling(data: np.ndarray | bytes) -> list[int] | None:
    """The per-component sampling-factor bytes of a JPEG's frame header, None if not found.

    ``[0x22, 0x11, 0x11]`` is 4:2:0 (YCbCr, chroma at half resolution both ways),
    ``[0x11, 0x11, 0x11]`` is 4:4:4. Walks the marker segments up to the first SOF.
    """
    data = bytes(data)
    i = 2  # after SOI
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            count = data[i + 9] if i + 9 < len(data) else 0
            factors = [data[i + 11 + 3 * c] for c in range(count) if i + 11 + 3 * c < len(data)]
            return factors if len(factors) == count else None
        i += 2 + (data[i + 2] << 8 | data[i + 3])
    return None


@dataclass
class _Encoder:
    """Turns one source file into the pack's JPEG bytes (picklable for a process pool)."""

    image_size: int
    center_crop: int | None
    quality: int
    reduce: bool
    chroma: str = "420"
    _geometry: dict = field(default_factory=dict)

    def geometry(self, factor: int) -> A.Compose:
        if factor not in self._geometry:
            crop = round(self.center_crop / factor) if self.center_crop else None
            self._geometry[factor] = geometry(self.image_size, crop)
        return self._geometry[factor]

    def factor(self, width: int, height: int) -> int:
        """Largest JPEG DCT scale 1/f whose output still has the region at >= image_size.

        libjpeg decodes at 1/2, 1/4, 1/8 scale for a fraction of the full decode's cost (and
        its DCT-domain scaling is a proper low-pass); only taken when no upsampling follows.
        """
        if not self.reduce:
            return 1
        region = self.center_crop or min(width, height)
        return next((f for f in (8, 4, 2) if region // f >= self.image_size), 1)

    def __call__(self, path: Path) -> bytes | str:
        """JPEG bytes of the geometry output, or the reason the file is unreadable."""
        try:
            data = np.fromfile(str(path), dtype=np.uint8)
        except OSError as error:
            return f"cannot read: {error}"
        if data.size == 0:
            return "empty file"
        try:
            with Image.open(io.BytesIO(data.tobytes())) as im:  # header only: the size
                width, height, is_jpeg = *im.size, im.format == "JPEG"
        except Exception:  # PIL raises several types for non-images; cv2 has the last word
            width = height = 0
            is_jpeg = False
        size = self.image_size
        as_is = is_jpeg and (width, height) == (size, size) and not self.center_crop
        if as_is and (self.chroma == "420" or jpeg_sampling(data) == [0x11] * 3):
            # Already an aligned crop (insightface-style): store as is, no generation loss.
            # (Asked for 4:4:4, a subsampled one is re-encoded below: GPU decoding needs it.)
            return data.tobytes() if decode_rgb(data) is not None else "cannot decode"
        factor = self.factor(width, height) if is_jpeg else 1
        flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}  # fmt: skip
        # BGR in, BGR to imencode: the geometry does not care about channel order.
        image = cv2.imdecode(data, flags[factor])
        if image is None:
            return "cannot decode (corrupt, truncated or not an image)"
        image = self.geometry(factor)(image=image)["image"]
        params = [cv2.IMWRITE_JPEG_QUALITY, self.quality]
        if self.chroma == "444":  # full-resolution colour: what GPU (nvjpeg) decoding wants
            params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
        ok, buf = cv2.imencode(".jpg", image, params)
        return buf.tobytes() if ok else "cannot encode"


def pack_images(
    paths: Sequence[Path],
    labels: Sequence[int] | np.ndarray,
    classes: Sequence[str],
    out: str | Path,
    image_size: int = 112,
    center_crop: int | None = None,
    quality: int = 95,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    workers: int = 0,
    reduce: bool = True,
    chroma: str = "420",
    source: str = "",
    overwrite: bool = False,
    show_progress: bool = False,
) -> DatasetInfo:
    """Decode, centre crop, resize and re-encode images into a pack folder.

    Args:
        paths: image files.
        labels: class index of each path, in ``0..len(classes)-1``.
        classes: identity names.
        out: the pack folder (created).
        image_size: side of the stored square images.
        center_crop: side of the centre crop taken before resizing (None: none).
        quality: JPEG quality of the stored images (95: re-encoding error well below what
            training augmentations do; smaller files at lower values).
        shard_bytes: start a new shard file beyond this size.
        workers: encoding processes (0: this process).
        reduce: decode JPEGs at 1/2, 1/4 or 1/8 scale (DCT-domain) when the crop still has
            ``image_size`` pixels or more, which is several times faster for large sources.
        chroma: JPEG chroma subsampling, ``420`` (smaller) or ``444`` (decoded identically by
            nvjpeg and libjpeg-turbo; for ``data.decode=device``). With ``444``, already
            aligned JPEG sources that are subsampled are re-encoded instead of stored as is.
        source: where the images came from (recorded in the header).
        overwrite: replace an existing pack in ``out``.
        show_progress: show a progress bar.

    Returns:
        The pack's :class:`DatasetInfo`. Unreadable sources are skipped, logged and listed in
        the header under ``unreadable``.

    Raises:
        FileExistsError: ``out`` holds a pack and ``overwrite`` is False.
        ValueError: nothing to pack, labels out of range, or no source image was readable.
    """
    out = Path(out)
    if chroma not in ("420", "444"):
        raise ValueError(f"chroma must be '420' or '444', got {chroma!r}")
    labels = np.asarray(labels, dtype=np.int64)
    if len(paths) == 0 or len(paths) != len(labels):
        raise ValueError(f"need one label per image, got {len(paths)} images, {len(labels)} labels")
    if labels.min() < 0 or labels.max() >= len(classes):
        raise ValueError(f"labels must be in 0..{len(classes) - 1}")
    if (out / HEADER).exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a pack (pass overwrite to replace it)")
    out.mkdir(parents=True, exist_ok=True)
    # The old header goes first (an interrupted repack is then no pack at all), and a smaller
    # new pack must not leave the old one's extra shards behind.
    for stale in [out / HEADER, *out.glob("shard-*.dat")]:
        stale.unlink(missing_ok=True)

    encoder = _Encoder(image_size, center_crop, int(quality), reduce, chroma)
    start = time.perf_counter()
    rows = np.empty((len(paths), len(COLUMNS)), dtype=np.int64)
    shards: list[dict] = []
    unreadable: list[str] = []
    n = 0
    handle = None
    pool = multiprocessing.get_context().Pool(workers) if workers > 0 else None
    try:
        results: Iterable[bytes | str] = (
            pool.imap(encoder, paths, chunksize=32) if pool else map(encoder, paths)
        )
        bar = tqdm(results, total=len(paths), desc="pack", unit="img", disable=not show_progress)
        for path, label, result in zip(paths, labels, bar, strict=True):
            if isinstance(result, str):
                log.warning("not packed: %s: %s", path, result)
                unreadable.append(str(path))
                continue
            full = handle is not None and shards[-1]["bytes"] + len(result) > shard_bytes
            if handle is None or (full and shards[-1]["images"]):
                if handle is not None:
                    handle.close()
                shards.append({"file": SHARD_FILE.format(len(shards)), "bytes": 0, "images": 0})
                handle = (out / shards[-1]["file"]).open("wb")
            shard = shards[-1]
            rows[n] = (len(shards) - 1, shard["bytes"], len(result), label, zlib.crc32(result))
            handle.write(result)
            shard["bytes"] += len(result)
            shard["images"] += 1
            n += 1
    finally:
        if handle is not None:
            handle.close()
        if pool is not None:
            pool.terminate()  # all results are in (or packing failed): nothing to wait for
    if n == 0:
        raise ValueError(f"none of the {len(paths)} images could be read (see the log)")

    tmp = out / (INDEX + ".tmp")
    with tmp.open("wb") as f:
        np.save(f, rows[:n])
    os.replace(tmp, out / INDEX)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "columns": list(COLUMNS),
        "image_size": image_size,
        "center_crop": center_crop,
        "quality": int(quality),
        "chroma": chroma,
        "encoding": "jpeg",
        "num_images": n,
        "num_classes": len(classes),
        "classes": list(classes),
        "shards": shards,
        "source": source,
        "unreadable": unreadable,
        "seconds": round(time.perf_counter() - start, 2),
    }
    tmp = out / (HEADER + ".tmp")
    tmp.write_text(json.dumps(header, indent=1), encoding="utf-8")
    os.replace(tmp, out / HEADER)  # last: its presence marks a complete pack
    info = PackedDataset(out).info
    log.info("packed %s: %s", out, info.summary())
    return info


def pack_folder(
    root: str | Path,
    out: str | Path,
    people: Iterable[str] | None = None,
    min_images: int = 1,
    **options,
) -> DatasetInfo:
    """Pack a folder dataset (``root/<identity>/<image>``, see :func:`scan_folder`).

    Args:
        root: dataset folder; each sub-folder is one identity.
        out: the pack folder.
        people: if given, only these identities.
        min_images: identities with fewer images are dropped.
        **options: passed to :func:`pack_images` (``image_size``, ``center_crop``,
            ``quality``, ``shard_bytes``, ``workers``, ``reduce``, ``chroma``, ``overwrite``,
            ``show_progress``).
    """
    scan = scan_folder(root, set(people) if people is not None else None, min_images)
    log.info("packing %s: %s", root, scan.summary())
    return pack_images(scan.paths, scan.labels, scan.classes, out, source=str(root), **options)


# ----------------------------------------------------------------------------- data module


class PackedDataModule(DataModule):
    """Training data from a pack folder (``scripts/pack_dataset.py``).

    Args:
        root: the pack folder.
        image_size: side of the training images; must be the pack's (checked), since the
            verification sets are resized to it too.
        hflip: random horizontal flips.
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
    ) -> None:
        super().__init__(batch_size, num_workers, val)
        if decode not in self.DECODE:
            raise ValueError(f"data.decode={decode!r}: choose one of {list(self.DECODE)}")
        if decode == "device" and not verify:
            # The workers only slice bytes: the CRC is the one check before the batch decode.
            raise ValueError(
                "data.decode=device needs data.verify=true: without the CRC check a corrupt"
                " record is only found when its whole batch fails to decode"
            )
        self.root = Path(root)
        self.image_size = image_size
        self.hflip = hflip
        self.verify = verify
        self.decode = decode
        self.scan: DatasetInfo | None = None
        self._dataset: PackedDataset | None = None

    @property
    def source(self) -> Path:
        return self.root

    def setup(self) -> DatasetInfo:
        dataset = PackedDataset(self.root, augmentation(self.hflip), self.verify)
        if dataset.image_size != self.image_size:
            raise ValueError(
                f"{self.root}: the pack holds {dataset.image_size}x{dataset.image_size} images,"
                f" data.image_size is {self.image_size}"
            )
        self._dataset, self.scan = dataset, dataset.info
        log.info("training data %s: %s", self.root, self.scan.summary())
        return self.scan

    def train_dataset(self, scan: DatasetInfo, show_progress: bool) -> Dataset:
        dataset = self._dataset or PackedDataset(self.root, augmentation(self.hflip), self.verify)
        return EncodedView(dataset, self.hflip) if self.decode == "device" else dataset

    @property
    def collate_fn(self) -> Callable | None:
        return collate_encoded if self.decode == "device" else None
