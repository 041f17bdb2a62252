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

import cv2
import numpy as np
from numpy.typing import ArrayLike

from facerec.eval.canvas import (
    AXIS,
    BLUE,
    CHANCE,
    GREEN,
    RED,
    Axes,
    fmt,
    nice_ticks,
    polyline,
    text,
)
from facerec.eval.grids import pair_grid_image
from facerec.eval.roc import auc, eer

__all__ = ["distance_histogram_image", "pair_grid_image", "roc_image"]


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
    ax = Axes(size, size, s, (far_min, 1.0), (tar_min, 1.0), xlog=True)

    decades = range(math.ceil(math.log10(far_min)), 1)
    for d in range(math.floor(math.log10(far_min)), 0):  # minor ticks 2..9 x 10^d
        for m in range(2, 10):
            if far_min <= m * 10.0**d <= 1:
                u = int(np.rint(ax.px(m * 10.0**d, tar_min)[0]))
                cv2.line(img, (u, ax.y1 - round(3 * s)), (u, ax.y1), AXIS, 1)
    xt = [10.0**d for d in decades]
    xl = ["1" if d == 0 else f"1e{d}" for d in decades]
    yt = np.linspace(tar_min, 1.0, 6)
    ax.draw_frame(img, xt, xl, yt, [f"{v:.2f}".rstrip("0").rstrip(".") for v in yt])

    # chance line TAR = FAR (a curve on a log axis)
    chance = np.logspace(math.log10(far_min), 0, 100)
    polyline(img, ax.px(chance, chance), CHANCE, 1)
    polyline(img, ax.px(np.maximum(x, far_min), y), BLUE, max(1, round(2 * s)))

    fs = 0.45 * s
    head = f"{title}   AUC={auc(x, y):.4f}   EER={100 * eer(x, y):.2f}%"
    text(img, head, (size // 2, round(10 * s)), fs, anchor="top")
    text(
        img,
        "FAR (false accept rate, log scale)",
        ((ax.x0 + ax.x1) // 2, size - round(18 * s)),
        fs,
        anchor="top",
    )
    text(img, "TAR", (round(6 * s), round(24 * s)), fs)
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
    lo, hi = value_range if value_range is not None else _distance_range(d)
    edges = np.linspace(lo, hi, bins + 1)
    hists = [np.histogram(d[m], bins=edges)[0] / max(1, int(m.sum())) for m in (same, ~same)]
    ymax = max(1e-9, max(float(h.max()) for h in hists)) * 1.08

    s = size / 400
    w = round(1.5 * size)
    img = np.full((size, w, 3), 255, dtype=np.uint8)
    ax = Axes(size, w, s, (lo, hi), (0.0, ymax))
    xt = nice_ticks(lo, hi)
    yt = nice_ticks(0.0, ymax)
    ax.draw_frame(img, xt, [fmt(v) for v in xt], yt, [fmt(v) for v in yt])

    _draw_histograms(img, ax, edges, hists, s)
    if threshold is not None:
        _draw_threshold(img, ax, threshold, s)

    _legend(img, ax, s, int(same.sum()), int((~same).sum()))
    fs = 0.45 * s
    text(
        img,
        "pair distance histograms (fraction of each class per bin)",
        (w // 2, round(10 * s)),
        fs,
        anchor="top",
    )
    text(img, "squared L2 distance", ((ax.x0 + ax.x1) // 2, size - round(18 * s)), fs, anchor="top")
    return img


def _draw_histograms(
    img: np.ndarray, ax: Axes, edges: np.ndarray, hists: list[np.ndarray], s: float
) -> None:
    """Same (green) then different (red) histograms: translucent bars under a step outline.

    Args:
        img: uint8 ``(H, W, 3)`` canvas, drawn on in place.
        ax: the axes of ``img``.
        edges: ``(B + 1,)`` bin edges.
        hists: two ``(B,)`` bar heights, same pairs first.
        s: scale of line widths.
    """
    for h, color in zip(hists, (GREEN, RED), strict=True):
        # Bars go on a copy blended back at 30 %, so the class drawn second does not hide the first.
        overlay = img.copy()
        steps = []
        for i, v in enumerate(h):
            (u0, v0), (u1, _) = ax.px(edges[i], v), ax.px(edges[i + 1], 0.0)
            if v > 0:
                cv2.rectangle(overlay, (int(u0), int(v0)), (int(u1), ax.y1), color, -1)
            steps += [(u0, v0), (u1, v0)]
        cv2.addWeighted(overlay, 0.3, img, 0.7, 0, dst=img)
        polyline(img, np.array(steps), color, max(1, round(1.5 * s)))


def _draw_threshold(img: np.ndarray, ax: Axes, threshold: float, s: float) -> None:
    """The decision threshold as a labelled vertical line across the axes."""
    u = int(np.rint(ax.px(threshold, 0.0)[0]))
    cv2.line(img, (u, ax.y0), (u, ax.y1), BLUE, max(1, round(1.5 * s)), cv2.LINE_AA)
    text(img, f"thr={threshold:.3f}", (u + round(4 * s), ax.y0 + round(10 * s)), 0.42 * s, BLUE)


def _distance_range(d: np.ndarray) -> tuple[float, float]:
    """``(0, 4)`` when every distance lies in it (squared distances of unit vectors), else
    the distances' own range (never empty)."""
    if d.size == 0 or (d.min() >= 0 and d.max() <= 4):
        return 0.0, 4.0
    lo, hi = float(d.min()), float(d.max())
    return lo, hi if hi > lo else lo + 1.0


def _legend(img: np.ndarray, ax: Axes, s: float, n_same: int, n_diff: int) -> None:
    """The two colour keys, top right."""
    fs = 0.45 * s
    for row, (label, color) in enumerate(
        ((f"same (n={n_same})", GREEN), (f"different (n={n_diff})", RED))
    ):
        yy = ax.y0 + round((12 + 18 * row) * s)
        xx = ax.x1 - round(170 * s)
        cv2.rectangle(
            img, (xx, yy - round(5 * s)), (xx + round(14 * s), yy + round(5 * s)), color, -1
        )
        text(img, label, (xx + round(20 * s), yy), fs)
