"""IJB 1:1 verification numbers from template-pair scores: ROC, AUC and TAR@FAR read two ways.

* **insightface's reading** (``ijb_11.py``, arcface_torch's ``eval_ijbc.py``, the numbers model
  zoos and most papers print): the ROC as ``sklearn.metrics.roc_curve`` returns it by default
  (``drop_intermediate=True``: points collinear with both neighbours removed), and at each target
  FAR the point whose FAR is *nearest* the target, the largest TAR on ties. Its FAR may be
  above the target.
* **the conservative reading**: the largest TAR among thresholds whose FAR is at most the target
  (on the full ROC). Never above insightface's at the same curve point; equal when a ROC point
  sits exactly at the target.

A pair is accepted when ``score >= threshold``. Both readings come with the FAR actually
reached and the threshold. AUC by the trapezoidal rule (the same with or without the dropped
points).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from facerec.eval.roc import auc, roc_curve

__all__ = ["FARS", "OperatingPoint", "VerificationNumbers", "insightface_roc", "verify"]

# The FAR columns of insightface's IJB table.
FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass(frozen=True)
class OperatingPoint:
    """One point of the ROC: ``tar`` and ``far`` at ``threshold`` (accept ``score >= it``;
    ``inf``: nothing accepted)."""

    tar: float
    far: float
    threshold: float

    def as_dict(self) -> dict[str, float]:
        return {"tar": self.tar, "far": self.far, "threshold": self.threshold}


def insightface_roc(
    fpr: ArrayLike, tpr: ArrayLike, thresholds: ArrayLike, negatives: int, positives: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full ROC thinned as ``sklearn.metrics.roc_curve(drop_intermediate=True)`` thins it.

    A point (after the leading ``(0, 0)``) is dropped when the second differences of both the
    false- and true-positive counts are zero there: it lies on a straight run of equal steps.

    Args:
        fpr, tpr, thresholds: ``(K,)`` from :func:`facerec.eval.roc.roc_curve`.
        negatives, positives: the pair counts the rates were divided by.

    Returns:
        ``fpr``, ``tpr``, ``thresholds`` of the kept points, starting at ``(0, 0, inf)``.
    """
    fpr, tpr, thr = (np.asarray(x, dtype=np.float64) for x in (fpr, tpr, thresholds))
    fps, tps = np.rint(fpr[1:] * negatives), np.rint(tpr[1:] * positives)
    keep = np.ones(len(fps), dtype=bool)
    if len(fps) > 2:
        keep[1:-1] = (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0)
    return np.r_[fpr[0], fpr[1:][keep]], np.r_[tpr[0], tpr[1:][keep]], np.r_[thr[0], thr[1:][keep]]


def nearest_point(fpr: np.ndarray, tpr: np.ndarray, thr: np.ndarray, far: float) -> OperatingPoint:
    """insightface's reading: the point whose FAR is nearest ``far``, the last (largest TAR)
    of equally near ones."""
    distance = np.abs(fpr - far)
    i = len(distance) - 1 - int(np.argmin(distance[::-1]))
    return OperatingPoint(float(tpr[i]), float(fpr[i]), float(thr[i]))


def conservative_point(
    fpr: np.ndarray, tpr: np.ndarray, thr: np.ndarray, far: float
) -> OperatingPoint:
    """The largest TAR with FAR <= ``far`` (the curve starts at FAR 0, so one always exists)."""
    i = int(np.searchsorted(fpr, far, side="right")) - 1
    return OperatingPoint(float(tpr[i]), float(fpr[i]), float(thr[i]))


@dataclass
class VerificationNumbers:
    """What one 1:1 run reports.

    Attributes:
        pairs, positives, negatives: counts.
        auc: area under the full ROC.
        insightface, conservative: ``{far: OperatingPoint}`` per target FAR.
        fpr, tpr: the full ROC ``(K,)`` (for figures; not in :meth:`summary`).
    """

    pairs: int
    positives: int
    negatives: int
    auc: float
    insightface: dict[float, OperatingPoint]
    conservative: dict[float, OperatingPoint]
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)

    def resolvable(self, far: float) -> bool:
        """Whether ``far`` is at least one negative pair's share (1 / negatives)."""
        return far * self.negatives >= 1

    def summary(self) -> dict:
        """Plain numbers for JSON: counts, AUC, and per FAR both readings labelled."""
        return {
            "pairs": self.pairs,
            "positives": self.positives,
            "negatives": self.negatives,
            "auc": self.auc,
            "tar_at_far": {
                f"{far:g}": {
                    "insightface_nearest": self.insightface[far].as_dict(),
                    "conservative": self.conservative[far].as_dict(),
                    "resolvable": self.resolvable(far),
                }
                for far in self.insightface
            },
        }


def verify(scores: ArrayLike, labels: ArrayLike, fars=FARS) -> VerificationNumbers:
    """ROC, AUC and TAR at each of ``fars`` read both ways.

    Args:
        scores: ``(P,)`` pair similarities (higher: more likely the same person).
        labels: ``(P,)`` 1 / True for same-person pairs, 0 / False otherwise; both present.
        fars: target FARs, each in (0, 1].

    Memory: the full ROC sorts all scores (IJB-C's 15.7M pairs: a few 125 MB arrays at once).
    """
    same = np.asarray(labels).astype(bool)
    fpr, tpr, thr = roc_curve(scores, same)
    positives = int(same.sum())
    negatives = same.size - positives
    thin = insightface_roc(fpr, tpr, thr, negatives, positives)
    for far in fars:
        if not 0 < far <= 1 or math.isnan(far):
            raise ValueError(f"target FAR {far!r} is not in (0, 1]")
    return VerificationNumbers(
        pairs=same.size,
        positives=positives,
        negatives=negatives,
        auc=auc(fpr, tpr),
        insightface={far: nearest_point(*thin, far) for far in fars},
        conservative={far: conservative_point(fpr, tpr, thr, far) for far in fars},
        fpr=fpr,
        tpr=tpr,
    )


def roc_for_figure(fpr: ArrayLike, tpr: ArrayLike, points: int = 2000):
    """The ROC at ``points`` log-spaced FARs from the smallest non-zero one to 1 (the largest
    TAR with FAR <= each), for drawing: IJB-C's full curve has millions of points."""
    x, y = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    positive = x[x > 0]
    if positive.size == 0:
        return x, y
    grid = np.r_[0.0, np.logspace(np.log10(positive[0]), 0, points)]
    i = np.searchsorted(x, grid, side="right") - 1
    return grid, y[i]
