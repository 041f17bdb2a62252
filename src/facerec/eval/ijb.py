"""IJB-B / IJB-C templates: image features -> template features -> 1:1 pair scores.

The rules of insightface's ``recognition/_evaluation_/ijb`` scripts and arcface_torch's
``eval_ijbc.py`` (the numbers papers report), as pure numpy:

1. Image feature (:func:`image_features`, :class:`Mode`): the raw embedding of the aligned face,
   plus that of its mirror (F1), L2-normalised (N0) or not (N1), times the detector score (D1).
2. Template feature (:class:`Templates`, :class:`TemplateSums`): within a template, the faces of
   one media (the frames of a video, or one still) are averaged; the media means are summed; the
   sum is L2-normalised (an all-zero sum stays zero, as ``sklearn.preprocessing.normalize``).
3. Pair score (:func:`pair_scores`): the dot product of the two template features.

Chunked throughout: image features may arrive chunk by chunk from a disk cache
(:meth:`TemplateSums.add`), and pairs are scored in batches, so IJB-C's 469,375 faces and
15.7M pairs never need all image features, or all gathered pair features, in memory.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["MODES", "Mode", "TemplateSums", "Templates", "image_features", "modes", "pair_scores"]

Progress = Callable[[int], None] | None


@dataclass(frozen=True)
class Mode:
    """Which image-feature options are on, named as the field names them (``N1D1F1``).

    Attributes:
        norm: N1: keep each image feature's norm (a low-quality face weighs less in its
            template); N0: L2-normalise each image feature first.
        detector: D1: multiply each image feature by its detector (faceness) score.
        flip: F1: add the mirror image's embedding to the image's.
    """

    norm: bool = True
    detector: bool = True
    flip: bool = True

    @property
    def name(self) -> str:
        """``N1D1F1`` style, the letters always in this order."""
        return f"N{self.norm:d}D{self.detector:d}F{self.flip:d}"

    @classmethod
    def parse(cls, text: str) -> Mode:
        """``N1D1F1``, ``F0N1D0``, ... (each of N, D, F once, any order, case-insensitive).

        Raises:
            ValueError: one line naming the text and what is expected.
        """
        pairs = re.findall(r"([NDF])([01])", text.upper())
        letters = [letter for letter, _ in pairs]
        if "".join(a + b for a, b in pairs) != text.upper() or sorted(letters) != ["D", "F", "N"]:
            raise ValueError(
                f"mode {text!r}: expected N, D and F each once with 0 or 1, e.g. N1D1F1 "
                "(arcface_torch's default) or N0D0F0"
            )
        values = {letter: value == "1" for letter, value in pairs}
        return cls(norm=values["N"], detector=values["D"], flip=values["F"])


# Every combination, the default (arcface_torch's eval_ijbc.py) first.
MODES = tuple(Mode(*bits) for bits in itertools.product((True, False), repeat=3))


def image_features(
    plain: ArrayLike, mirror: ArrayLike | None, scores: ArrayLike, mode: Mode
) -> np.ndarray:
    """Image features under ``mode``, float32 as the reference scripts compute them.

    Args:
        plain: ``(n, D)`` raw embeddings of the aligned faces.
        mirror: ``(n, D)`` raw embeddings of their mirrors (needed with F1).
        scores: ``(n,)`` detector scores (used with D1).
        mode: the options.

    Returns:
        float32 ``(n, D)``; with N0 a zero feature stays zero.
    """
    features = np.asarray(plain, dtype=np.float32)
    if mode.flip:
        if mirror is None:
            raise ValueError(f"mode {mode.name} needs the mirror images' embeddings")
        features = features + np.asarray(mirror, dtype=np.float32)
    if not mode.norm:
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        features = features / np.where(norms > 0, norms, 1).astype(np.float32)
    if mode.detector:
        features = features * np.asarray(scores, dtype=np.float32)[:, None]
    return features


@dataclass(frozen=True)
class Templates:
    """Which template each face belongs to, and its weight in the template's sum.

    Attributes:
        ids: int64 ``(T,)`` the template ids, sorted.
        of_face: int64 ``(n,)`` each face's template, as an index into ``ids``.
        weights: float64 ``(n,)`` ``1 / (faces of the same template and media)``: the sum of
            weighted image features is the sum over medias of the media means.
    """

    ids: np.ndarray
    of_face: np.ndarray
    weights: np.ndarray

    @classmethod
    def of(cls, templates: ArrayLike, medias: ArrayLike) -> Templates:
        """From each face's template id and media id, both ``(n,)`` integers."""
        t = np.asarray(templates, dtype=np.int64)
        m = np.asarray(medias, dtype=np.int64)
        if t.shape != m.shape or t.ndim != 1 or t.size == 0:
            raise ValueError(f"templates {t.shape} and medias {m.shape}: need equal (n,), n > 0")
        ids, of_face = np.unique(t, return_inverse=True)
        _, group, counts = np.unique(np.stack([t, m], 1), axis=0, return_inverse=True,
                                     return_counts=True)  # fmt: skip
        return cls(ids, of_face.reshape(-1), 1.0 / counts[group.reshape(-1)])

    def index(self, template_ids: ArrayLike) -> np.ndarray:
        """Positions in :attr:`ids` of ``template_ids`` (int64 ``(k,)``).

        Raises:
            KeyError: naming the first id that no face belongs to.
        """
        wanted = np.asarray(template_ids, dtype=np.int64)
        where = np.searchsorted(self.ids, wanted).clip(0, len(self.ids) - 1)
        missing = self.ids[where] != wanted
        if missing.any():
            raise KeyError(f"template {int(wanted[np.argmax(missing)])} has no face")
        return where


class TemplateSums:
    """Template features accumulated from image features arriving in row order, in chunks.

    Args:
        templates: the faces' templates and weights.
        dim: feature dimension D.

    Memory: float64 ``(T, D)`` (IJB-C: 23,124 x 512 x 8 B = 95 MB).
    """

    def __init__(self, templates: Templates, dim: int) -> None:
        self.templates = templates
        self.sums = np.zeros((len(templates.ids), dim), dtype=np.float64)
        self.seen = 0

    def add(self, features: ArrayLike) -> None:
        """Add the next ``(c, D)`` image features (faces ``seen .. seen + c`` of the files)."""
        f = np.asarray(features)
        rows = slice(self.seen, self.seen + len(f))
        owner, weight = self.templates.of_face[rows], self.templates.weights[rows]
        if len(owner) != len(f):
            total = len(self.templates.of_face)
            raise ValueError(f"{self.seen + len(f)} image features for {total} faces")
        order = np.argsort(owner, kind="stable")
        weighted = f[order].astype(np.float64) * weight[order, None]
        starts = np.r_[0, np.flatnonzero(np.diff(owner[order])) + 1]
        self.sums[owner[order][starts]] += np.add.reduceat(weighted, starts, axis=0)
        self.seen += len(f)

    def features(self) -> np.ndarray:
        """The L2-normalised template features, float64 ``(T, D)`` in :attr:`Templates.ids`
        order; every face must have been added."""
        if self.seen != len(self.templates.of_face):
            raise ValueError(f"{self.seen} of {len(self.templates.of_face)} faces added")
        norms = np.linalg.norm(self.sums, axis=1, keepdims=True)
        return self.sums / np.where(norms > 0, norms, 1.0)


def pair_scores(
    features: ArrayLike,
    first: ArrayLike,
    second: ArrayLike,
    batch: int = 16384,
    progress: Progress = None,
) -> np.ndarray:
    """Dot products of template pairs, ``batch`` pairs at a time.

    Args:
        features: ``(T, D)`` template features (unit rows).
        first, second: int ``(P,)`` row indices into ``features`` of each pair's templates.
        batch: pairs gathered at once (2 x batch x D x 8 bytes: 134 MB at 16,384 x 512).
        progress: called with the number of pairs done after each batch.

    Returns:
        float64 ``(P,)`` similarity scores.
    """
    f = np.asarray(features, dtype=np.float64)
    a, b = np.asarray(first), np.asarray(second)
    out = np.empty(len(a), dtype=np.float64)
    for start in range(0, len(a), batch):
        rows = slice(start, start + batch)
        out[rows] = np.einsum("ij,ij->i", f[a[rows]], f[b[rows]])
        if progress is not None:
            progress(len(out[rows]))
    return out


def modes(names: Sequence[str]) -> list[Mode]:
    """:class:`Mode` objects from names; ``all`` stands for all eight."""
    if any(n.lower() == "all" for n in names):
        return list(MODES)
    return list(dict.fromkeys(Mode.parse(n) for n in names))
