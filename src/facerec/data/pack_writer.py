"""Writing a pack (layout in :mod:`facerec.data.packed`): decode, crop, resize and re-encode
every source image once, in a process pool, into a few large shard files."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import albumentations as A
import cv2
import numpy as np
from tqdm import tqdm

from facerec.data.decode import check_header, decode_image, jpeg_frame, read_file
from facerec.data.encoded import DatasetInfo
from facerec.data.folder import scan_folder
from facerec.data.pack_shards import TMP, Shards
from facerec.data.packed import (
    COLUMNS,
    DEFAULT_SHARD_BYTES,
    FORMAT,
    HEADER,
    INDEX,
    VERSION,
    PackedDataset,
)
from facerec.data.transforms import geometry

log = logging.getLogger(__name__)

__all__ = ["jpeg_sampling", "pack_folder", "pack_images"]


def jpeg_sampling(data: np.ndarray | bytes) -> list[int] | None:
    """The per-component sampling-factor bytes of a JPEG's frame header, None if not found.

    ``[0x22, 0x11, 0x11]`` is 4:2:0 (YCbCr, chroma at half resolution both ways),
    ``[0x11, 0x11, 0x11]`` is 4:4:4.
    """
    frame = jpeg_frame(data)  # marker, length, precision, height, width, count, components
    if frame is None or len(frame) < 10:
        return None
    count = frame[9]
    factors = [frame[11 + 3 * c] for c in range(count) if 11 + 3 * c < len(frame)]
    return factors if len(factors) == count else None


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
        """JPEG bytes of the geometry output, or why the file is unreadable (naming it)."""
        try:
            data = read_file(path)
            header = check_header(data, str(path))  # the pixel budget, before decoding
            width, height, is_jpeg = header.width, header.height, header.format == "JPEG"
            size = self.image_size
            as_is = is_jpeg and (width, height) == (size, size) and not self.center_crop
            if as_is and (self.chroma == "420" or jpeg_sampling(data) == [0x11] * 3):
                # Already an aligned crop (insightface-style): store as is, no generation loss.
                # (Asked for 4:4:4, a subsampled one is re-encoded below: GPU decoding needs it.)
                decode_image(data, str(path))
                return data.tobytes()
            factor = self.factor(width, height) if is_jpeg else 1
            # BGR in, BGR to imencode: the geometry does not care about channel order.
            image = decode_image(data, str(path), reduce=factor, rgb=False)
        except OSError as error:  # UnreadableImage names the file and why
            return str(error)
        image = self.geometry(factor)(image=image)["image"]
        params = [cv2.IMWRITE_JPEG_QUALITY, self.quality]
        if self.chroma == "444":  # full-resolution colour: what GPU (nvjpeg) decoding wants
            params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
        ok, buf = cv2.imencode(".jpg", image, params)
        return buf.tobytes() if ok else f"{path}: cannot encode"


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
    preprocessing: Mapping[str, Any] | None = None,
) -> DatasetInfo:
    """Decode, centre crop, resize and re-encode images into a pack folder.

    Over 60 lines only by its documented options; the body is five named steps.

    Args:
        paths: image files.
        labels: class index of each path, in ``0..len(classes)-1``.
        classes: identity names.
        out: the pack folder (created).
        image_size: side of the stored square images.
        center_crop: side of the centre crop taken before resizing (None: none).
        quality: JPEG quality (95: re-encoding error far below the augmentations').
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
        preprocessing: the header's ``preprocessing`` entry (``Preprocessing.to_dict()``,
            built by the command); None: ``image_size`` and ``center_crop`` say it.

    Returns:
        The pack's :class:`DatasetInfo`. Unreadable sources are skipped, logged and listed in
        the header under ``unreadable``.

    Raises:
        FileExistsError: ``out`` holds a pack and ``overwrite`` is False.
        ValueError: nothing to pack, labels out of range, or no source image was readable.
    """
    out = Path(out)
    labels = _checked_labels(paths, labels, classes, chroma)
    _clear(out, overwrite)
    encoder = _Encoder(image_size, center_crop, int(quality), reduce, chroma)
    start = time.perf_counter()
    rows, shards, unreadable = _encode_into_shards(encoder, paths, labels, out, shard_bytes,
                                                   workers, show_progress)  # fmt: skip
    _replace(out / INDEX, lambda f: np.save(f, rows))
    seconds = round(time.perf_counter() - start, 2)
    header = _header(encoder, classes, shards, len(rows), source, unreadable, seconds)
    if preprocessing is not None:
        header["preprocessing"] = dict(preprocessing)
    # Last: its presence marks a complete pack.
    _replace(out / HEADER, lambda f: f.write(json.dumps(header, indent=1).encode("utf-8")))
    info = PackedDataset(out).info
    log.info("packed %s: %s", out, info.summary())
    return info


def _checked_labels(
    paths: Sequence[Path], labels: Sequence[int] | np.ndarray, classes: Sequence[str], chroma: str
) -> np.ndarray:
    """``labels`` as int64 ``(N,)``, one per path, each in ``0..len(classes)-1``."""
    if chroma not in ("420", "444"):
        raise ValueError(f"chroma must be '420' or '444', got {chroma!r}")
    labels = np.asarray(labels, dtype=np.int64)
    if len(paths) == 0 or len(paths) != len(labels):
        raise ValueError(f"need one label per image, got {len(paths)} images, {len(labels)} labels")
    if labels.min() < 0 or labels.max() >= len(classes):
        raise ValueError(f"labels must be in 0..{len(classes) - 1}")
    return labels


def _clear(out: Path, overwrite: bool) -> None:
    """Make ``out`` and remove an old pack there (refused unless ``overwrite``)."""
    if (out / HEADER).exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a pack (pass overwrite to replace it)")
    out.mkdir(parents=True, exist_ok=True)
    # The old header goes first (an interrupted repack is then no pack at all), and a smaller
    # new pack must not leave the old one's extra shards behind.
    for stale in [out / HEADER, *out.glob("shard-*.dat"), *out.glob(f"shard-*.dat{TMP}")]:
        stale.unlink(missing_ok=True)


def _encode_into_shards(
    encoder: _Encoder, paths: Sequence[Path], labels: np.ndarray, out: Path, shard_bytes: int,
    workers: int, show_progress: bool,
) -> tuple[np.ndarray, list[dict], list[str]]:  # fmt: skip
    """Encode every path (in ``workers`` processes) and append it to the shards in order.

    Returns:
        The int64 ``(n, len(COLUMNS))`` index rows of the ``n`` packed images, the committed
        shards' header entries and the unreadable paths (logged, not packed).
    """
    rows = np.empty((len(paths), len(COLUMNS)), dtype=np.int64)
    writer = Shards(out, shard_bytes)
    unreadable: list[str] = []
    n = 0
    pool = multiprocessing.get_context().Pool(workers) if workers > 0 else None
    try:
        results: Iterable[bytes | str] = (
            pool.imap(encoder, paths, chunksize=32) if pool else map(encoder, paths)
        )
        bar = tqdm(results, total=len(paths), desc="pack", unit="img", disable=not show_progress)
        for path, label, result in zip(paths, labels, bar, strict=True):
            if isinstance(result, str):
                log.warning("not packed: %s", result)
                unreadable.append(str(path))
                continue
            rows[n] = (*writer.write(result), label, zlib.crc32(result))
            n += 1
        if n == 0:
            raise ValueError(f"none of the {len(paths)} images could be read (see the log)")
        shards = writer.commit()
    finally:
        writer.discard()  # after a failure: no shard of a pack that has no header
        if pool is not None:
            pool.terminate()  # all results are in (or packing failed): nothing to wait for
    return rows[:n], shards, unreadable


def _header(
    encoder: _Encoder, classes: Sequence[str], shards: list[dict], num_images: int,
    source: str, unreadable: list[str], seconds: float,
) -> dict:  # fmt: skip
    """The pack's ``pack.json`` contents (read back by :class:`PackedDataset`)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "columns": list(COLUMNS),
        "image_size": encoder.image_size,
        "center_crop": encoder.center_crop,
        "quality": encoder.quality,
        "chroma": encoder.chroma,
        "encoding": "jpeg",
        "num_images": num_images,
        "num_classes": len(classes),
        "classes": list(classes),
        "shards": shards,
        "source": source,
        "unreadable": unreadable,
        "seconds": seconds,
    }


def _replace(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file, then rename it into place."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        write(f)
    os.replace(tmp, path)


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
