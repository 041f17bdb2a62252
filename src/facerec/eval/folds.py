"""10-fold cross-validation of the verification protocol: the folds, the accuracy with a
threshold chosen on nine folds, and TAR at a target FAR (:mod:`facerec.eval.verification`
describes the protocol)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "ACCURACY_THRESHOLDS",
    "VAL_THRESHOLDS",
    "KFoldAccuracy",
    "TarAtFar",
    "kfold_accuracy",
    "make_folds",
    "tar_at_far",
]

ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01)
"""insightface's threshold grid for the 10-fold accuracy."""
VAL_THRESHOLDS = np.arange(0, 4, 0.001)
"""insightface's (finer) threshold grid for TAR@FAR."""


class KFoldAccuracy(NamedTuple):
    """Result of :func:`kfold_accuracy`.

    Attributes:
        accuracies: ``(n_folds,)`` held-out accuracy of each fold, in fold-id order.
        mean: mean of ``accuracies``.
        std: population standard deviation of ``accuracies`` (``np.std``, as insightface).
        thresholds: ``(n_folds,)`` the threshold chosen on the training folds of each fold.
    """

    accuracies: np.ndarray
    mean: float
    std: float
    thresholds: np.ndarray


class TarAtFar(NamedTuple):
    """Result of :func:`tar_at_far` (insightface's ``val, val_std, far``).

    Attributes:
        tar: mean over folds of the held-out true-accept rate.
        std: population standard deviation of the per-fold TARs.
        far: mean over folds of the held-out false-accept rate actually obtained.
    """

    tar: float
    std: float
    far: float


# --------------------------------------------------------------------------------------------
# folds


def as_issame(issame: ArrayLike) -> np.ndarray:
    arr = np.asarray(issame)
    if arr.ndim != 1:
        raise ValueError(f"issame must have shape (N,), got {arr.shape}")
    if arr.dtype != np.bool_:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError("issame must be boolean (or 0/1)")
        arr = arr.astype(bool)
    return arr


def make_folds(issame: ArrayLike, n_folds: int = 10) -> np.ndarray:
    """Assign each pair to a cross-validation fold, keeping the file's order.

    Two layouts are recognised:

    * Fold-structured lists, like LFW ``pairs.txt`` (10 blocks of 300 same + 300 different pairs):
      when splitting the N pairs into ``n_folds`` contiguous blocks (sizes as
      ``np.array_split``, i.e. sklearn's ``KFold(shuffle=False)`` which insightface uses) gives
      every block both same and different pairs, those blocks are the folds. This reproduces
      insightface's folds exactly.
    * Anything else, e.g. LFW ``pairsDevTest.txt`` (500 same pairs, then 500 different): contiguous
      blocks would hold one kind only, so the same pairs are split into ``n_folds`` contiguous
      blocks, the different pairs likewise, and fold ``k`` gets the ``k``-th block of each (for
      pairsDevTest: 10 folds of 50 + 50). Insightface would use plain contiguous blocks here and
      get meaningless single-class folds.

    No shuffling in either case, so the folds are deterministic.

    Args:
        issame: ``(N,)`` bool, True for same-identity pairs.
        n_folds: number of folds, at least 2.

    Returns:
        ``(N,)`` int64 fold id in ``[0, n_folds)`` of each pair.

    Raises:
        ValueError: if ``n_folds < 2`` or there are fewer than ``n_folds`` same or different pairs.
    """
    same = as_issame(issame)
    n = same.size
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    n_same = int(same.sum())
    n_diff = n - n_same
    if n_same < n_folds or n_diff < n_folds:
        raise ValueError(
            f"need at least n_folds={n_folds} same and different pairs, got {n_same} same and "
            f"{n_diff} different"
        )
    folds = np.empty(n, dtype=np.int64)
    blocks = np.array_split(np.arange(n), n_folds)
    if all(same[b].any() and not same[b].all() for b in blocks):
        for k, b in enumerate(blocks):
            folds[b] = k
        return folds
    for idx in (np.flatnonzero(same), np.flatnonzero(~same)):
        for k, b in enumerate(np.array_split(idx, n_folds)):
            folds[b] = k
    return folds


def _check_dist_folds(dist: ArrayLike, issame: ArrayLike, folds: ArrayLike):
    d = np.asarray(dist, dtype=np.float64)
    same = as_issame(issame)
    f = np.asarray(folds)
    if d.ndim != 1 or d.shape != same.shape or f.shape != same.shape:
        raise ValueError(
            f"dist {d.shape}, issame {same.shape} and folds {f.shape} must all have shape (N,)"
        )
    if not np.isfinite(d).all():
        raise ValueError(f"{int((~np.isfinite(d)).sum())} distances are not finite (NaN/inf)")
    ids = np.unique(f)
    if ids.size < 2:
        raise ValueError(f"need at least 2 folds, got fold ids {ids.tolist()}")
    return d, same, f, ids


def _count_below(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each threshold, how many values are ``< threshold`` (what ``np.less`` would count)."""
    return np.searchsorted(sorted_values, thresholds, side="left")


# --------------------------------------------------------------------------------------------
# 10-fold accuracy and TAR@FAR


def kfold_accuracy(
    dist: ArrayLike,
    issame: ArrayLike,
    folds: ArrayLike,
    thresholds: ArrayLike = ACCURACY_THRESHOLDS,
) -> KFoldAccuracy:
    """Cross-validated verification accuracy (insightface's ``calculate_roc`` accuracy).

    For each fold, the threshold with the best accuracy on the other folds is chosen (the first
    one in ``thresholds`` on ties, as ``np.argmax``) and the held-out fold is scored with it;
    a pair is predicted same when ``dist < threshold``.

    Args:
        dist: ``(N,)`` pair distances.
        issame: ``(N,)`` bool ground truth.
        folds: ``(N,)`` fold id of each pair (see :func:`make_folds`); at least two distinct ids.
        thresholds: ``(T,)`` candidate thresholds (default ``np.arange(0, 4, 0.01)``).

    Returns:
        :class:`KFoldAccuracy` with per-fold accuracies (in sorted fold-id order), their mean and
        ``np.std``, and the per-fold chosen thresholds.
    """
    d, same, f, ids = _check_dist_folds(dist, issame, folds)
    thr = np.asarray(thresholds, dtype=np.float64).ravel()
    if thr.size == 0:
        raise ValueError("thresholds is empty")
    accs = np.empty(ids.size)
    best = np.empty(ids.size)
    for i, k in enumerate(ids):
        train, test = f != k, f == k
        d_same = np.sort(d[train & same])
        d_diff = np.sort(d[train & ~same])
        # correct = true accepts + true rejects; argmax over integer counts == argmax accuracy.
        correct = _count_below(d_same, thr) + (d_diff.size - _count_below(d_diff, thr))
        t = thr[int(np.argmax(correct))]
        pred = d[test] < t
        accs[i] = np.mean(pred == same[test])
        best[i] = t
    return KFoldAccuracy(accs, float(np.mean(accs)), float(np.std(accs)), best)


def _interp_slinear(x: float, xp: np.ndarray, fp: np.ndarray) -> float:
    """``scipy.interpolate.interp1d(xp, fp, kind="slinear")(x)`` for non-decreasing ``xp``.

    As scipy behaved when insightface wrote ``calculate_val``: recent scipy rejects repeated ``xp``
    ("Expect x to not have duplicates", deepinsight/insightface#2152), and a FAR curve over a
    threshold grid always has them (FAR is 0 for every threshold below the smallest distance).
    With repeated ``xp`` values (a flat stretch of the FAR curve), interp1d evaluates to the ``fp``
    of the LAST repeat at that value and interpolates from that last repeat to the first point of
    the next larger value; so does this (as does ``np.interp``, though numpy does not document
    it). Two deliberate differences at the edges: ``x`` below ``xp[0]`` returns ``fp[0]`` where
    scipy raises, and ``x == xp[-1]`` with ``xp[-1]`` repeated returns ``fp[-1]`` where scipy's
    degenerate last knot interval yields 0.
    """
    j = int(np.searchsorted(xp, x, side="right")) - 1  # last index with xp[j] <= x
    if j < 0:
        return float(fp[0])
    if j == xp.size - 1 or xp[j] == x:
        return float(fp[j])
    w = (x - xp[j]) / (xp[j + 1] - xp[j])
    return float(fp[j] + w * (fp[j + 1] - fp[j]))


def tar_at_far(
    dist: ArrayLike,
    issame: ArrayLike,
    folds: ArrayLike,
    far_target: float = 1e-3,
    thresholds: ArrayLike = VAL_THRESHOLDS,
) -> TarAtFar:
    """True-accept rate at a false-accept rate (insightface's ``calculate_val``, "VAL").

    Per fold: the FAR of the training folds is computed at every threshold (a non-decreasing
    curve); if its maximum reaches ``far_target``, the threshold is the linear interpolation of
    ``thresholds`` over that curve at ``far_target`` (see :func:`_interp_slinear` for how flat
    stretches are handled, identical to scipy's ``interp1d(kind="slinear")`` except at the
    edges), otherwise it is 0 (nothing accepted). The held-out fold's TAR and FAR at that
    threshold (``dist < threshold``) are averaged over folds.

    Args:
        dist: ``(N,)`` pair distances.
        issame: ``(N,)`` bool ground truth.
        folds: ``(N,)`` fold ids; every fold needs same and different pairs.
        far_target: the false-accept rate to measure at, e.g. ``1e-3``.
        thresholds: ``(T,)`` non-decreasing threshold grid (default ``np.arange(0, 4, 0.001)``).

    Returns:
        :class:`TarAtFar` (mean TAR, its ``np.std``, mean FAR).
    """
    d, same, f, ids = _check_dist_folds(dist, issame, folds)
    thr = np.asarray(thresholds, dtype=np.float64).ravel()
    if thr.size == 0 or np.any(np.diff(thr) < 0):
        raise ValueError("thresholds must be a non-empty non-decreasing sequence")
    tars = np.empty(ids.size)
    fars = np.empty(ids.size)
    for i, k in enumerate(ids):
        train, test = f != k, f == k
        if not (same[test].any() and (~same[test]).any() and (~same[train]).any()):
            raise ValueError(f"fold {k} or its training folds lack same or different pairs")
        d_diff = np.sort(d[train & ~same])
        far_train = _count_below(d_diff, thr) / d_diff.size
        t = _interp_slinear(far_target, far_train, thr) if far_train[-1] >= far_target else 0.0
        tars[i] = np.mean(d[test & same] < t)
        fars[i] = np.mean(d[test & ~same] < t)
    return TarAtFar(float(np.mean(tars)), float(np.std(tars)), float(np.mean(fars)))
