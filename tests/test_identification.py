"""Open-set identification metrics (facerec.eval.identification) against naive loops over
probes written here independently, on small cases with known answers, ties, and probes whose
identity has no gallery entry."""

from __future__ import annotations

import numpy as np
import pytest

from facerec.eval.identification import (
    identity_templates,
    mated_ranks,
    open_set,
    open_set_trials,
    summarise,
    threshold_at_rate,
)


def naive_threshold(impostor_best: list[float], rate: float) -> float:
    """The smallest threshold among every candidate whose accept rate is at most ``rate``."""
    candidates = sorted({np.nextafter(v, np.inf) for v in impostor_best} | {-np.inf})
    for t in candidates:
        if sum(v >= t for v in impostor_best) / len(impostor_best) <= rate + 1e-12:
            return float(t)
    raise AssertionError("unreachable: above the highest score nothing is accepted")


def naive_open_set(scores, probes, gallery, fpirs, max_rank):
    """One probe at a time: rank (ties against the probe), best score, decisions."""
    scores, gallery = np.asarray(scores, float), list(gallery)
    ranks, genuine, impostor = [], [], []
    for row, label in zip(scores, probes, strict=True):
        if label not in gallery:
            impostor.append(max(row))
            continue
        true = gallery.index(label)
        rank = 1 + sum(1 for j, s in enumerate(row) if j != true and s >= row[true])
        ranks.append(rank)
        genuine.append(row[true] if rank == 1 else -np.inf)
    cmc = [sum(r <= k for r in ranks) / len(ranks) for k in range(1, max_rank + 1)]
    thresholds = [naive_threshold(impostor, f) for f in fpirs]
    dirs = [sum(g >= t for g in genuine) / len(genuine) for t in thresholds]
    return cmc, dirs, thresholds


def test_a_small_case_with_known_answers():
    gallery = ["ann", "bob", "cid"]
    probes = ["ann", "bob", "bob", "cid", "dan", "eve"]  # dan, eve: never enrolled
    scores = [
        [0.9, 0.1, 0.2],  # ann at rank 1, 0.9
        [0.5, 0.5, 0.1],  # bob tied with ann: counts against the probe -> rank 2
        [0.1, 0.3, 0.6],  # bob at rank 2 (cid higher)
        [0.2, 0.1, 0.7],  # cid at rank 1, 0.7
        [0.4, 0.2, 0.1],  # stranger, best 0.4
        [0.1, 0.8, 0.0],  # stranger, best 0.8
    ]
    result = open_set(scores, probes, gallery, fpirs=(0.5, 0.01), max_rank=3)
    np.testing.assert_allclose(result.cmc, [0.5, 1.0, 1.0])
    assert result.mated == 4 and result.non_mated == 2
    # FPIR <= 0.5 allows one of two strangers: just above 0.4; ann (0.9) and cid (0.7) pass
    assert result.thresholds[0] == pytest.approx(0.4) and result.thresholds[0] > 0.4
    # FPIR <= 0.01 allows none: just above 0.8; only ann (0.9)
    assert result.thresholds[1] > 0.8
    np.testing.assert_allclose(result.dir, [0.5, 0.25])


def test_ranks_count_ties_against_the_probe():
    scores = np.array([[0.3, 0.3, 0.3], [0.2, 0.9, 0.9], [0.1, 0.2, 0.05]])
    assert mated_ranks(scores, [0, 2, 1], [0, 1, 2]).tolist() == [3, 2, 1]
    with pytest.raises(ValueError, match="identity in the gallery"):
        mated_ranks(scores, [0, 7, 1], [0, 1, 2])


@pytest.mark.parametrize("seed", range(6))
def test_open_set_matches_the_naive_loop_with_ties(seed):
    rng = np.random.default_rng(seed)
    k, p = int(rng.integers(2, 9)), int(rng.integers(20, 80))
    gallery = rng.permutation(50)[:k]
    probes = rng.integers(0, 50, p)  # many have no gallery entry
    probes[:2] = gallery[:2]
    probes[2] = 99  # at least one stranger
    scores = np.round(rng.uniform(-1, 1, (p, k)), 1)  # one decimal: many ties
    fpirs = (0.5, 0.1, 0.02)
    result = open_set(scores, probes, gallery, fpirs, max_rank=k)
    cmc, dirs, thresholds = naive_open_set(scores, probes, gallery, fpirs, k)
    np.testing.assert_allclose(result.cmc, cmc)
    np.testing.assert_allclose(result.dir, dirs)
    np.testing.assert_allclose(result.thresholds, thresholds)


def test_threshold_at_rate_accepts_at_most_the_rate():
    scores = np.array([0.1, 0.5, 0.5, 0.5, 0.2, 0.9, 0.3, 0.4, 0.6, 0.7])
    for rate in (0.05, 0.1, 0.2, 0.3, 0.35, 0.5, 0.99):
        t = threshold_at_rate(scores, rate)
        assert (scores >= t).mean() <= rate
        assert t == naive_threshold(list(scores), rate)
    assert 0.6 < threshold_at_rate(scores, 0.2) < 0.6 + 1e-9  # 0.9 and 0.7: 2 of 10
    assert 0.7 < threshold_at_rate(scores, 0.15) < 0.7 + 1e-9  # 0.9 alone: 1 of 10
    for bad in (0.0, 1.0, -0.1, 2.0):
        with pytest.raises(ValueError, match=r"\(0, 1\)"):
            threshold_at_rate(scores, bad)


def test_det_curve_ends_where_dir_is_read():
    rng = np.random.default_rng(3)
    scores = rng.uniform(size=(60, 5))
    probes = np.concatenate([np.arange(5).repeat(6), np.full(30, 9)])
    result = open_set(scores, probes, np.arange(5), fpirs=(0.1,))
    fpir, fnir = result.det
    at = np.flatnonzero(fpir <= 0.1)[0]  # the first cut at or below 10%
    assert fnir[at] == pytest.approx(1 - result.dir[0])


def test_identity_templates_match_a_loop():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(9, 4))
    labels = np.array(["b", "a", "b", "c", "a", "a", "c", "b", "b"])
    templates, names = identity_templates(emb, labels)
    assert names.tolist() == ["a", "b", "c"]
    for t, name in zip(templates, names, strict=True):
        total = sum(e for e, n in zip(emb, labels, strict=True) if n == name)
        np.testing.assert_allclose(t, total / np.linalg.norm(total), rtol=1e-6)


def test_trials_enrol_part_of_the_people_and_probe_the_rest():
    labels = np.repeat(np.arange(12), [1, 1, 2, 3, 4, 2, 5, 1, 2, 3, 1, 6])
    trials = open_set_trials(labels, trials=4, enrolled=0.5, gallery_images=1, seed=7)
    assert len(trials) == 4
    for trial in trials:
        enrolled = labels[trial.gallery]
        assert len(enrolled) == len(set(enrolled)) == 4  # half of the 8 people with 2+ images
        assert sorted(np.concatenate([trial.gallery, trial.probes]).tolist()) == list(
            range(len(labels))
        )
        mated = np.isin(labels[trial.probes], enrolled)
        assert mated.any() and (~mated).any()
    again = open_set_trials(labels, trials=4, enrolled=0.5, gallery_images=1, seed=7)
    assert all(np.array_equal(a.gallery, b.gallery) for a, b in zip(trials, again, strict=True))
    assert not all(np.array_equal(trials[0].gallery, t.gallery) for t in trials[1:])
    with pytest.raises(ValueError, match="no gallery or no strangers"):
        open_set_trials(np.repeat([0, 1], 3), enrolled=1.0)


def test_summarise_means_and_stds_over_trials():
    rng = np.random.default_rng(0)
    results = []
    for _ in range(3):
        scores = rng.uniform(size=(40, 6))
        probes = np.concatenate([np.arange(6).repeat(4), np.full(16, 50)])
        results.append(open_set(scores, probes, np.arange(6), fpirs=(0.1,)))
    out = summarise(results)
    assert out["rank1"] == pytest.approx(np.mean([r.cmc[0] for r in results]))
    assert out["rank5_std"] == pytest.approx(np.std([r.cmc[4] for r in results]))
    assert out["dir@fpir=0.1"] == pytest.approx(np.mean([r.dir[0] for r in results]))
    assert out["trials"] == 3 and out["mated_probes"] == 24


def test_agrees_with_the_ijb_search_of_template_features():
    """The IJB protocol's own search (facerec.eval.ijb_search) reads the same ranks and the
    same TPIR at each FPIR from the same features."""
    from facerec.eval import ijb_search

    rng = np.random.default_rng(5)
    gallery = np.round(rng.normal(size=(12, 6)), 1)
    probes = np.round(rng.normal(size=(90, 6)), 1)  # rounded: ties occur
    labels, subjects = rng.integers(0, 20, 90), np.arange(12)
    result = open_set(probes @ gallery.T, labels, subjects, fpirs=(0.1, 0.02), max_rank=10)
    found = ijb_search.search(probes, labels, gallery, subjects)
    assert [result.cmc[r - 1] for r in (1, 5, 10)] == list(ijb_search.cmc(found).values())
    for rate, dir_ in zip((0.1, 0.02), result.dir, strict=True):
        assert dir_ == pytest.approx(ijb_search.tpir_at_fpir(found, rate)["tpir"])


def test_templates_in_blocks_and_float16_agree_with_one_block():
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(50, 6)).astype(np.float32)
    labels = rng.integers(0, 17, 50)
    whole, names = identity_templates(emb, labels)
    blocks, again = identity_templates(emb, labels, block=4)
    np.testing.assert_array_equal(blocks, whole)
    np.testing.assert_array_equal(names, again)
    half, _ = identity_templates(emb, labels, np.float16, block=5)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, whole, atol=1e-3)
