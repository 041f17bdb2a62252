"""Writing insightface-style ``.bin`` verification packs (the format: :mod:`facerec.data.binpack`)
from a pairs file and its images, e.g. ``scripts/make_bin.py``."""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import ArrayLike

from facerec.data.binpack import BinPack
from facerec.data.decode import read_image
from facerec.data.pairs import read_pairs
from facerec.data.transforms import geometry

__all__ = ["encode_image", "pack_pairs", "write_bin"]


def encode_image(image: np.ndarray, ext: str = ".jpg", quality: int = 95) -> bytes:
    """Encode an RGB uint8 ``(H, W, 3)`` image as a file's bytes.

    Args:
        image: RGB uint8 ``(H, W, 3)``.
        ext: ``.jpg`` (lossy, what insightface's packs hold) or ``.png`` (lossless, bigger).
        quality: JPEG quality, 0..100.
    """
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV cannot encode an image as {ext!r}")
    return buf.tobytes()


def write_bin(path: str | Path, images: Sequence[bytes], issame: ArrayLike) -> Path:
    """Write a verification pack that insightface (and :func:`read_bin`) can read.

    The file is written to a temporary name and renamed, so a killed run leaves no half pack.

    Args:
        path: the ``.bin`` file to write.
        images: ``2N`` encoded images, pair ``i`` at ``2i`` and ``2i + 1``.
        issame: ``(N,)`` booleans.

    Returns:
        ``path``.
    """
    path = Path(path)
    labels = [bool(v) for v in np.asarray(issame, dtype=bool).ravel()]
    if len(images) != 2 * len(labels):
        raise ValueError(f"{len(images)} images for {len(labels)} pairs: need exactly 2 per pair")
    bins = []
    for k, item in enumerate(images):
        if not isinstance(item, (bytes, bytearray)):
            raise TypeError(f"image {k} is a {type(item).__name__}, expected encoded bytes")
        bins.append(bytes(item))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        # As insightface's lfw2pack.py: a (list of bytes, list of bool) tuple.
        pickle.dump((bins, labels), f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return path


def pack_pairs(
    pairs_file: str | Path,
    image_root: str | Path,
    out: str | Path,
    center_crop: int | None = None,
    size: int | None = 112,
    ext: str = ".jpg",
    quality: int = 95,
) -> BinPack:
    """Turn an LFW-format pairs list over an image folder into a verification pack.

    Args:
        pairs_file: ``pairs.txt``-style list (see :func:`facerec.data.pairs.read_pairs`).
        image_root: folder holding ``<name>/<name>_<NNNN>.jpg``.
        out: the ``.bin`` file to write.
        center_crop: side of the centre crop taken before resizing (None: no crop).
        size: side of the stored square images (insightface's packs: 112). ``None`` together
            with no crop stores every file's bytes unchanged (as ``lfw2pack.py`` does).
        ext: encoding of re-encoded images, ``.jpg`` or ``.png``.
        quality: JPEG quality.

    Returns:
        The :class:`BinPack` written (each distinct image encoded once, shared by its pairs).
    """
    if center_crop and not size:
        raise ValueError("a centre crop needs a size to resize to")
    pairs, issame = read_pairs(pairs_file, image_root)
    transform = geometry(size, center_crop) if size else None
    encoded: dict[Path, bytes] = {}
    images: list[bytes] = []
    for pair in pairs:
        for p in pair:
            if p not in encoded:
                if transform is None:
                    encoded[p] = p.read_bytes()
                else:
                    encoded[p] = encode_image(transform(image=read_image(p))["image"], ext, quality)
            images.append(encoded[p])
    write_bin(out, images, issame)
    return BinPack(images, issame)
