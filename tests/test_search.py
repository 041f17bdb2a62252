"""Gallery search (facerec.inference.search): the exact index against a naive sort, FAISS
against the exact index, and the choice by size."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from facerec.inference import search
from facerec.inference.search import ExactIndex, FaissIndex, build_index, top_k


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def naive_search(queries, templates, k):
    """Each query: every template scored in a loop, sorted by score then by lower row."""
    scores, ids = [], []
    for q in np.asarray(queries, np.float64):
        row = sorted(((-float(q @ t), j) for j, t in enumerate(np.asarray(templates, np.float64))))
        ids.append([j for _, j in row[:k]])
        scores.append([-s for s, _ in row[:k]])
    return np.array(scores), np.array(ids)


def planted(n: int, queries: int, dim: int = 32, seed: int = 0):
    """Templates, and queries that are noisy copies of known templates."""
    rng = np.random.default_rng(seed)
    templates = unit(rng.normal(size=(n, dim)))
    truth = rng.integers(0, n, queries)
    return templates, unit(templates[truth] + 0.3 * rng.normal(size=(queries, dim)) / dim**0.5)


@pytest.mark.parametrize("k", [1, 3, 7, 40])
def test_exact_search_matches_a_naive_sort(k):
    templates, queries = planted(30, 25)
    scores, ids = ExactIndex(templates).search(queries, k)
    want_scores, want_ids = naive_search(queries, templates, min(k, 30))
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    assert ids.shape == (25, min(k, 30))
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-6)


def test_ties_go_to_the_lower_row_at_every_k():
    templates = unit(np.array([[1, 0], [0, 1], [1, 0], [1, 0], [0, 1], [-1, 0.1]], float))
    queries = np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32)
    for k in range(1, 7):
        _, ids = ExactIndex(templates).search(queries, k)
        np.testing.assert_array_equal(ids, naive_search(queries, templates, k)[1])
    rng = np.random.default_rng(2)
    scores = np.round(rng.uniform(size=(50, 200)), 1).astype(np.float32)  # ties everywhere
    for k in (2, 5, 17):
        values, cols = top_k(scores, k)
        want = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(cols, want)
        np.testing.assert_array_equal(values, np.take_along_axis(scores, want, 1))


def test_float16_templates_search_as_float32_within_rounding(monkeypatch):
    templates, queries = planted(300, 40, dim=64)
    monkeypatch.setattr(search, "_SCORES", 40 * 70)  # blocks of 70 float16 templates
    half = templates.astype(np.float16)
    s16, i16 = ExactIndex(half).search(queries, 5)
    want_s, want_i = naive_search(queries, half.astype(np.float32), 5)
    np.testing.assert_array_equal(i16, want_i)  # the same rows as one sort over all of them
    np.testing.assert_allclose(s16, want_s, atol=1e-5)
    s32, i32 = ExactIndex(templates).search(queries, 5)
    np.testing.assert_array_equal(i16[:, 0], i32[:, 0])
    np.testing.assert_allclose(s16, s32, atol=2e-3)
    basis = np.eye(3, 64, dtype=np.float16)  # exact products: ties are exact
    ties = np.tile(basis, (1000, 1))  # 3 vectors 1,000 times: ties across 4 blocks of rows
    _, ids = ExactIndex(ties).search(basis.astype(np.float32), 4)
    np.testing.assert_array_equal(ids, [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]])


def test_faiss_returns_the_exact_result_on_a_small_gallery():
    templates, queries = planted(600, 50, dim=48)
    want_scores, want_ids = ExactIndex(templates).search(queries, 5)
    flat = FaissIndex(templates, "IVF16,Flat", "nprobe=16")  # every list: exhaustive
    scores, ids = flat.search(queries, 5)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    default = FaissIndex(templates)  # the size's default: IVF over int8 vectors
    assert default.factory == "IVF15,SQ8"
    _, ids = default.search(queries, 5)
    np.testing.assert_array_equal(ids[:, 0], want_ids[:, 0])
    assert default.nbytes < templates.nbytes


def test_a_large_gallery_gets_product_quantised_codes_and_finds_the_planted_identity():
    templates, queries = planted(12_000, 200, dim=64, seed=3)
    index = FaissIndex(templates)
    assert (index.factory, index.params) == ("IVF307,PQ16x4fs", "nprobe=32")
    _, exact = ExactIndex(templates).search(queries, 1)
    _, ids = index.search(queries, 1)
    assert (ids[:, 0] == exact[:, 0]).mean() >= 0.99
    assert index.nbytes < templates.nbytes / 8


def test_the_index_is_chosen_by_size(monkeypatch):
    templates, _ = planted(200, 1)
    assert build_index(templates).kind == "exact"
    monkeypatch.setattr(search, "EXACT_LIMIT", 100)
    assert build_index(templates).kind == "faiss"
    assert build_index(templates, "exact").kind == "exact"
    with pytest.raises(ValueError, match="one of auto, exact, faiss"):
        build_index(templates, "annoy")
    assert search.default_index(1_000_000) == ("IVF4000,PQ128x4fs", "nprobe=125")
    assert search.default_index(2) == ("IVF1,SQ8", "nprobe=1")
    _, ids = FaissIndex(templates[:2]).search(templates[:2], 2)  # two people: still answers
    np.testing.assert_array_equal(ids[:, 0], [0, 1])


def test_missing_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"pip install 'facerec\[search\]'"):
        FaissIndex(np.eye(4, dtype=np.float32))


def test_a_faiss_index_is_cached_and_read_back(tmp_path):
    templates, queries = planted(400, 20, dim=16)
    cache = tmp_path / "index-abc.faiss"
    built = build_index(templates, "faiss", cache)
    assert cache.is_file() and built.factory.startswith("IVF")
    again = build_index(templates, "faiss", cache)
    assert again.factory == "cached"
    for a, b in zip(built.search(queries, 3), again.search(queries, 3), strict=True):
        np.testing.assert_array_equal(a, b)
    assert build_index(templates[:300], "faiss", cache).ntotal == 300  # another size: rebuilt
