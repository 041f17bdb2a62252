"""Verification figures drawn with OpenCV (no matplotlib), as RGB ``uint8`` arrays.

Every function returns an ``(H, W, 3)`` RGB image for TensorBoard::

    writer.add_image("val/lfw_roc", roc_image(result.fpr, result.tpr), step, dataformats="HWC")
    fa, fr = hardest_pairs(result.distances, result.issame, result.threshold, k=8)
    a, b = verifier.pair_images(fa)
    writer.add_image("val/lfw_false_accepts", pair_grid_image(a, b, result.distances[fa]),
                     step, dataformats="HWC")

To save one with OpenCV, convert to BGR first: ``cv2.imwrite(path, img[..., ::-1])``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import ArrayLike

from facerec.eval.verification import auc, eer

__all__ = ["distance_histogram_image", "pair_grid_image", "roc_image"]

_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)
_GRID = (225, 225, 225)
_AXIS = (90, 90, 90)
_CHANCE = (190, 190, 190)
_BLUE = (31, 119, 180)
_GREEN = (44, 160, 44)
_RED = (214, 39, 40)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


class _Axes:
    """Maps data coordinates to pixels inside the margins of a canvas."""

    def __init__(self, h: int, w: int, scale: float, xlim, ylim, xlog: bool = False):
        self.scale = scale
        self.x0, self.x1 = round(62 * scale), w - round(18 * scale)
        self.y0, self.y1 = round(34 * scale), h - round(44 * scale)
        self.xlog = xlog
        self.xlim = tuple(math.log10(v) for v in xlim) if xlog else tuple(xlim)
        self.ylim = ylim

    def px(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        x = np.log10(x) if self.xlog else np.asarray(x, dtype=np.float64)
        fx = (x - self.xlim[0]) / (self.xlim[1] - self.xlim[0])
        fy = (np.asarray(y, dtype=np.float64) - self.ylim[0]) / (self.ylim[1] - self.ylim[0])
        u = self.x0 + np.clip(fx, 0, 1) * (self.x1 - self.x0)
        v = self.y1 - np.clip(fy, 0, 1) * (self.y1 - self.y0)
        return np.stack(np.broadcast_arrays(u, v), axis=-1)

    def draw_frame(self, img: np.ndarray, xticks, xlabels, yticks, ylabels) -> None:
        fs = 0.42 * self.scale
        for t, label in zip(xticks, xlabels, strict=True):
            u = int(np.rint(self.px(t, self.ylim[0])[0]))
            cv2.line(img, (u, self.y0), (u, self.y1), _GRID, 1)
            cv2.line(img, (u, self.y1), (u, self.y1 + round(4 * self.scale)), _AXIS, 1)
            _text(img, label, (u, self.y1 + round(8 * self.scale)), fs, anchor="top")
        for t, label in zip(yticks, ylabels, strict=True):
            v = int(np.rint(self.px(self._xmin(), t)[1]))
            cv2.line(img, (self.x0, v), (self.x1, v), _GRID, 1)
            cv2.line(img, (self.x0 - round(4 * self.scale), v), (self.x0, v), _AXIS, 1)
            _text(img, label, (self.x0 - round(7 * self.scale), v), fs, anchor="right")
        cv2.rectangle(img, (self.x0, self.y0), (self.x1, self.y1), _AXIS, 1)

    def _xmin(self) -> float:
        return 10 ** self.xlim[0] if self.xlog else self.xlim[0]


def _text(
    img: np.ndarray,
    text: str,
    org: tuple[int, int],
    font_scale: float,
    color=_BLACK,
    anchor: str = "left",
    thickness: int = 1,
) -> None:
    """``cv2.putText`` with ``org`` as the left-middle, right-middle, top-centre or centre point."""
    (tw, th), _ = cv2.getTextSize(text, _FONT, font_scale, thickness)
    x, y = org
    if anchor == "left":
        y += th // 2
    elif anchor == "right":
        x, y = x - tw, y + th // 2
    elif anchor == "top":
        x, y = x - tw // 2, y + th
    elif anchor == "center":
        x, y = x - tw // 2, y + th // 2
    else:
        raise ValueError(anchor)
    cv2.putText(img, text, (int(x), int(y)), _FONT, font_scale, color, thickness, cv2.LINE_AA)


def _polyline(img: np.ndarray, pts: np.ndarray, color, thickness: int) -> None:
    pts = np.round(pts).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(img, [pts], False, color, thickness, cv2.LINE_AA)


def roc_image(
    fpr: ArrayLike,
    tpr: ArrayLike,
    size: int = 400,
    far_min: float = 1e-4,
    tar_min: float = 0.0,
    title: str = "ROC",
) -> np.ndarray:
    """Draw a ROC curve with a logarithmic FAR axis, as face-recognition papers plot it.

    Args:
        fpr: ``(K,)`` false-accept rates, non-decreasing (e.g. ``VerificationResult.fpr``).
        tpr: ``(K,)`` true-accept rates.
        size: image height and width in pixels; text and margins scale with it.
        far_min: left end of the FAR axis (right end is 1); smaller FARs are drawn at the edge.
        tar_min: bottom of the TAR axis (raise it, e.g. to 0.9, to zoom in on a good model).
        title: printed before the AUC and EER at the top.

    Returns:
        ``(size, size, 3)`` uint8 RGB image.
    """
    x = np.asarray(fpr, dtype=np.float64)
    y = np.asarray(tpr, dtype=np.float64)
    if not 0 < far_min < 1 or not 0 <= tar_min < 1:
        raise ValueError("need 0 < far_min < 1 and 0 <= tar_min < 1")
    s = size / 400
    img = np.full((size, size, 3), 255, dtype=np.uint8)
    ax = _Axes(size, size, s, (far_min, 1.0), (tar_min, 1.0), xlog=True)

    decades = range(math.ceil(math.log10(far_min)), 1)
    for d in range(math.floor(math.log10(far_min)), 0):  # minor ticks 2..9 x 10^d
        for m in range(2, 10):
            if far_min <= m * 10.0**d <= 1:
                u = int(np.rint(ax.px(m * 10.0**d, tar_min)[0]))
                cv2.line(img, (u, ax.y1 - round(3 * s)), (u, ax.y1), _AXIS, 1)
    xt = [10.0**d for d in decades]
    xl = ["1" if d == 0 else f"1e{d}" for d in decades]
    yt = np.linspace(tar_min, 1.0, 6)
    ax.draw_frame(img, xt, xl, yt, [f"{v:.2f}".rstrip("0").rstrip(".") for v in yt])

    # chance line TAR = FAR (a curve on a log axis)
    chance = np.logspace(math.log10(far_min), 0, 100)
    _polyline(img, ax.px(chance, chance), _CHANCE, 1)
    _polyline(img, ax.px(np.maximum(x, far_min), y), _BLUE, max(1, round(2 * s)))

    fs = 0.45 * s
    head = f"{title}   AUC={auc(x, y):.4f}   EER={100 * eer(x, y):.2f}%"
    _text(img, head, (size // 2, round(10 * s)), fs, anchor="top")
    _text(
        img,
        "FAR (false accept rate, log scale)",
        ((ax.x0 + ax.x1) // 2, size - round(18 * s)),
        fs,
        anchor="top",
    )
    _text(img, "TAR", (round(6 * s), round(24 * s)), fs)
    return img


def distance_histogram_image(
    dist: ArrayLike,
    issame: ArrayLike,
    size: int = 400,
    bins: int = 60,
    threshold: float | None = None,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Draw the histograms of same-pair and different-pair distances.

    Each histogram is normalised by its own number of pairs (so both are visible when the classes
    are unbalanced); the y axis is the fraction of that class's pairs per bin.

    Args:
        dist: ``(N,)`` pair distances (squared Euclidean on unit vectors: ``[0, 4]``).
        issame: ``(N,)`` bool ground truth.
        size: image height in pixels; the width is ``1.5 * size``.
        bins: number of histogram bins.
        threshold: if given (e.g. ``VerificationResult.threshold``), drawn as a vertical line.
        value_range: x-axis range; default ``(0, 4)`` when all distances lie in it, else their
            min and max.

    Returns:
        ``(size, round(1.5 * size), 3)`` uint8 RGB image.
    """
    d = np.asarray(dist, dtype=np.float64)
    same = np.asarray(issame, dtype=bool)
    if d.shape != same.shape or d.ndim != 1:
        raise ValueError(f"dist {d.shape} and issame {same.shape} must both have shape (N,)")
    if value_range is None:
        lo, hi = (
            (0.0, 4.0) if d.size == 0 or (d.min() >= 0 and d.max() <= 4) else (d.min(), d.max())
        )
        if hi <= lo:
            hi = lo + 1.0
    else:
        lo, hi = value_range
    edges = np.linspace(lo, hi, bins + 1)
    hists = []
    for mask in (same, ~same):
        h, _ = np.histogram(d[mask], bins=edges)
        hists.append(h / max(1, int(mask.sum())))
    ymax = max(1e-9, max(float(h.max()) for h in hists)) * 1.08

    s = size / 400
    w = round(1.5 * size)
    img = np.full((size, w, 3), 255, dtype=np.uint8)
    ax = _Axes(size, w, s, (lo, hi), (0.0, ymax))
    xt = _nice_ticks(lo, hi)
    yt = _nice_ticks(0.0, ymax)
    ax.draw_frame(img, xt, [_fmt(v) for v in xt], yt, [_fmt(v) for v in yt])

    for h, color in zip(hists, (_GREEN, _RED), strict=True):
        overlay = img.copy()
        steps = []
        for i, v in enumerate(h):
            (u0, v0), (u1, _) = ax.px(edges[i], v), ax.px(edges[i + 1], 0.0)
            if v > 0:
                cv2.rectangle(overlay, (int(u0), int(v0)), (int(u1), ax.y1), color, -1)
            steps += [(u0, v0), (u1, v0)]
        cv2.addWeighted(overlay, 0.3, img, 0.7, 0, dst=img)
        _polyline(img, np.array(steps), color, max(1, round(1.5 * s)))
    if threshold is not None:
        u = int(np.rint(ax.px(threshold, 0.0)[0]))
        cv2.line(img, (u, ax.y0), (u, ax.y1), _BLUE, max(1, round(1.5 * s)), cv2.LINE_AA)
        _text(
            img, f"thr={threshold:.3f}", (u + round(4 * s), ax.y0 + round(10 * s)), 0.42 * s, _BLUE
        )

    fs = 0.45 * s
    n_same, n_diff = int(same.sum()), int((~same).sum())
    for row, (label, color) in enumerate(
        ((f"same (n={n_same})", _GREEN), (f"different (n={n_diff})", _RED))
    ):
        yy = ax.y0 + round((12 + 18 * row) * s)
        xx = ax.x1 - round(170 * s)
        cv2.rectangle(
            img, (xx, yy - round(5 * s)), (xx + round(14 * s), yy + round(5 * s)), color, -1
        )
        _text(img, label, (xx + round(20 * s), yy), fs)
    _text(
        img,
        "pair distance histograms (fraction of each class per bin)",
        (w // 2, round(10 * s)),
        fs,
        anchor="top",
    )
    _text(
        img, "squared L2 distance", ((ax.x0 + ax.x1) // 2, size - round(18 * s)), fs, anchor="top"
    )
    return img


def _nice_ticks(lo: float, hi: float, n: int = 5) -> np.ndarray:
    """About ``n`` round tick values covering ``[lo, hi]``."""
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return np.arange(start, hi + step * 1e-9, step)


def _fmt(v: float) -> str:
    return f"{v:.3f}".rstrip("0").rstrip(".") if v != 0 else "0"


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
    :meth:`facerec.evaluate.Verifier.pair_images`).

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
    pad = max(4, round(14 * s))  # between pairs: wide, so that pairs read as units
    gap = max(1, round(2 * s))  # between the two faces of a pair
    caption_h = round(20 * s)
    title_h = round(24 * s) if title else 0
    fs = 0.45 * s
    if len(a) == 0:
        img = np.full((round(40 * s) + title_h, 2 * thumb + 3 * pad, 3), 255, dtype=np.uint8)
        _text(img, "no pairs", (img.shape[1] // 2, title_h + round(20 * s)), fs, anchor="center")
    else:
        cols = min(columns, len(a))
        rows = math.ceil(len(a) / cols)
        tile_w, tile_h = 2 * thumb + gap, thumb + caption_h
        img = np.full(
            (title_h + rows * (tile_h + pad) + pad, cols * (tile_w + pad) + pad, 3),
            255,
            dtype=np.uint8,
        )
        for i, caption in enumerate(captions):
            r, c = divmod(i, cols)
            x = pad + c * (tile_w + pad)
            y = title_h + pad + r * (tile_h + pad)
            img[y : y + thumb, x : x + thumb] = a[i]
            img[y : y + thumb, x + thumb + gap : x + tile_w] = b[i]
            _text(img, caption, (x + tile_w // 2, y + thumb + caption_h // 2), fs, anchor="center")
    if title:
        _text(img, title, (img.shape[1] // 2, round(6 * s)), fs, anchor="top")
    return img


def _fmt_caption(value: object) -> str:
    if isinstance(value, str):
        return value
    return f"d={float(value):.3f}"
