"""Naive IJB references written from the protocol text (issue 25), not from facerec.eval.ijb*:
plain loops over faces, templates, pairs, thresholds and probes, in float64."""

from __future__ import annotations

import itertools
import math

import numpy as np


def image_feature(plain, mirror, score, norm: bool, detector: bool, flip: bool) -> np.ndarray:
    """One face: image (+ mirror), normalised unless N1, times the score if D1."""
    f = np.array(plain, dtype=np.float64) + (np.array(mirror, dtype=np.float64) if flip else 0)
    if not norm and np.linalg.norm(f) > 0:
        f = f / np.linalg.norm(f)
    return f * score if detector else f


def template_features(features, templates, medias) -> dict[int, np.ndarray]:
    """``{template id: unit feature}``: per media the mean of its faces, summed, normalised."""
    out = {}
    for t in sorted(set(int(x) for x in templates)):
        total = np.zeros(len(features[0]))
        for m in sorted(set(int(medias[i]) for i in range(len(templates)) if templates[i] == t)):
            rows = [i for i in range(len(templates)) if templates[i] == t and medias[i] == m]
            total += sum(np.asarray(features[i], np.float64) for i in rows) / len(rows)
        norm = math.sqrt(sum(v * v for v in total))
        out[t] = total / norm if norm > 0 else total
    return out


def roc_points(scores, labels) -> list[tuple[float, float, float, int, int]]:
    """``(far, tar, threshold, false accepts, true accepts)`` at +inf and at every distinct
    score, decreasing; a pair is accepted at ``score >= threshold``."""
    pos = sum(1 for y in labels if y)
    neg = len(labels) - pos
    points = []
    for t in [math.inf, *sorted(set(float(s) for s in scores), reverse=True)]:
        fa = sum(1 for s, y in zip(scores, labels, strict=True) if not y and s >= t)
        ta = sum(1 for s, y in zip(scores, labels, strict=True) if y and s >= t)
        points.append((fa / neg, ta / pos, t, fa, ta))
    return points


def conservative_tar(scores, labels, far: float) -> float:
    """The largest TAR over thresholds whose FAR is at most ``far``."""
    return max(tar for f, tar, *_ in roc_points(scores, labels) if f <= far)


def insightface_tar(scores, labels, far: float) -> float:
    """sklearn's default curve (a point whose false- and true-accept counts both step exactly
    as much before as after it is dropped), then the point nearest ``far``, the largest TAR
    among equally near ones."""
    points = roc_points(scores, labels)
    body = points[1:]
    kept = [points[0]]
    for i, p in enumerate(body):
        inner = 0 < i < len(body) - 1
        if inner and all(body[i - 1][j] - 2 * p[j] + body[i + 1][j] == 0 for j in (3, 4)):
            continue
        kept.append(p)
    nearest = min(abs(f - far) for f, *_ in kept)
    return max(tar for f, tar, *_ in kept if abs(f - far) == nearest)


def auc(scores, labels) -> float:
    points = roc_points(scores, labels)
    return sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in itertools.pairwise(points))


def search(probe_feats, probe_subjects, gallery_feats, gallery_subjects):
    """Per probe ``(mated, rank, best mate score, top score, non-mate scores)``; a tie with a
    non-mate counts against the mate."""
    out = []
    for p, s in zip(probe_feats, probe_subjects, strict=True):
        scores = [float(np.dot(p, g)) for g in gallery_feats]
        mates = [x for x, gs in zip(scores, gallery_subjects, strict=True) if gs == s]
        others = [x for x, gs in zip(scores, gallery_subjects, strict=True) if gs != s]
        best = max(mates) if mates else -math.inf
        rank = 1 + sum(1 for x in others if x >= best) if mates else 0
        out.append((bool(mates), rank, best, max(scores), others))
    return out


def cmc(found, r: int) -> float:
    mated = [f for f in found if f[0]]
    return sum(1 for f in mated if f[1] <= r) / len(mated)


def tpir_at_fpir(found, fpir: float) -> float:
    """The lowest threshold among the non-mated top scores (and -inf) letting at most
    ``fpir`` of them through (strictly above); TPIR = mated at rank 1 above it."""
    tops = [f[3] for f in found if not f[0]]
    for t in [-math.inf, *sorted(tops)]:
        if sum(1 for x in tops if x > t) <= fpir * len(tops):
            break
    mated = [f for f in found if f[0]]
    return sum(1 for f in mated if f[1] == 1 and f[2] > t) / len(mated)


def closed_tpir(found, far: float) -> float:
    """insightface's ijb_1n.py over the mated probes: the ceil(far x probes)-th largest
    non-mate score of all of them is the threshold; TPIR = mates strictly above it."""
    mated = [f for f in found if f[0]]
    negatives = sorted((x for f in mated for x in f[4]), reverse=True)
    threshold = negatives[math.ceil(len(mated) * far) - 1]
    return sum(1 for f in mated if f[2] > threshold) / len(mated)
