"""Comparing two models on the same verification pairs: per-pair outcomes and a paired bootstrap.

Pure functions over numpy arrays (no I/O). A run's 10-fold accuracy is the mean over its pairs of
"was this pair decided right under the threshold chosen on the other nine folds"
(:func:`pair_correct`; exactly the mean when the folds are of equal size, as in LFW's lists).
Two arms trained with the same seeds and verified on the same pairs differ by the mean of their
per-pair differences; :func:`paired_bootstrap` resamples the pairs for its interval.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from facerec.eval.folds import kfold_accuracy, make_folds

__all__ = ["PairedDifference", "pair_correct", "paired_bootstrap"]


def pair_correct(distances: ArrayLike, issame: ArrayLike, n_folds: int = 10) -> np.ndarray:
    """Whether the 10-fold protocol decided each pair right.

    Args:
        distances: ``(N,)`` squared distances of the pairs' fused embeddings.
        issame: ``(N,)`` bool ground truth.
        n_folds: folds of :func:`facerec.eval.folds.make_folds`.

    Returns:
        ``(N,)`` bool: ``(distance < threshold of the pair's fold) == issame``.
    """
    dist = np.asarray(distances, dtype=np.float64)
    same = np.asarray(issame, dtype=bool)
    folds = make_folds(same, n_folds)
    thresholds = kfold_accuracy(dist, same, folds).thresholds  # (n_folds,) in fold-id order
    return (dist < thresholds[folds]) == same


class PairedDifference(NamedTuple):
    """Mean difference of two arms' accuracies with a bootstrap interval (fractions, not %).

    Attributes:
        mean: mean over seeds and pairs of ``correct(arm) - correct(baseline)``.
        low: lower end of the ``level`` percentile interval over the bootstrap resamples.
        high: upper end.
        seeds: how many seeds the two arms share (the pairs of runs compared).
    """

    mean: float
    low: float
    high: float
    seeds: int


def paired_bootstrap(
    arm: ArrayLike, baseline: ArrayLike, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> PairedDifference:
    """The difference of two arms over the same pairs and seeds, with a paired bootstrap CI.

    One resample draws ``N`` pair indices with replacement (``rng.integers(0, N, N)``, one
    draw per resample from ``np.random.default_rng(seed)``) and applies them to every seed of
    both arms: the pairs are what the two arms share, so their difference is measured on the
    same pairs each time and the pairs' own difficulty cancels.

    Args:
        arm: ``(S, N)`` per-pair outcomes (bool or 0/1) of the arm's runs, one row per seed.
        baseline: ``(S, N)`` the baseline's runs with the same seeds in the same order.
        n_boot: resamples.
        seed: of the resampling generator (the same seed gives the same interval).
        level: coverage of the percentile interval.

    Returns:
        A :class:`PairedDifference`.
    """
    a = np.atleast_2d(np.asarray(arm, dtype=np.float64))
    b = np.atleast_2d(np.asarray(baseline, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(f"arm {a.shape} and baseline {b.shape} must have the same (seeds, pairs)")
    per_pair = (a - b).mean(axis=0)  # (N,): same indices for every seed, so average them first
    rng = np.random.default_rng(seed)
    n = per_pair.size
    means = np.array([per_pair[rng.integers(0, n, n)].mean() for _ in range(n_boot)])
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return PairedDifference(float(per_pair.mean()), float(low), float(high), a.shape[0])
