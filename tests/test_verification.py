"""facerec.eval.verification against naive loops and hand-computed cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facerec.eval import (
    auc,
    eer,
    evaluate_pairs,
    fuse_flip,
    kfold_accuracy,
    make_folds,
    pair_distances,
    roc_curve,
    tar_at_far,
)

# ----------------------------------------------------------------------------------------------
# naive references (loops, written from the protocol's description, no module helpers)


# Like insightface: one threshold at a time, np.less over the pairs.


def naive_accuracy(threshold, dist, issame):
    return np.mean(np.less(dist, threshold) == issame)


def naive_kfold(dist, issame, folds, thresholds):
    accs, best = [], []
    for k in sorted(set(folds.tolist())):
        train, test = folds != k, folds == k
        train_acc = [naive_accuracy(t, dist[train], issame[train]) for t in thresholds]
        b = 0
        for i, a in enumerate(train_acc):  # first best
            if a > train_acc[b]:
                b = i
        best.append(thresholds[b])
        accs.append(naive_accuracy(thresholds[b], dist[test], issame[test]))
    return np.array(accs), np.array(best)


def naive_far(threshold, dist, issame):
    return np.sum(np.less(dist, threshold) & ~issame) / np.sum(~issame)


def naive_tar(threshold, dist, issame):
    return np.sum(np.less(dist, threshold) & issame) / np.sum(issame)


def naive_interp(x, xp, fp):
    """Piecewise-linear, a flat stretch of xp resolved to its last point (old interp1d slinear)."""
    j = -1
    for i, v in enumerate(xp):
        if v <= x:
            j = i
    if j == len(xp) - 1 or xp[j] == x:
        return fp[j]
    return fp[j] + (x - xp[j]) / (xp[j + 1] - xp[j]) * (fp[j + 1] - fp[j])


def naive_tar_at_far(dist, issame, folds, far_target, thresholds):
    tars, fars = [], []
    for k in sorted(set(folds.tolist())):
        train, test = folds != k, folds == k
        far_train = [naive_far(t, dist[train], issame[train]) for t in thresholds]
        t = naive_interp(far_target, far_train, thresholds) if max(far_train) >= far_target else 0
        tars.append(naive_tar(t, dist[test], issame[test]))
        fars.append(naive_far(t, dist[test], issame[test]))
    return np.mean(tars), np.std(tars), np.mean(fars)


def naive_auc(scores, issame):
    """Probability that a same pair outscores a different pair (ties count one half)."""
    pos = [s for s, y in zip(scores, issame, strict=True) if y]
    neg = [s for s, y in zip(scores, issame, strict=True) if not y]
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))


def fold_layout(n_folds, n_per_kind):
    """pairs.txt layout: per fold n_per_kind same pairs then n_per_kind different pairs."""
    return np.tile(np.r_[np.ones(n_per_kind, bool), np.zeros(n_per_kind, bool)], n_folds)


def random_pairs(issame, dim=16, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    n = issame.size
    ident = rng.normal(size=(n, dim))
    e1 = ident + noise * rng.normal(size=(n, dim))
    e2 = np.where(issame[:, None], ident, rng.normal(size=(n, dim))) + noise * rng.normal(
        size=(n, dim)
    )
    f1 = e1 + 0.3 * rng.normal(size=(n, dim))
    f2 = e2 + 0.3 * rng.normal(size=(n, dim))
    return e1, e2, f1, f2


# ----------------------------------------------------------------------------------------------
# fusion and distances


def test_fuse_flip_sum_and_noflip_normalise():
    e1, _, f1, _ = random_pairs(fold_layout(2, 5), dim=8)
    fused = fuse_flip(e1, f1)
    for row, a, b in zip(fused, e1, f1, strict=True):
        expected = (a + b) / np.sqrt(np.sum((a + b) ** 2))
        np.testing.assert_allclose(row, expected, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(fuse_flip(e1), axis=1), 1.0)
    np.testing.assert_allclose(fuse_flip(e1)[0], e1[0] / np.linalg.norm(e1[0]))


def test_fuse_flip_concat_distance_is_two_minus_two_cos():
    e1, e2, f1, f2 = random_pairs(fold_layout(2, 5), dim=8)
    a, b = fuse_flip(e1, f1, "concat"), fuse_flip(e2, f2, "concat")
    assert a.shape == (20, 16)
    dist = pair_distances(a, b)
    for i in range(len(dist)):
        u, v = np.r_[e1[i], f1[i]], np.r_[e2[i], f2[i]]
        cos = float(u @ v) / (np.linalg.norm(u) * np.linalg.norm(v))
        assert dist[i] == pytest.approx(2 - 2 * cos, abs=1e-12)
    # and sum fusion is a different protocol
    assert not np.allclose(dist, pair_distances(fuse_flip(e1, f1), fuse_flip(e2, f2)))


def test_fuse_flip_errors_and_zero_rows():
    with pytest.raises(ValueError, match="method"):
        fuse_flip(np.ones((2, 3)), np.ones((2, 3)), method="mean")
    with pytest.raises(ValueError, match="same shape"):
        fuse_flip(np.ones((2, 3)), np.ones((3, 3)))
    assert np.array_equal(fuse_flip(np.zeros((1, 3))), np.zeros((1, 3)))


# ----------------------------------------------------------------------------------------------
# folds


def test_make_folds_pairs_txt_layout_is_contiguous_blocks():
    issame = fold_layout(10, 30)
    folds = make_folds(issame)
    assert np.array_equal(folds, np.repeat(np.arange(10), 60))


def test_make_folds_devtest_layout_splits_each_kind():
    issame = np.r_[np.ones(50, bool), np.zeros(50, bool)]  # like pairsDevTest, scaled down
    folds = make_folds(issame, n_folds=10)
    expected = np.r_[np.repeat(np.arange(10), 5), np.repeat(np.arange(10), 5)]
    assert np.array_equal(folds, expected)
    for k in range(10):
        assert issame[folds == k].sum() == 5 and (~issame[folds == k]).sum() == 5


def test_make_folds_uneven_and_errors():
    issame = np.tile([True, False], 23)  # 46 pairs, blocks of 5,5,5,5,5,5,4,4,4,4
    folds = make_folds(issame)
    assert np.array_equal(np.bincount(folds), [5] * 6 + [4] * 4)
    assert np.all(np.diff(folds) >= 0)
    with pytest.raises(ValueError, match="at least n_folds"):
        make_folds(np.r_[np.ones(9, bool), np.zeros(20, bool)])
    with pytest.raises(ValueError, match="at least 2"):
        make_folds(fold_layout(2, 3), n_folds=1)


# ----------------------------------------------------------------------------------------------
# k-fold accuracy


def _hand_case():
    """10 folds of: same 0.503, 0.604, 1.053 (hard); different 1.002, 1.104.

    Every threshold in (0.604, 1.002] gets 4 of 5 right; none gets all 5. The grid's first such
    threshold is 0.61, and each held-out fold then scores 0.8.
    """
    one = ([0.503, 0.604, 1.053, 1.002, 1.104], [True, True, True, False, False])
    dist = np.tile(one[0], 10)
    issame = np.tile(one[1], 10)
    return dist, issame, np.repeat(np.arange(10), 5)


def test_kfold_accuracy_hand_case_and_first_best_tie():
    dist, issame, folds = _hand_case()
    r = kfold_accuracy(dist, issame, folds)
    np.testing.assert_allclose(r.accuracies, 0.8)
    assert r.mean == pytest.approx(0.8) and r.std == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(r.thresholds, 0.61)  # first of the tied plateau
    # a tie is resolved by position in `thresholds`, not by value
    r = kfold_accuracy(dist, issame, folds, thresholds=np.array([1.0, 0.7, 0.61, 3.0]))
    np.testing.assert_allclose(r.thresholds, 1.0)


def test_kfold_tie_between_distinct_plateaus_takes_first():
    # Per fold: same 0.2 / 0.6, different 0.4 / 0.8: thresholds in (0.2, 0.4] and (0.6, 0.8] both
    # get 3 of 4, so the chosen one is whichever comes first in `thresholds`.
    dist = np.tile([0.2, 0.6, 0.4, 0.8], 4)
    issame = np.tile([True, True, False, False], 4)
    folds = np.repeat(np.arange(4), 4)
    thr = np.array([0.3, 0.7])
    r = kfold_accuracy(dist, issame, folds, thresholds=thr)
    np.testing.assert_allclose(r.thresholds, 0.3)
    r = kfold_accuracy(dist, issame, folds, thresholds=thr[::-1])
    np.testing.assert_allclose(r.thresholds, 0.7)


@pytest.mark.parametrize("layout", ["pairs_txt", "devtest"])
def test_kfold_accuracy_matches_naive_loop(layout):
    if layout == "pairs_txt":
        issame = fold_layout(10, 20)
    else:
        issame = np.r_[np.ones(150, bool), np.zeros(150, bool)]
    e1, e2, f1, f2 = random_pairs(issame, noise=1.2, seed=1)
    dist = pair_distances(fuse_flip(e1, f1), fuse_flip(e2, f2))
    folds = make_folds(issame)
    thresholds = np.arange(0, 4, 0.01)
    r = kfold_accuracy(dist, issame, folds, thresholds)
    accs, best = naive_kfold(dist, issame, folds, thresholds)
    np.testing.assert_allclose(r.accuracies, accs, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(r.thresholds, best)
    assert r.mean == pytest.approx(np.mean(accs)) and r.std == pytest.approx(np.std(accs))
    assert 0.6 < r.mean < 1.0  # a non-trivial case


def test_kfold_accuracy_rejects_nan():
    dist, issame, folds = _hand_case()
    dist[3] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        kfold_accuracy(dist, issame, folds)


# ----------------------------------------------------------------------------------------------
# TAR @ FAR


def _tar_case():
    """10 folds of 10 same (0.5 x5, 1.4 x3, 1.6 x2) and 100 different (1.5 x10, 3.5 x90) pairs."""
    one_same = [0.5] * 5 + [1.4] * 3 + [1.6] * 2
    one_diff = [1.5] * 10 + [3.5] * 90
    dist = np.tile(one_same + one_diff, 10)
    issame = np.tile([True] * 10 + [False] * 100, 10)
    return dist, issame, np.repeat(np.arange(10), 110)


@pytest.mark.parametrize(
    ("far_target", "tar", "far"),
    [
        # train FAR on grid [0,1,2,3] = [0,0,.1,.1]: 0.05 interpolates from the LAST 0 (t=1) to
        # t=2 -> threshold 1.5 (using the first 0 would give 0.75 and TAR 0.5)
        (0.05, 0.8, 0.0),
        (0.1, 1.0, 0.1),  # exactly the last FAR value -> threshold 3
        (0.5, 0.0, 0.0),  # never reached -> threshold 0, nothing accepted
    ],
)
def test_tar_at_far_hand_case(far_target, tar, far):
    dist, issame, folds = _tar_case()
    thresholds = np.array([0.0, 1.0, 2.0, 3.0])
    r = tar_at_far(dist, issame, folds, far_target=far_target, thresholds=thresholds)
    assert r.tar == pytest.approx(tar) and r.far == pytest.approx(far)
    assert r.std == pytest.approx(0.0, abs=1e-12)
    assert np.allclose(r, naive_tar_at_far(dist, issame, folds, far_target, thresholds))


def test_tar_at_far_of_tied_distances_reports_the_far_it_got():
    """A collapsed model (every distance equal): TAR 1 comes with FAR 1, not 1e-3, which is
    what the trainer's log line points out (facerec.training.report)."""
    issame = fold_layout(10, 30)
    r = tar_at_far(np.full(issame.size, 0.5), issame, make_folds(issame), far_target=1e-3)
    assert r.tar == 1.0 and r.far == 1.0


def test_tar_at_far_matches_naive_loop():
    issame = fold_layout(10, 30)
    e1, e2, f1, f2 = random_pairs(issame, noise=1.0, seed=2)
    dist = pair_distances(fuse_flip(e1, f1), fuse_flip(e2, f2))
    folds = make_folds(issame)
    thresholds = np.arange(0, 4, 0.01)
    for far_target in (1e-2, 0.05):
        r = tar_at_far(dist, issame, folds, far_target=far_target, thresholds=thresholds)
        ref = naive_tar_at_far(dist, issame, folds, far_target, thresholds)
        np.testing.assert_allclose(tuple(r), ref, rtol=0, atol=1e-12)
        assert 0 < r.tar < 1


# ----------------------------------------------------------------------------------------------
# ROC, AUC, EER


def test_roc_curve_matches_naive_points():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 12, 80) / 4.0  # many ties
    issame = rng.random(80) < 0.4
    fpr, tpr, thr = roc_curve(scores, issame)
    assert thr[0] == np.inf and fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    n_pos, n_neg = issame.sum(), (~issame).sum()
    for f, t, th in zip(fpr[1:], tpr[1:], thr[1:], strict=True):
        tp = sum(1 for s, y in zip(scores, issame, strict=True) if y and s >= th)
        fp = sum(1 for s, y in zip(scores, issame, strict=True) if not y and s >= th)
        assert (f, t) == pytest.approx((fp / n_neg, tp / n_pos))
    assert sorted(set(scores.tolist()), reverse=True) == thr[1:].tolist()
    assert auc(fpr, tpr) == pytest.approx(naive_auc(scores, issame))


def test_auc_perfect_reversed_and_random():
    issame = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    dist = np.r_[np.linspace(0, 1, 50), np.linspace(2, 3, 50)]
    fpr, tpr, _ = roc_curve(-dist, issame)
    assert auc(fpr, tpr) == 1.0 and eer(fpr, tpr) == 0.0
    fpr, tpr, _ = roc_curve(dist, issame)
    assert auc(fpr, tpr) == 0.0 and eer(fpr, tpr) == 1.0
    fpr, tpr, _ = roc_curve(np.zeros(100), issame)  # no information: the diagonal
    assert auc(fpr, tpr) == 0.5 and eer(fpr, tpr) == 0.5
    rng = np.random.default_rng(4)
    scores, labels = rng.normal(size=400), rng.random(400) < 0.5
    fpr, tpr, _ = roc_curve(scores, labels)
    assert auc(fpr, tpr) == pytest.approx(naive_auc(scores, labels))
    assert abs(auc(fpr, tpr) - 0.5) < 0.1


def test_eer_hand_case():
    # sorted scores: 4s 3s 2.5d 2s 1s 0d -1d -2d -> ROC passes through (0.25, 0.75): FAR = FRR
    scores = np.array([1, 2, 3, 4, 0, 2.5, -1, -2], dtype=float)
    issame = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    fpr, tpr, _ = roc_curve(scores, issame)
    assert eer(fpr, tpr) == pytest.approx(0.25)
    # interpolated: the ROC segment (0, 0.5) -> (0.5, 1) crosses FPR = 1 - TPR at 0.25
    assert eer([0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0]) == pytest.approx(0.25)


def test_eer_symmetric_case():
    # different-pair scores mirror the same-pair scores: at threshold 0, FAR = FRR = P(s < 0)
    s = np.random.default_rng(5).normal(1.0, 1.0, size=301)
    scores = np.r_[s, -s]
    issame = np.r_[np.ones(301, bool), np.zeros(301, bool)]
    fpr, tpr, _ = roc_curve(scores, issame)
    assert eer(fpr, tpr) == pytest.approx(np.mean(s < 0))


# ----------------------------------------------------------------------------------------------
# evaluate_pairs


def test_evaluate_pairs_with_flips():
    issame = fold_layout(10, 20)
    e1, e2, f1, f2 = random_pairs(issame, noise=1.0, seed=6)
    r = evaluate_pairs(e1, e2, issame, f1, f2)
    dist = pair_distances(fuse_flip(e1, f1), fuse_flip(e2, f2))
    accs, best = naive_kfold(dist, issame, make_folds(issame), np.arange(0, 4, 0.01))
    assert r.accuracy == pytest.approx(np.mean(accs))
    assert r.accuracy_std == pytest.approx(np.std(accs))
    assert r.threshold == pytest.approx(np.mean(best))
    noflip = pair_distances(fuse_flip(e1), fuse_flip(e2))
    accs_nf, _ = naive_kfold(noflip, issame, make_folds(issame), np.arange(0, 4, 0.01))
    assert r.accuracy_noflip == pytest.approx(np.mean(accs_nf))
    assert r.auc == pytest.approx(naive_auc(-dist, issame))
    assert 0 <= r.eer <= 0.5 and 0 <= r.tar_at_far <= 1 and r.far_target == 1e-3
    summary = r.summary()
    assert set(summary) == {
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
    }
    json.dumps(summary)
    assert all(type(v) is float for v in summary.values())
    with pytest.raises(AttributeError):
        r.accuracy = 1.0  # frozen


def test_evaluate_pairs_without_flips_concat_and_torch():
    issame = fold_layout(10, 20)
    e1, e2, f1, f2 = random_pairs(issame, seed=7)
    r = evaluate_pairs(e1, e2, issame)
    assert r.accuracy_noflip is None and "accuracy_noflip" not in r.summary()
    rt = evaluate_pairs(torch.from_numpy(e1), torch.from_numpy(e2), torch.from_numpy(issame))
    assert rt.accuracy == r.accuracy and rt.auc == r.auc
    rc = evaluate_pairs(e1, e2, issame, f1, f2, method="concat")
    dist = pair_distances(fuse_flip(e1, f1, "concat"), fuse_flip(e2, f2, "concat"))
    accs, _ = naive_kfold(dist, issame, make_folds(issame), np.arange(0, 4, 0.01))
    assert rc.accuracy == pytest.approx(np.mean(accs))
    with pytest.raises(ValueError, match="both"):
        evaluate_pairs(e1, e2, issame, f1, None)
    with pytest.raises(ValueError, match="issame"):
        evaluate_pairs(e1, e2, issame[:-2])


# ----------------------------------------------------------------------------------------------
# figures (smoke: shape, dtype, something drawn)


def test_plots_are_rgb_uint8_images():
    from facerec.eval.plots import distance_histogram_image, roc_image

    issame = fold_layout(10, 20)
    e1, e2, _, _ = random_pairs(issame, seed=8)
    dist = pair_distances(fuse_flip(e1), fuse_flip(e2))
    fpr, tpr, _ = roc_curve(-dist, issame)
    img = roc_image(fpr, tpr, size=300)
    assert img.shape == (300, 300, 3) and img.dtype == np.uint8
    blue = (img[..., 2] > 150) & (img[..., 0] < 80)  # the curve's RGB colour
    assert blue.sum() > 100
    hist = distance_histogram_image(dist, issame, size=200, threshold=1.2)
    assert hist.shape == (200, 300, 3) and hist.dtype == np.uint8
    assert (hist < 128).any()
