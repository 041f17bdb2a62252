"""Open-set identification (1:N with "unknown"): pure arrays in, numbers out.

The protocol of :func:`open_set_trials` (LFW's BLUFR in spirit): per trial, some people are
enrolled (a gallery template each, the L2-normalised sum of their gallery images' embeddings,
insightface's template rule); *mated* probes are the other images of enrolled people,
*non-mated* probes every image of people never enrolled. A probe's answer is the gallery
identity of highest cosine, or "unknown" when that cosine is below the threshold.

* **CMC rank-r** (closed set, mated probes only): the fraction whose identity is among the r best
  gallery entries. Ties count against the probe: its rank is 1 + the number of *other* entries
  scoring at least as high.
* **FPIR(t)**: the fraction of non-mated probes whose best score is ``>= t`` (a stranger
  accepted as somebody). :func:`threshold_at_rate` gives the lowest ``t`` with FPIR <= the
  target.
* **DIR(t)** (detection and identification rate, = TPIR = 1 - FNIR): the fraction of mated
  probes at rank 1 with score ``>= t``. DIR at FPIR 1% is DIR at that threshold.

These are the readings of :mod:`facerec.eval.ijb_search` (the IJB protocol over template
features, several templates per subject); this module takes a score matrix and adds the
whole CMC and DET curves and the random trials. A test checks that both agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["OpenSetResult", "Trial", "det_curve", "identity_templates", "mated_ranks",
           "open_set", "open_set_trials", "summarise", "threshold_at_rate"]  # fmt: skip


def identity_templates(
    embeddings: ArrayLike, labels: ArrayLike, dtype=np.float32, block: int = 65_536
) -> tuple[np.ndarray, np.ndarray]:
    """One template per identity: the L2-normalised sum of its images' embeddings.

    Args:
        embeddings: ``(N, D)`` (flip-fused unit vectors).
        labels: ``(N,)`` identity of each row (any sortable values).
        dtype: of the templates (float16 halves a large gallery's memory).
        block: identities summed at a time, in float64 (memory: ``block x D`` doubles).

    Returns:
        ``(templates (K, D) dtype, identities (K,))``: K distinct labels, sorted; each sum
        taken in row order.
    """
    emb = np.asarray(embeddings)
    identities, rows = np.unique(np.asarray(labels), return_inverse=True)
    order = np.argsort(rows.ravel(), kind="stable")
    starts = np.searchsorted(rows.ravel()[order], np.arange(len(identities)))
    bounds = np.append(starts, len(order))
    out = np.empty((len(identities), emb.shape[1]), dtype)
    for first in range(0, len(identities), block):
        last = min(first + block, len(identities))
        lo, hi = bounds[first], bounds[last]
        sums = np.add.reduceat(emb[order[lo:hi]].astype(np.float64), starts[first:last] - lo, 0)
        out[first:last] = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return out, identities


def mated_ranks(scores: ArrayLike, probe_labels: ArrayLike, gallery_labels: ArrayLike):
    """The 1-based rank of each probe's own identity among the gallery's.

    Args:
        scores: ``(P, K)`` similarities of P probes to K gallery identities.
        probe_labels: ``(P,)``, every one in ``gallery_labels``.
        gallery_labels: ``(K,)`` distinct.

    Returns:
        int64 ``(P,)``: 1 + the number of other entries scoring ``>=`` the true one.
    """
    s = np.asarray(scores, dtype=np.float64)
    gallery = np.asarray(gallery_labels)
    order = np.argsort(gallery, kind="stable")
    where = np.searchsorted(gallery[order], np.asarray(probe_labels))
    column = order[np.minimum(where, len(order) - 1)]
    if len(probe_labels) and not np.array_equal(gallery[column], np.asarray(probe_labels)):
        raise ValueError("every probe given to mated_ranks needs its identity in the gallery")
    true = s[np.arange(len(s)), column][:, None]
    return (s >= true).sum(axis=1).astype(np.int64)  # counts itself once: 1 + the others


def threshold_at_rate(impostor_scores: ArrayLike, rate: float) -> float:
    """The lowest threshold ``t`` whose accept rate ``mean(impostor_scores >= t)`` is at most
    ``rate``: just above the ``(floor(rate * M) + 1)``-th highest of M impostor scores.

    Raises:
        ValueError: ``rate`` outside (0, 1), or no impostor scores.
    """
    if not 0.0 < rate < 1.0:
        raise ValueError(f"a false-accept rate must lie in (0, 1), got {rate!r}")
    s = np.sort(np.asarray(impostor_scores, dtype=np.float64).ravel())[::-1]
    if len(s) == 0:
        raise ValueError("no impostor scores to calibrate a threshold on")
    allowed = int(np.floor(rate * len(s) + 1e-9))
    if allowed >= len(s):
        return float(-np.inf)
    return float(np.nextafter(s[allowed], np.inf))


@dataclass(frozen=True)
class OpenSetResult:
    """One gallery's open-set figures.

    Attributes:
        cmc: ``(R,)`` closed-set identification rate at ranks 1..R (mated probes).
        fpirs: the target false-positive identification rates.
        dir: ``(len(fpirs),)`` detection and identification rate at each.
        thresholds: ``(len(fpirs),)`` the cosine threshold reaching each.
        mated, non_mated: probe counts.
    """

    cmc: np.ndarray
    fpirs: tuple[float, ...]
    dir: np.ndarray
    thresholds: np.ndarray
    mated: int
    non_mated: int
    det: tuple[np.ndarray, np.ndarray] = field(repr=False, default=(np.zeros(0), np.zeros(0)))


def open_set(
    scores: ArrayLike,
    probe_labels: ArrayLike,
    gallery_labels: ArrayLike,
    fpirs: tuple[float, ...] = (0.01, 0.001),
    max_rank: int = 20,
) -> OpenSetResult:
    """CMC, and DIR at each FPIR, of P probes scored against K gallery identities.

    Args:
        scores: ``(P, K)`` cosine similarities.
        probe_labels: ``(P,)``; a label absent from ``gallery_labels`` is a non-mated probe.
        gallery_labels: ``(K,)`` distinct identities.
        fpirs: target false-positive identification rates, each in (0, 1).
        max_rank: the CMC curve's length (capped at K).
    """
    s = np.asarray(scores, dtype=np.float64)
    probes, gallery = np.asarray(probe_labels), np.asarray(gallery_labels)
    if s.shape != (len(probes), len(gallery)) or len(gallery) == 0:
        raise ValueError(f"scores {s.shape} must be (probes {len(probes)}, gallery {len(gallery)})")
    if len(np.unique(gallery)) != len(gallery):
        raise ValueError("gallery_labels must be distinct (one template per identity)")
    mated = np.isin(probes, gallery)
    if not mated.any() or mated.all():
        raise ValueError("open-set figures need both mated and non-mated probes")
    ranks = mated_ranks(s[mated], probes[mated], gallery)
    cmc = np.array([(ranks <= r).mean() for r in range(1, min(max_rank, len(gallery)) + 1)])
    impostor = s[~mated].max(axis=1)
    # a mated probe's score counts for DIR only when it is identified at rank 1
    genuine = np.where(ranks == 1, s[mated].max(axis=1), -np.inf)
    thresholds = np.array([threshold_at_rate(impostor, f) for f in fpirs])
    hits = np.array([(genuine >= t).mean() for t in thresholds])
    return OpenSetResult(cmc, tuple(fpirs), hits, thresholds, int(mated.sum()),
                         int((~mated).sum()), det_curve(genuine, impostor))  # fmt: skip


def det_curve(genuine: ArrayLike, impostor: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(FPIR, FNIR)`` at every threshold just above an impostor score, FPIR decreasing.

    Args:
        genuine: ``(G,)`` each mated probe's rank-1 score (-inf when not at rank 1).
        impostor: ``(M,)`` each non-mated probe's best score.
    """
    imp = np.sort(np.asarray(impostor, dtype=np.float64))
    gen = np.sort(np.asarray(genuine, dtype=np.float64))
    cuts = np.nextafter(np.unique(imp), np.inf)
    fpir = 1.0 - np.searchsorted(imp, cuts, side="left") / len(imp)
    fnir = np.searchsorted(gen, cuts, side="left") / max(len(gen), 1)
    return fpir, fnir


@dataclass(frozen=True)
class Trial:
    """One random split: image rows for the gallery (with their identity) and the probes."""

    gallery: np.ndarray
    probes: np.ndarray


def open_set_trials(
    labels: ArrayLike,
    trials: int = 10,
    enrolled: float = 0.5,
    gallery_images: int = 1,
    seed: int = 0,
) -> list[Trial]:
    """Random open-set splits of labelled images (rows of ``labels`` ``(N,)``).

    Per trial, a fraction ``enrolled`` of the people with more than ``gallery_images`` images
    are enrolled with ``gallery_images`` random images each; their other images are mated
    probes; every image of everyone else is a non-mated probe.

    Raises:
        ValueError: too few people to enrol one, or none left over as strangers.
    """
    labels = np.asarray(labels)
    people, counts = np.unique(labels, return_counts=True)
    eligible = people[counts > gallery_images]
    n_enrolled = round(enrolled * len(eligible))
    if n_enrolled < 1 or n_enrolled >= len(people):
        raise ValueError(
            f"{len(people)} people, {len(eligible)} with more than {gallery_images} image(s): "
            f"enrolling {enrolled:.0%} of them leaves no gallery or no strangers"
        )
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(trials):
        chosen = rng.choice(eligible, n_enrolled, replace=False)
        gallery = [rng.choice(np.flatnonzero(labels == p), gallery_images, replace=False)
                   for p in chosen]  # fmt: skip
        rows = np.sort(np.concatenate(gallery))
        out.append(Trial(rows, np.setdiff1d(np.arange(len(labels)), rows)))
    return out


def summarise(results: list[OpenSetResult], ranks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Mean and standard deviation over trials: ``rank1``, ``rank1_std``, ...,
    ``dir@fpir=0.01``, ``dir@fpir=0.01_std``, ``threshold@fpir=0.01``, and probe counts."""
    out: dict[str, float] = {"trials": len(results)}
    for r in ranks:
        values = [res.cmc[min(r, len(res.cmc)) - 1] for res in results]
        out[f"rank{r}"], out[f"rank{r}_std"] = float(np.mean(values)), float(np.std(values))
    for i, f in enumerate(results[0].fpirs):
        values = [res.dir[i] for res in results]
        out[f"dir@fpir={f:g}"], out[f"dir@fpir={f:g}_std"] = (
            float(np.mean(values)),
            float(np.std(values)),
        )
        out[f"threshold@fpir={f:g}"] = float(np.mean([res.thresholds[i] for res in results]))
    out["mated_probes"] = float(np.mean([r.mated for r in results]))
    out["non_mated_probes"] = float(np.mean([r.non_mated for r in results]))
    return out
