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
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from facerec.eval.folds import (
    ACCURACY_THRESHOLDS,
    VAL_THRESHOLDS,
    KFoldAccuracy,
    TarAtFar,
    as_issame,
    kfold_accuracy,
    make_folds,
    tar_at_far,
)
from facerec.eval.roc import auc, eer, hardest_pairs, roc_curve

__all__ = [
    "ACCURACY_THRESHOLDS",
    "VAL_THRESHOLDS",
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
    same = as_issame(issame)
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
