"""Evaluation: face verification metrics (pure numpy; figures live in ``facerec.eval.plots``)."""

from facerec.eval.verification import (
    KFoldAccuracy,
    TarAtFar,
    VerificationResult,
    auc,
    eer,
    evaluate_pairs,
    fuse_flip,
    hardest_pairs,
    kfold_accuracy,
    make_folds,
    pair_distances,
    roc_curve,
    tar_at_far,
)

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
