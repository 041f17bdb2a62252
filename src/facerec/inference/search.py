"""1:N search over a gallery's templates: the best ``k`` identities of each query.

Both indexes answer ``search(queries, k)`` with FAISS's result shape: ``(scores, ids)``, float32
cosine similarities and int64 template rows, ``(Q, k)`` each, best first. Up to
:data:`EXACT_LIMIT` templates the search is exact (one matrix product per block of queries,
ties broken by the lower row); beyond it an index from the ``search`` extra (``faiss-cpu``): an
inverted file over 4-bit product-quantised codes (:func:`default_index`), a twelfth of the
float16 memory, at recall@1 >= 0.99 on clustered face-like vectors (docs/performance.md
measures it against int8 vectors and HNSW). The index is a cache of the templates; the gallery
file is the data.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "EXACT_LIMIT",
    "ExactIndex",
    "FaissIndex",
    "build_index",
    "default_index",
    "faiss_module",
    "top_k",
]

EXACT_LIMIT = 100_000
_SCORES = 1 << 24  # float32 scores held at once (64 MiB): queries (or float16 rows) per block


def faiss_module():
    """``import faiss``, or one line naming the extra that installs it."""
    try:
        import faiss
    except ImportError:
        raise ImportError(
            "an approximate index needs faiss: pip install 'facerec[search]' (faiss-cpu)"
        ) from None
    return faiss


def default_index(n: int, dim: int = 512) -> tuple[str, str]:
    """``(factory, params)`` for ``n`` templates of ``dim`` coordinates, as measured in
    docs/performance.md (scripts/bench_search.py): an inverted file of about ``4 sqrt(n)``
    lists (4,000 at 1M) searching 1/32 of them (at least 32), over 4-bit product-quantised
    codes scanned with SIMD (``dim / 4`` sub-quantisers: 128 bytes a vector at 512-d); a
    gallery under 10,000 (too few to train those codes) keeps int8 vectors."""
    # k-means wants about 39 points per list: a small gallery gets fewer lists
    lists = int(min(4 * np.sqrt(n), 16_384, max(1, n // 39)))
    codes = f"PQ{dim // 4}x4fs" if n >= 10_000 and dim % 4 == 0 else "SQ8"
    return f"IVF{lists},{codes}", f"nprobe={min(lists, max(32, lists // 32))}"


def _as_rows(x: ArrayLike, name: str, dim: int | None = None) -> np.ndarray:
    rows = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if rows.ndim != 2 or (dim is not None and rows.shape[1] != dim):
        want = f"(N, {dim})" if dim is not None else "(N, D)"
        raise ValueError(f"{name} must be {want}, got shape {rows.shape}")
    return rows


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of each row of ``scores`` ``(Q, K)``, best first, ties by the
    lower column: ``(values (Q, k) float32, columns (Q, k) int64)``."""
    k = min(k, scores.shape[1])
    if k == 1:  # argmax: the first (lowest) column of a tie
        cols = scores.argmax(axis=1)[:, None]
    elif k == scores.shape[1]:
        cols = np.argsort(-scores, axis=1, kind="stable")
    else:
        cols = np.argpartition(scores, scores.shape[1] - k, axis=1)[:, -k:]
        picked = np.take_along_axis(scores, cols, 1)
        kth = picked.min(axis=1, keepdims=True)
        # A tie at the k-th value may have picked a higher column than a stable sort would.
        tied = np.flatnonzero((scores >= kth).sum(axis=1) > k)
        if len(tied):
            cols[tied] = np.argsort(-scores[tied], axis=1, kind="stable")[:, :k]
        picked = np.take_along_axis(scores, cols, 1)
        order = np.lexsort((cols, -picked), axis=1)
        cols = np.take_along_axis(cols, order, 1)
    cols = cols[:, :k].astype(np.int64)
    return np.take_along_axis(scores, cols, 1).astype(np.float32), cols


class ExactIndex:
    """Every template scored: ``queries @ templates.T`` in blocks of queries.

    Args:
        templates: ``(K, D)`` unit vectors (float32 or float16; kept as given).
    """

    kind = "exact"

    def __init__(self, templates: ArrayLike) -> None:
        t = np.asarray(templates)
        self.templates = t if t.dtype in (np.float16, np.float32) else t.astype(np.float32)
        if self.templates.ndim != 2:
            raise ValueError(f"templates must be (K, D), got shape {self.templates.shape}")

    @property
    def ntotal(self) -> int:
        return len(self.templates)

    @property
    def nbytes(self) -> int:
        """Memory held by the index."""
        return self.templates.nbytes

    def search(self, queries: ArrayLike, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (Q, k'), ids (Q, k'))``, ``k' = min(k, K)``, best first (cosine)."""
        q = _as_rows(queries, "queries", self.templates.shape[1])
        k = max(0, min(k, self.ntotal))
        scores = np.empty((len(q), k), np.float32)
        ids = np.empty((len(q), k), np.int64)
        if k == 0:
            return scores, ids
        if self.templates.dtype != np.float32:
            return self._search_by_rows(q, k)
        step = max(1, _SCORES // self.ntotal)
        for start in range(0, len(q), step):
            block = slice(start, start + step)
            scores[block], ids[block] = top_k(q[block] @ self.templates.T, k)
        return scores, ids

    def _search_by_rows(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """float16 templates: each block of rows converted once, scored against every query,
        its top-k merged into the running best (lower rows first: ties stay with them)."""
        best = np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        step = max(k, _SCORES // max(len(q), 1))
        for start in range(0, self.ntotal, step):
            rows = self.templates[start : start + step].astype(np.float32)
            values, cols = top_k(q @ rows.T, k)
            merged = np.concatenate([best[0], values], 1)
            ids = np.concatenate([best[1], cols + start], 1)
            values, picked = top_k(merged, k)
            best = values, np.take_along_axis(ids, picked, 1)
        return best


class FaissIndex:
    """An approximate index from FAISS over unit vectors, inner product (= cosine).

    Args:
        templates: ``(K, D)`` unit vectors.
        factory: a FAISS index-factory string (default: :func:`default_index` for the size).
        params: FAISS search parameters (``"nprobe=64"`` for IVF, ``"efSearch=256"`` for
            HNSW; with the default factory, its default).
    """

    kind = "faiss"

    def __init__(self, templates: ArrayLike, factory: str | None = None,
                 params: str | None = None) -> None:  # fmt: skip
        faiss = faiss_module()
        t = np.asarray(templates)
        if t.ndim != 2:
            raise ValueError(f"templates must be (K, D), got shape {t.shape}")
        if factory is None:
            factory, params = default_index(len(t), t.shape[1])
        self.factory, self.params = factory, params
        self.index = faiss.index_factory(t.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        if hasattr(self.index, "hnsw"):
            self.index.hnsw.efConstruction = 80
        if not self.index.is_trained:  # IVF centroids, scalar-quantiser ranges
            self.index.train(_as_rows(t[:: max(1, len(t) // 200_000)], "templates"))
        for start in range(0, len(t), 65_536):  # float16 galleries: a block at a time
            self.index.add(_as_rows(t[start : start + 65_536], "templates"))
        if params:
            faiss.ParameterSpace().set_index_parameters(self.index, params)

    @classmethod
    def read(cls, path: Path) -> FaissIndex:
        """An index this class wrote (:func:`build_index`'s cache), read back."""
        self = cls.__new__(cls)
        self.index = faiss_module().read_index(str(path))
        self.factory, self.params = "cached", str(path)
        return self

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def nbytes(self) -> int:
        """The serialised index's size: about the memory it holds."""
        return int(faiss_module().serialize_index(self.index).nbytes)

    def search(self, queries: ArrayLike, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`ExactIndex.search` (a row FAISS could not fill has id -1)."""
        q = _as_rows(queries, "queries", self.index.d)
        k = max(0, min(k, self.ntotal))
        if k == 0:
            return np.empty((len(q), 0), np.float32), np.empty((len(q), 0), np.int64)
        scores, ids = self.index.search(q, k)
        return scores.astype(np.float32), ids.astype(np.int64)


def build_index(
    templates: ArrayLike, kind: str = "auto", cache: Path | None = None, **options
) -> ExactIndex | FaissIndex:
    """The index for ``templates`` ``(K, D)``: ``"exact"``, ``"faiss"``, or ``"auto"``
    (exact up to :data:`EXACT_LIMIT` templates, FAISS beyond); ``options`` go to
    :class:`FaissIndex`. A FAISS index is read from ``cache`` when that file holds one of K
    vectors, else built and written there (a gallery's cache: named by its generation)."""
    if kind not in ("auto", "exact", "faiss"):
        raise ValueError(f"index kind {kind!r}: one of auto, exact, faiss")
    if kind == "exact" or (kind == "auto" and len(templates) <= EXACT_LIMIT):
        return ExactIndex(templates)
    if cache is not None and cache.is_file():
        cached = FaissIndex.read(cache)
        if cached.ntotal == len(templates):
            return cached
    index = FaissIndex(templates, **options)
    if cache is not None:
        from facerec.files.atomic import write_atomic

        # a read-only gallery is searched all the same (and indexed again next time)
        with contextlib.suppress(OSError):
            write_atomic(cache, lambda p: faiss_module().write_index(index.index, str(p)))
    return index
