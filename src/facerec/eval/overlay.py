"""Several labelled curves on one set of axes (OpenCV, RGB uint8), as ``facerec compare`` draws
them: the arms' ROC curves, their accuracy against training images.

    img = lines_image([Line("arcface", fpr, tpr), Line("cosface", fpr2, tpr2)],
                      xlim=(1e-4, 1), ylim=(0, 1), xlog=True, xlabel="FAR", ylabel="TAR")
    cv2.imwrite("roc.png", img[..., ::-1])
"""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np
from numpy.typing import ArrayLike

from facerec.eval.canvas import Axes, fmt, nice_ticks, polyline, text

__all__ = ["PALETTE", "Line", "lines_image"]

# matplotlib's tab10: distinct for up to ten arms, then repeated.
PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]


class Line(NamedTuple):
    """One curve: its legend label and ``(K,)`` x and y values."""

    label: str
    x: ArrayLike
    y: ArrayLike


def ticks(lo: float, hi: float, log: bool) -> tuple[list[float], list[str]]:
    """Decades on a log axis, round values on a linear one, with their labels."""
    if log:
        values = [10.0**d for d in range(math.ceil(math.log10(lo)), math.floor(math.log10(hi)) + 1)]
        return values, [fmt(v) if v >= 0.01 else f"1e{round(math.log10(v))}" for v in values]
    values = list(nice_ticks(lo, hi))
    return values, [fmt(v) for v in values]


def lines_image(
    lines: list[Line],
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    xlog: bool = False,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    size: int = 480,
) -> np.ndarray:
    """Draw ``lines`` over shared axes with a legend (a curve of one point is a dot).

    Returns:
        ``(size, round(1.4 * size), 3)`` uint8 RGB image.
    """
    s = size / 400
    width = round(1.4 * size)
    img = np.full((size, width, 3), 255, dtype=np.uint8)
    ax = Axes(size, width, s, xlim, ylim, xlog=xlog)
    ax.draw_frame(img, *ticks(*xlim, xlog), *ticks(*ylim, False))
    fs = 0.42 * s
    for i, line in enumerate(lines):
        colour = PALETTE[i % len(PALETTE)]
        x = np.clip(np.asarray(line.x, dtype=np.float64), *xlim)
        points = ax.px(x, np.asarray(line.y, dtype=np.float64))
        polyline(img, points, colour, max(1, round(2 * s)))
        for u, v in points if len(points) < 30 else ():  # few points: mark each
            cv2.circle(img, (round(u), round(v)), max(2, round(3 * s)), colour, -1, cv2.LINE_AA)
        row = ax.y0 + round((10 + 16 * i) * s)
        polyline(img, np.array([[ax.x0 + 8 * s, row], [ax.x0 + 28 * s, row]]), colour, 2)
        text(img, line.label, (ax.x0 + round(34 * s), row), fs)
    text(img, title, (width // 2, round(8 * s)), 0.45 * s, anchor="top")
    text(img, xlabel, ((ax.x0 + ax.x1) // 2, size - round(18 * s)), fs, anchor="top")
    text(img, ylabel, (round(6 * s), round(22 * s)), fs)
    return img
