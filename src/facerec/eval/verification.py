"""Face verification metrics: the LFW protocol as insightface computes it.

Pure functions over numpy arrays; no I/O, no torch. Anything ``np.asarray`` accepts is taken as
input (a CPU torch tensor without grad works; call ``.detach().cpu()`` first otherwise). Everything
is computed in float64.

The protocol (insightface ``eval/verification.py``, which follows facenet):

1. Embeddings of each image and of its horizontal flip are fused and L2-normalised
   (:func:`fuse_flip`).
2. A pair's distance is the squared Euclidean distance of the two fused embeddings
   (:func:`pair_distances`), in ``[0, 4]``; a pair is predicted "same" when ``dist < threshold``.
3. The pairs are split into 10 folds (:func:`make_folds`). For each fold the threshold with the best
   accuracy on the other nine folds (grid ``0:4:0.01``) is applied to the held-out fold
   (:func:`kfold_accuracy`); the reported accuracy is the mean over folds (std is ``np.std``).
4. "VAL" (:func:`tar_at_far`): per fold, the threshold at which the false-accept rate on the other
   folds equals ``far_target`` (linear interpolation of the FAR curve over the grid ``0:4:0.001``)
   is applied to the held-out fold; the mean true-accept rate is TAR@FAR.

:func:`evaluate_pairs` runs all of it and returns a :class:`VerificationResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "KFoldAccuracy",
    "TarAtFar",
    "VerificationResult",
    "auc",
    "eer",
    "evaluate_pairs",
    "fuse_flip",
    "hardest_pairs",
    "kfold_accuracy",
    "make_folds",
    "pair_distances",
    "roc_curve",
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


@dataclass(frozen=True, eq=False)
class VerificationResult:
    """Everything :func:`evaluate_pairs` measures.

    Attributes:
        accuracy: mean 10-fold accuracy (flip-fused embeddings when flips were given).
        accuracy_std: population std of the per-fold accuracies.
        threshold: mean of the per-fold best distance thresholds.
        tar_at_far: mean TAR at ``far_target`` (insightface's "VAL").
        tar_std: population std of the per-fold TARs.
        far: mean FAR obtained on the held-out folds at the interpolated thresholds.
        far_target: the FAR the TAR was measured at.
        auc: area under the ROC curve of all pairs.
        eer: equal error rate (FAR == FRR) of all pairs.
        accuracy_noflip: the 10-fold accuracy of the un-flipped embeddings alone, or ``None`` when
            no flipped embeddings were given.
        fold_accuracies: ``(n_folds,)`` held-out accuracy of each fold.
        fpr: ``(K,)`` ROC false-positive rates of all pairs, increasing from 0 to 1.
        tpr: ``(K,)`` ROC true-positive rates, matching ``fpr``.
        distances: ``(N,)`` float64 squared L2 distance of each pair's fused embeddings, in the
            pairs' order (histograms, :func:`hardest_pairs`); ``None`` when not recorded.
        issame: ``(N,)`` bool ground truth matching ``distances``; ``None`` when not recorded.
    """

    accuracy: float
    accuracy_std: float
    threshold: float
    tar_at_far: float
    tar_std: float
    far: float
    far_target: float
    auc: float
    eer: float
    accuracy_noflip: float | None
    fold_accuracies: np.ndarray = field(repr=False)
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)
    distances: np.ndarray | None = field(default=None, repr=False)
    issame: np.ndarray | None = field(default=None, repr=False)

    def summary(self) -> dict[str, float]:
        """The scalar fields as plain floats (for JSON / ``add_scalar``), ``None`` ones omitted."""
        keys = (
            "accuracy",
            "accuracy_std",
            "threshold",
            "tar_at_far",
            "tar_std",
            "far",
            "far_target",
            "auc",
            "eer",
            "accuracy_noflip",
        )
        return {k: float(getattr(self, k)) for k in keys if getattr(self, k) is not None}


# --------------------------------------------------------------------------------------------
# embeddings -> distances


def _as_2d(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got {arr.shape}")
    return arr


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    # Like sklearn.preprocessing.normalize: an all-zero row stays zero instead of becoming NaN.
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm == 0, 1.0, norm)


def fuse_flip(emb: ArrayLike, emb_flip: ArrayLike | None = None, method: str = "sum") -> np.ndarray:
    """Fuse the embeddings of images and of their horizontal flips, then L2-normalise.

    Args:
        emb: ``(N, D)`` embeddings of the images.
        emb_flip: ``(N, D)`` embeddings of the horizontally flipped images, or ``None`` to only
            normalise ``emb`` (the no-flip protocol).
        method: ``"sum"``: ``normalise(emb + emb_flip)`` (insightface's default). ``"concat"``:
            ``normalise([emb, emb_flip])`` along the feature axis, ``(N, 2D)`` (the CosFace paper);
            on unit vectors the squared Euclidean distance is ``2 - 2 cos``, so thresholding it is
            the cosine-similarity protocol. Neither normalises the two parts before fusing, as
            insightface does not.

    Returns:
        ``(N, D)`` (``sum`` or no flip) or ``(N, 2D)`` (``concat``) float64 unit vectors; all-zero
        rows stay zero.
    """
    e = _as_2d(emb, "emb")
    if emb_flip is None:
        return _l2_normalise(e)
    f = _as_2d(emb_flip, "emb_flip")
    if f.shape != e.shape:
        raise ValueError(f"emb {e.shape} and emb_flip {f.shape} must have the same shape")
    if method == "sum":
        return _l2_normalise(e + f)
    if method == "concat":
        return _l2_normalise(np.concatenate([e, f], axis=1))
    raise ValueError(f"method must be 'sum' or 'concat', got {method!r}")


def pair_distances(emb1: ArrayLike, emb2: ArrayLike) -> np.ndarray:
    """Squared Euclidean distance of each pair.

    Args:
        emb1: ``(N, D)`` embeddings of the first image of each pair (normalise them first, e.g.
            with :func:`fuse_flip`, for the thresholds ``0..4`` to make sense).
        emb2: ``(N, D)`` embeddings of the second image of each pair.

    Returns:
        ``(N,)`` float64 distances ``sum((emb1 - emb2) ** 2, axis=1)``.
    """
    a = _as_2d(emb1, "emb1")
    b = _as_2d(emb2, "emb2")
    if a.shape != b.shape:
        raise ValueError(f"emb1 {a.shape} and emb2 {b.shape} must have the same shape")
    return np.sum(np.square(a - b), axis=1)


# --------------------------------------------------------------------------------------------
# folds


def _as_issame(issame: ArrayLike) -> np.ndarray:
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
    same = _as_issame(issame)
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
    same = _as_issame(issame)
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
    same = _as_issame(issame)
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
    same = _as_issame(issame)
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


# --------------------------------------------------------------------------------------------
# everything at once


def evaluate_pairs(
    emb1: ArrayLike,
    emb2: ArrayLike,
    issame: ArrayLike,
    emb1_flip: ArrayLike | None = None,
    emb2_flip: ArrayLike | None = None,
    method: str = "sum",
    n_folds: int = 10,
    far_target: float = 1e-3,
) -> VerificationResult:
    """Run the full verification protocol on the embeddings of N pairs.

    Args:
        emb1: ``(N, D)`` raw (un-normalised) embeddings of each pair's first image.
        emb2: ``(N, D)`` embeddings of each pair's second image.
        issame: ``(N,)`` bool ground truth.
        emb1_flip: ``(N, D)`` embeddings of the flipped first images, or ``None``.
        emb2_flip: ``(N, D)`` embeddings of the flipped second images; give both flips or neither.
        method: flip fusion, ``"sum"`` or ``"concat"`` (see :func:`fuse_flip`).
        n_folds: number of cross-validation folds (see :func:`make_folds`).
        far_target: FAR for :func:`tar_at_far`.

    Returns:
        A :class:`VerificationResult` (with the per-pair ``distances`` and ``issame``);
        ``accuracy_noflip`` is set only when flips are given.
    """
    if (emb1_flip is None) != (emb2_flip is None):
        raise ValueError("give both emb1_flip and emb2_flip, or neither")
    same = _as_issame(issame)
    dist = pair_distances(fuse_flip(emb1, emb1_flip, method), fuse_flip(emb2, emb2_flip, method))
    if dist.shape != same.shape:
        raise ValueError(f"{dist.size} pairs of embeddings but {same.size} issame labels")
    folds = make_folds(same, n_folds)
    acc = kfold_accuracy(dist, same, folds)
    val = tar_at_far(dist, same, folds, far_target=far_target)
    fpr, tpr, _ = roc_curve(-dist, same)
    acc_noflip = None
    if emb1_flip is not None:
        dist_noflip = pair_distances(fuse_flip(emb1), fuse_flip(emb2))
        acc_noflip = kfold_accuracy(dist_noflip, same, folds).mean
    return VerificationResult(
        accuracy=acc.mean,
        accuracy_std=acc.std,
        threshold=float(np.mean(acc.thresholds)),
        tar_at_far=val.tar,
        tar_std=val.std,
        far=val.far,
        far_target=float(far_target),
        auc=auc(fpr, tpr),
        eer=eer(fpr, tpr),
        accuracy_noflip=acc_noflip,
        fold_accuracies=acc.accuracies,
        fpr=fpr,
        tpr=tpr,
        distances=dist,
        issame=same.copy(),  # not the caller's array, which they may change
    )
