"""Drawing primitives of the verification figures (OpenCV, RGB uint8): colours, axes that map
data to pixels, anchored text, polylines and tick values."""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["Axes", "fmt", "nice_ticks", "polyline", "text"]

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
GRID = (225, 225, 225)
AXIS = (90, 90, 90)
CHANCE = (190, 190, 190)
BLUE = (31, 119, 180)
GREEN = (44, 160, 44)
RED = (214, 39, 40)
FONT = cv2.FONT_HERSHEY_SIMPLEX


class Axes:
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
            cv2.line(img, (u, self.y0), (u, self.y1), GRID, 1)
            cv2.line(img, (u, self.y1), (u, self.y1 + round(4 * self.scale)), AXIS, 1)
            text(img, label, (u, self.y1 + round(8 * self.scale)), fs, anchor="top")
        for t, label in zip(yticks, ylabels, strict=True):
            v = int(np.rint(self.px(self._xmin(), t)[1]))
            cv2.line(img, (self.x0, v), (self.x1, v), GRID, 1)
            cv2.line(img, (self.x0 - round(4 * self.scale), v), (self.x0, v), AXIS, 1)
            text(img, label, (self.x0 - round(7 * self.scale), v), fs, anchor="right")
        cv2.rectangle(img, (self.x0, self.y0), (self.x1, self.y1), AXIS, 1)

    def _xmin(self) -> float:
        return 10 ** self.xlim[0] if self.xlog else self.xlim[0]


def text(
    img: np.ndarray,
    text: str,
    org: tuple[int, int],
    font_scale: float,
    color=BLACK,
    anchor: str = "left",
    thickness: int = 1,
) -> None:
    """``cv2.putText`` with ``org`` as the left-middle, right-middle, top-centre or centre point."""
    (tw, th), _ = cv2.getTextSize(text, FONT, font_scale, thickness)
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
    cv2.putText(img, text, (int(x), int(y)), FONT, font_scale, color, thickness, cv2.LINE_AA)


def polyline(img: np.ndarray, pts: np.ndarray, color, thickness: int) -> None:
    pts = np.round(pts).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(img, [pts], False, color, thickness, cv2.LINE_AA)


def nice_ticks(lo: float, hi: float, n: int = 5) -> np.ndarray:
    """About ``n`` round tick values covering ``[lo, hi]``."""
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return np.arange(start, hi + step * 1e-9, step)


def fmt(v: float) -> str:
    return f"{v:.3f}".rstrip("0").rstrip(".") if v != 0 else "0"
