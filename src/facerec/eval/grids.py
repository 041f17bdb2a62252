"""Image grids for error analysis: pairs of faces side by side, each captioned."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import ArrayLike

from facerec.eval.canvas import text

__all__ = ["pair_grid_image"]


def _hwc_thumbnails(images: ArrayLike, name: str, thumb: int) -> np.ndarray:
    """uint8 ``(K, 3, H, W)`` (torch or numpy) -> uint8 ``(K, thumb, thumb, 3)``."""
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 (K, 3, H, W), got {arr.dtype} {arr.shape}")
    out = np.empty((arr.shape[0], thumb, thumb, 3), dtype=np.uint8)
    for i, chw in enumerate(arr):
        hwc = np.ascontiguousarray(chw.transpose(1, 2, 0))
        if hwc.shape[:2] != (thumb, thumb):
            hwc = cv2.resize(hwc, (thumb, thumb), interpolation=cv2.INTER_AREA)
        out[i] = hwc
    return out


def pair_grid_image(
    images_a: ArrayLike,
    images_b: ArrayLike,
    labels: Sequence[str | float] | ArrayLike,
    columns: int = 4,
    thumb: int = 112,
    title: str | None = None,
) -> np.ndarray:
    """Pairs of faces side by side, each pair captioned (e.g. with its distance).

    For the hardest pairs of an evaluation (:func:`facerec.eval.hardest_pairs`, images from
    :meth:`facerec.training.verifier.Verifier.pair_images`).

    Args:
        images_a: uint8 ``(K, 3, H, W)`` first image of each pair (numpy or a CPU tensor).
        images_b: uint8 ``(K, 3, H, W)`` second image of each pair.
        labels: ``K`` captions; numbers are printed as ``d=0.123``.
        columns: pairs per row.
        thumb: side of each thumbnail in pixels (images are resized to it).
        title: printed above the grid when given.

    Returns:
        uint8 RGB ``(H, W, 3)``; with no pairs, a small canvas saying so.
    """
    a = _hwc_thumbnails(images_a, "images_a", thumb)
    b = _hwc_thumbnails(images_b, "images_b", thumb)
    captions = [_fmt_caption(v) for v in (labels.tolist() if hasattr(labels, "tolist") else labels)]
    if not len(a) == len(b) == len(captions):
        raise ValueError(
            f"{len(a)} images_a, {len(b)} images_b and {len(captions)} labels: need one per pair"
        )
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    s = thumb / 112
    title_h = round(24 * s) if title else 0
    if len(a) == 0:
        pad, _ = _spacing(s)
        img = np.full((round(40 * s) + title_h, 2 * thumb + 3 * pad, 3), 255, dtype=np.uint8)
        centre = (img.shape[1] // 2, title_h + round(20 * s))
        text(img, "no pairs", centre, 0.45 * s, anchor="center")
    else:
        img = _tile_pairs(a, b, captions, min(columns, len(a)), title_h, s)
    if title:
        text(img, title, (img.shape[1] // 2, round(6 * s)), 0.45 * s, anchor="top")
    return img


def _spacing(s: float) -> tuple[int, int]:
    """``(pad, gap)`` in pixels for thumbnails ``s`` times 112 px wide."""
    pad = max(4, round(14 * s))  # between pairs: wide, so that pairs read as units
    gap = max(1, round(2 * s))  # between the two faces of a pair
    return pad, gap


def _tile_pairs(
    a: np.ndarray, b: np.ndarray, captions: list[str], cols: int, top: int, s: float
) -> np.ndarray:
    """Lay the pairs out in rows of ``cols``, each captioned below, on a white canvas.

    Args:
        a: uint8 ``(K, T, T, 3)`` first thumbnails, ``K >= 1``.
        b: uint8 ``(K, T, T, 3)`` second thumbnails.
        captions: ``K`` captions.
        cols: pairs per row, ``1 <= cols <= K``.
        top: pixels left free above the grid (for the title).
        s: scale of text and spacing, ``T / 112``.

    Returns:
        uint8 RGB ``(H, W, 3)``.
    """
    thumb = a.shape[1]
    pad, gap = _spacing(s)
    caption_h = round(20 * s)
    rows = math.ceil(len(a) / cols)
    tile_w, tile_h = 2 * thumb + gap, thumb + caption_h
    img = np.full(
        (top + rows * (tile_h + pad) + pad, cols * (tile_w + pad) + pad, 3), 255, dtype=np.uint8
    )
    for i, caption in enumerate(captions):
        r, c = divmod(i, cols)
        x = pad + c * (tile_w + pad)
        y = top + pad + r * (tile_h + pad)
        img[y : y + thumb, x : x + thumb] = a[i]
        img[y : y + thumb, x + thumb + gap : x + tile_w] = b[i]
        centre = (x + tile_w // 2, y + thumb + caption_h // 2)
        text(img, caption, centre, 0.45 * s, anchor="center")
    return img


def _fmt_caption(value: object) -> str:
    if isinstance(value, str):
        return value
    return f"d={float(value):.3f}"
