"""The open-set figures: the CMC curve and the DET curve (FNIR against FPIR), mean of trials."""

from __future__ import annotations

import numpy as np

from facerec.eval.overlay import Line, lines_image

__all__ = ["cmc_image", "det_image"]


def cmc_image(results: list) -> np.ndarray:
    """Identification rate against rank, averaged over trials (:class:`OpenSetResult` s).

    Returns:
        uint8 RGB ``(H, W, 3)``.
    """
    n = min(len(r.cmc) for r in results)
    mean = np.mean([r.cmc[:n] for r in results], axis=0)
    low = max(0.0, float(np.floor(mean.min() * 10) / 10))
    return lines_image([Line("closed-set CMC", np.arange(1, n + 1), mean)], xlim=(1, max(n, 2)),
                       ylim=(low, 1.0), title="CMC (mated probes)", xlabel="rank",
                       ylabel="identification rate")  # fmt: skip


def det_image(results: list, points: int = 60) -> np.ndarray:
    """FNIR (1 - DIR) against FPIR on a log axis, averaged over trials.

    Returns:
        uint8 RGB ``(H, W, 3)``.
    """
    lowest = max(min(1.0 / r.non_mated for r in results), 1e-4)
    grid = np.logspace(np.log10(lowest), 0, points)
    curves = []
    for r in results:
        fpir, fnir = r.det
        order = np.argsort(fpir)
        curves.append(np.interp(grid, fpir[order], fnir[order]))
    return lines_image([Line("open-set DET", grid, np.mean(curves, axis=0))],
                       xlim=(grid[0], 1.0), ylim=(0.0, 1.0), xlog=True,
                       title="DET (mean of trials)", xlabel="FPIR", ylabel="FNIR")  # fmt: skip
