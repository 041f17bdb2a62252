"""Threshold-free summaries of pair distances: the ROC curve, its AUC and EER, and the hardest
false accepts / rejects for error analysis."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from facerec.eval.folds import as_issame

__all__ = ["auc", "eer", "hardest_pairs", "roc_curve"]


# --------------------------------------------------------------------------------------------
# ROC, AUC, EER


def roc_curve(scores: ArrayLike, issame: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of all pairs, predicting same when ``score >= threshold``.

    Pass similarities, or negated distances (``-dist``). Every distinct score is a threshold
    (ties form one point, as sklearn with ``drop_intermediate=False``); the curve starts at
    ``(0, 0)`` with threshold ``+inf`` and ends at ``(1, 1)``.

    Args:
        scores: ``(N,)`` higher means more likely the same identity.
        issame: ``(N,)`` bool ground truth, with both classes present.

    Returns:
        ``fpr``, ``tpr``, ``thresholds``, each ``(K,)``; ``fpr`` and ``tpr`` non-decreasing,
        ``thresholds`` decreasing.
    """
    s = np.asarray(scores, dtype=np.float64)
    same = as_issame(issame)
    if s.shape != same.shape:
        raise ValueError(f"scores {s.shape} and issame {same.shape} must both have shape (N,)")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    n_pos = int(same.sum())
    n_neg = same.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_curve needs both same and different pairs")
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    tp = np.cumsum(same[order])
    fp = np.arange(1, s.size + 1) - tp
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]  # last index of each tie group
    fpr = np.r_[0.0, fp[last] / n_neg]
    tpr = np.r_[0.0, tp[last] / n_pos]
    return fpr, tpr, np.r_[np.inf, s_sorted[last]]


def auc(fpr: ArrayLike, tpr: ArrayLike) -> float:
    """Area under a curve by the trapezoidal rule (``fpr`` must be non-decreasing)."""
    x = np.asarray(fpr, dtype=np.float64)
    y = np.asarray(tpr, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError("fpr and tpr must be 1-D of the same length >= 2")
    if np.any(np.diff(x) < 0):
        raise ValueError("fpr must be non-decreasing")
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def eer(fpr: ArrayLike, tpr: ArrayLike) -> float:
    """Equal error rate: the FPR where ``FPR == 1 - TPR`` on the piecewise-linear ROC.

    Same value as facenet's ``brentq(lambda x: 1 - x - interp1d(fpr, tpr)(x), 0, 1)``; where
    the crossing is on a vertical ROC segment, it is that segment's FPR.

    Args:
        fpr: ``(K,)`` non-decreasing, from :func:`roc_curve` (starting at 0 and ending at 1).
        tpr: ``(K,)`` non-decreasing.
    """
    x = np.asarray(fpr, dtype=np.float64)
    y = np.asarray(tpr, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError("fpr and tpr must be 1-D of the same length >= 2")
    g = x - (1.0 - y)  # FPR - FNR, non-decreasing along the curve
    i = int(np.argmax(g >= 0))
    if g[i] < 0:
        raise ValueError("the ROC curve never reaches FPR == 1 - TPR; does it end at (1, 1)?")
    if i == 0 or g[i] == 0:
        return float(x[i])
    w = -g[i - 1] / (g[i] - g[i - 1])
    return float(x[i - 1] + w * (x[i] - x[i - 1]))


# --------------------------------------------------------------------------------------------
# error analysis


def hardest_pairs(
    distances: ArrayLike, issame: ArrayLike, threshold: float | None = None, k: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """The worst false accepts and false rejects: the pairs to look at.

    A different-identity pair is worse the smaller its distance, a same-identity pair the
    larger. With a ``threshold`` only actual errors count (``dist < threshold`` accepts, as in
    :func:`kfold_accuracy`), so fewer than ``k`` may come back; without one the ``k`` hardest
    pairs of each kind are returned whether or not they are misclassified. Ties keep the
    pairs' order.

    Args:
        distances: ``(N,)`` pair distances (e.g. ``VerificationResult.distances``).
        issame: ``(N,)`` bool ground truth.
        threshold: decision threshold (e.g. ``VerificationResult.threshold``), or None.
        k: at most this many pairs of each kind.

    Returns:
        ``(false_accepts, false_rejects)``: int64 pair indices, worst first; ``false_accepts``
        are different pairs by increasing distance, ``false_rejects`` same pairs by decreasing
        distance.
    """
    d = np.asarray(distances, dtype=np.float64)
    same = as_issame(issame)
    if d.shape != same.shape:
        raise ValueError(f"distances {d.shape} and issame {same.shape} must both have shape (N,)")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    diff_idx = np.flatnonzero(~same)
    same_idx = np.flatnonzero(same)
    if threshold is not None:
        diff_idx = diff_idx[d[diff_idx] < threshold]
        same_idx = same_idx[d[same_idx] >= threshold]
    false_accepts = diff_idx[np.argsort(d[diff_idx], kind="stable")][:k]
    false_rejects = same_idx[np.argsort(-d[same_idx], kind="stable")][:k]
    return false_accepts.astype(np.int64), false_rejects.astype(np.int64)
