"""IJB 1:N identification numbers from template features: CMC and TPIR@FPIR.

* **Open set, per gallery** (:func:`open_set`, the IJB-B/C protocol's reading, what papers list
  as "TPIR@FPIR" for G1, G2 and their mean): a probe whose subject has a template in the gallery
  is *mated*, any other *non-mated*. CMC rank-r = share of mated probes whose best-scoring mate
  template ranks r or better. TPIR@FPIR: the threshold lets through at most ``FPIR x
  non-mated`` of the non-mated probes' top scores (accept ``score > threshold``); TPIR = share
  of mated probes whose mate is at rank 1 and above the threshold.
* **Closed set, G1 u G2** (:func:`closed_set`, insightface's ``ijb_1n.py``, labelled as such):
  one gallery of both, only probes with a mate; rank-r over them; "TPIR at FAR f": the
  threshold is the ``ceil(f x probes)``-th largest of *all* non-mate scores (probes x gallery),
  TPIR = share of probes whose mate scores above it (at any rank).

Ranks are pessimistic on ties: a non-mate scoring exactly the mate's score ranks ahead of it
(insightface's ``argsort`` order among ties is arbitrary). Scores are computed for ``chunk``
probes at a time: memory is ``chunk x gallery`` scores, never probes x gallery.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from facerec.eval.ijb import Templates

__all__ = ["FPIRS", "RANKS", "Searched", "average", "closed_set", "closed_set_k", "cmc",
           "identification", "open_set", "search", "tpir_at_fpir"]  # fmt: skip

FPIRS = (1e-2, 1e-1)
RANKS = (1, 5, 10)


@dataclass
class Searched:
    """Every probe searched against one gallery.

    Attributes:
        mated: bool ``(P,)`` the probe's subject has a template in the gallery.
        rank: int64 ``(P,)`` 1 + non-mates scoring at least the best mate (mated probes; 0
            for non-mated ones).
        mate: float64 ``(P,)`` the best mate score (``-inf`` for non-mated probes).
        top: float64 ``(P,)`` the best score over the whole gallery.
        top_nonmate: float64 ``(k,)`` the ``k`` largest non-mate scores of the mated probes,
            largest first (``k`` as asked of :func:`search`).
    """

    mated: np.ndarray
    rank: np.ndarray
    mate: np.ndarray
    top: np.ndarray
    top_nonmate: np.ndarray


def _chunks(n: int, size: int) -> Iterator[slice]:
    return (slice(s, min(s + size, n)) for s in range(0, n, size))


def search(
    probes: ArrayLike,
    probe_subjects: ArrayLike,
    gallery: ArrayLike,
    gallery_subjects: ArrayLike,
    keep_nonmate: int = 0,
    chunk: int = 4096,
    progress: Callable[[int], None] | None = None,
) -> Searched:
    """Score ``(P, D)`` probes against a ``(G, D)`` gallery by dot product, ``chunk`` probes at a
    time, keeping per probe its mate rank and score and its top score, and the
    ``keep_nonmate`` largest non-mate scores overall."""
    p, g = np.asarray(probes, np.float64), np.asarray(gallery, np.float64)
    ps, gs = np.asarray(probe_subjects), np.asarray(gallery_subjects)
    n = len(p)
    mated, rank = np.zeros(n, bool), np.zeros(n, np.int64)
    mate, top = np.full(n, -np.inf), np.full(n, -np.inf)
    best = np.empty(0)
    for rows in _chunks(n, chunk):
        scores = p[rows] @ g.T
        is_mate = ps[rows, None] == gs[None, :]
        mate[rows] = np.where(is_mate, scores, -np.inf).max(1, initial=-np.inf)
        nonmate = np.where(is_mate, -np.inf, scores)
        mated[rows] = is_mate.any(1)
        rank[rows] = np.where(mated[rows], 1 + (nonmate >= mate[rows, None]).sum(1), 0)
        top[rows] = scores.max(1, initial=-np.inf)
        if keep_nonmate:
            best = _largest(np.r_[best, nonmate[mated[rows]][~is_mate[mated[rows]]]], keep_nonmate)
        if progress is not None:
            progress(rows.stop - rows.start)
    return Searched(mated, rank, mate, top, best)


def _largest(values: np.ndarray, k: int) -> np.ndarray:
    if values.size > k:
        values = np.partition(values, values.size - k)[-k:]
    return np.sort(values)[::-1]


def cmc(found: Searched, ranks=RANKS) -> dict[int, float | None]:
    """Share of mated probes whose mate ranks ``r`` or better, per ``r`` (None: no mated)."""
    r = found.rank[found.mated]
    return {k: float((r <= k).mean()) if r.size else None for k in ranks}


def tpir_at_fpir(found: Searched, fpir: float) -> dict[str, float | None]:
    """TPIR (rank 1) at the threshold that lets through at most ``fpir`` of the non-mated
    probes (their top scores, accepted when strictly above it)."""
    nonmated = np.sort(found.top[~found.mated])[::-1]
    allowed = math.floor(fpir * nonmated.size + 1e-9)
    if nonmated.size == 0 or not found.mated.any():
        return {"tpir": None, "fpir": None, "threshold": None}
    threshold = float(nonmated[allowed]) if allowed < nonmated.size else -math.inf
    hit = (found.rank == 1) & (found.mate > threshold)
    return {
        "tpir": float(hit[found.mated].mean()),
        "fpir": float((nonmated > threshold).mean()),
        "threshold": threshold,
    }


def open_set(found: Searched, ranks=RANKS, fpirs=FPIRS) -> dict:
    """The per-gallery numbers: counts, CMC and TPIR@FPIR (see the module docstring)."""
    return {
        "probes": int(found.mated.size),
        "mated": int(found.mated.sum()),
        "non_mated": int((~found.mated).sum()),
        "cmc": {f"rank{k}": v for k, v in cmc(found, ranks).items()},
        "tpir_at_fpir": {f"{f:g}": tpir_at_fpir(found, f) for f in fpirs},
    }


def average(results: list[dict]) -> dict:
    """The mean over galleries of every CMC and TPIR number (None if any is None)."""

    def mean(values):
        return None if any(v is None for v in values) else float(np.mean(values))

    first = results[0]
    return {
        "cmc": {k: mean([r["cmc"][k] for r in results]) for k in first["cmc"]},
        "tpir_at_fpir": {
            f: {"tpir": mean([r["tpir_at_fpir"][f]["tpir"] for r in results])}
            for f in first["tpir_at_fpir"]
        },
    }


def closed_set_k(probes: int, fars=FPIRS) -> int:
    """How many non-mate scores :func:`closed_set` needs: ``ceil(max far x probes)``."""
    return max(math.ceil(probes * f) for f in fars)


def closed_set(found: Searched, ranks=RANKS, fars=FPIRS) -> dict:
    """insightface ``ijb_1n.py``'s numbers over the mated probes of a search of G1 u G2
    (``found`` searched with ``keep_nonmate=closed_set_k(probes)`` at least)."""
    n = int(found.mated.sum())
    out = {"probes": n, "without_mate": int((~found.mated).sum())}
    out["cmc"] = {f"rank{k}": v for k, v in cmc(found, ranks).items()}
    mates = found.mate[found.mated]
    tpir = {}
    for far in fars:
        k = min(math.ceil(n * far), found.top_nonmate.size)
        threshold = float(found.top_nonmate[k - 1]) if k > 0 else math.inf
        tpir[f"{far:g}"] = {
            "tpir": float((mates > threshold).mean()) if n else None,
            "threshold": threshold,
        }
    out["tpir_at_far"] = tpir
    return out


def identification(
    features: ArrayLike,
    templates: Templates,
    galleries: dict[str, tuple[np.ndarray, np.ndarray]],
    probes: tuple[np.ndarray, np.ndarray],
    progress: Callable[[int], None] | None = None,
) -> dict:
    """The whole 1:N report: each gallery open-set, their average, and the G1 u G2 closed-set
    reading (insightface's).

    Args:
        features: ``(T, D)`` template features in ``templates.ids`` order.
        templates: the faces' templates (:class:`facerec.eval.ijb.Templates`).
        galleries: ``{name: (template ids (G,), subject ids (G,))}``, e.g. G1 and G2.
        probes: ``(template ids (P,), subject ids (P,))``.
        progress: called with the number of probes searched, per chunk.
    """
    f = np.asarray(features, dtype=np.float64)
    probe_feats = f[templates.index(probes[0])]
    out: dict = {"galleries": {}}
    for name, (ids, subjects) in galleries.items():
        found = search(probe_feats, probes[1], f[templates.index(ids)], subjects, 0,
                       progress=progress)  # fmt: skip
        out["galleries"][name] = {"templates": len(ids), **open_set(found)}
    out["average"] = average(list(out["galleries"].values()))
    ids = np.concatenate([g[0] for g in galleries.values()])
    subjects = np.concatenate([g[1] for g in galleries.values()])
    k = closed_set_k(len(probes[0]))
    found = search(probe_feats, probes[1], f[templates.index(ids)], subjects, k, progress=progress)
    out["closed_set_union"] = {"templates": len(ids), **closed_set(found)}
    return out
