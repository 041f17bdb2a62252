"""facerec.eval.ijb* against the naive references of ijb_reference.py, on random and constructed
cases with known answers (pure numpy, fast)."""

from __future__ import annotations

import math

import ijb_reference as ref
import numpy as np
import pytest

from facerec.eval.ijb import MODES, Mode, Templates, TemplateSums, image_features, pair_scores
from facerec.eval.ijb_search import FPIRS, RANKS, identification
from facerec.eval.ijb_verify import FARS, verify


def _faces(rng, n=40, dim=6):
    plain, mirror = rng.normal(size=(2, n, dim)).astype(np.float32)
    scores = rng.uniform(0.2, 1.0, n).astype(np.float32)
    templates = rng.integers(0, 7, n) * 10 + 3
    medias = rng.integers(0, 3, n)
    return plain, mirror, scores, templates, medias


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_template_features_match_the_loops_in_every_mode(mode):
    plain, mirror, scores, templates, medias = _faces(np.random.default_rng(0))
    found = Templates.of(templates, medias)
    sums = TemplateSums(found, plain.shape[1])
    for rows in (slice(0, 13), slice(13, 14), slice(14, 40)):  # chunks of any size
        sums.add(image_features(plain[rows], mirror[rows], scores[rows], mode))
    features = [
        ref.image_feature(plain[i], mirror[i], scores[i], mode.norm, mode.detector, mode.flip)
        for i in range(len(plain))
    ]
    expected = ref.template_features(features, templates, medias)
    assert list(found.ids) == sorted(expected)
    np.testing.assert_allclose(sums.features(), np.stack([expected[t] for t in found.ids]),
                               atol=1e-6)  # fmt: skip


def test_one_media_repeated_k_times_is_that_medias_feature():
    """A template of one face's feature repeated k times in one media: exactly that feature,
    normalised, whatever k; two medias of one image count twice (the same direction)."""
    f = np.array([[3.0, 4.0, 0.0]], np.float32)
    for k in (1, 2, 5):
        templates = Templates.of(np.full(k, 7), np.full(k, 1))
        sums = TemplateSums(templates, 3)
        sums.add(np.repeat(f, k, 0))
        np.testing.assert_allclose(sums.features(), [[0.6, 0.8, 0.0]], rtol=1e-12)
    zero = TemplateSums(Templates.of([1], [1]), 3)
    zero.add(np.zeros((1, 3)))
    assert not zero.features().any()  # an all-zero template stays zero, as sklearn's normalize


def test_modes_parse_as_the_field_names_them():
    assert Mode.parse("N1D1F1") == Mode() and Mode.parse("f0n0d1") == Mode(False, True, False)
    assert Mode(False, True, False).name == "N0D1F0" and len({m.name for m in MODES}) == 8
    for bad in ("N1D1", "N1D1F1F0", "N2D1F1", "X1D1F1", "N1 D1 F1"):
        with pytest.raises(ValueError, match="expected N, D and F each once"):
            Mode.parse(bad)


def _check_verify(scores, labels):
    numbers = verify(scores, labels)
    for far in FARS:
        assert numbers.conservative[far].tar == ref.conservative_tar(scores, labels, far), far
        assert numbers.insightface[far].tar == ref.insightface_tar(scores, labels, far), far
        assert numbers.conservative[far].far <= far
    assert numbers.auc == pytest.approx(ref.auc(scores, labels), abs=1e-12)
    return numbers


@pytest.mark.parametrize("seed", range(4))
def test_tar_at_far_both_readings_match_the_loops_with_ties(seed):
    """Scores rounded to a coarse grid: many ties, mixed same/different within a tie, the
    equal-step runs sklearn drops."""
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.normal(labels * 1.0, 1.0) * [4, 2, 1, 8][seed]) / 8
    _check_verify(list(scores), list(labels))


def test_fars_below_the_smallest_achievable():
    """9 different pairs: no FAR below 1/9 exists. The conservative reading takes the FAR-0
    point (the same pairs scoring above every different one), insightface's the nearest, which
    is the same point; resolvable says the column means little."""
    scores = [0.9, 0.8, 0.7, 0.65, 0.6, *np.linspace(0.0, 0.66, 9)]
    labels = [1] * 5 + [0] * 9
    numbers = _check_verify(scores, labels)
    assert numbers.conservative[1e-6].tar == 0.6 and numbers.conservative[1e-6].far == 0.0
    assert numbers.insightface[1e-6].tar == 0.6
    assert not numbers.resolvable(1e-2) and numbers.resolvable(0.2)
    assert numbers.conservative[1e-1].tar == 0.6  # 1/9 > 0.1: still the FAR-0 point
    assert numbers.insightface[1e-1].far == pytest.approx(1 / 9)  # nearest: above the target
    assert numbers.insightface[1e-1].tar == 1.0


def test_pair_scores_in_batches_are_dot_products():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(9, 5))
    a, b = rng.integers(0, 9, 50), rng.integers(0, 9, 50)
    done = []
    scores = pair_scores(feats, a, b, batch=7, progress=done.append)
    assert sum(done) == 50 and len(done) == 8
    expected = [feats[i] @ feats[j] for i, j in zip(a, b, strict=True)]
    np.testing.assert_allclose(scores, expected, rtol=1e-12)


def _one_to_n_case(rng, ties: bool):
    """Five subjects: 0-1 in G1, 2-3 in G2 (subject 3 twice in G2), subject 4 in none; probes
    of every subject."""
    feats = rng.normal(size=(16, 4))
    if ties:
        feats = np.round(feats)  # dot products of integer vectors: many exact ties
    templates = Templates.of(np.arange(16), np.arange(16))
    galleries = {"G1": (np.array([0, 1]), np.array([0, 1])),
                 "G2": (np.array([2, 3, 4]), np.array([2, 3, 3]))}  # fmt: skip
    probes = (np.arange(5, 16), np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 4]))
    return feats, templates, galleries, probes


@pytest.mark.parametrize("ties", [False, True])
def test_one_to_n_matches_the_loops(ties):
    feats, templates, galleries, probes = _one_to_n_case(np.random.default_rng(2), ties)
    found = identification(feats, templates, galleries, probes)
    pf = feats[probes[0]]
    for name, (ids, subjects) in galleries.items():
        naive = ref.search(pf, probes[1], feats[ids], subjects)
        got = found["galleries"][name]
        assert got["mated"] == sum(f[0] for f in naive) and got["non_mated"] == 11 - got["mated"]
        for r in RANKS:
            assert got["cmc"][f"rank{r}"] == pytest.approx(ref.cmc(naive, r))
        for f in FPIRS:
            point = got["tpir_at_fpir"][f"{f:g}"]
            assert point["tpir"] == pytest.approx(ref.tpir_at_fpir(naive, f)) and point["fpir"] <= f
    g1, g2 = found["galleries"].values()
    mean = (g1["cmc"]["rank1"] + g2["cmc"]["rank1"]) / 2
    assert found["average"]["cmc"]["rank1"] == pytest.approx(mean)
    ids = np.r_[galleries["G1"][0], galleries["G2"][0]]
    subjects = np.r_[galleries["G1"][1], galleries["G2"][1]]
    naive = ref.search(pf, probes[1], feats[ids], subjects)
    union = found["closed_set_union"]
    assert union["without_mate"] == 3 and union["probes"] == 8  # subject 4 has no mate
    assert union["cmc"]["rank1"] == pytest.approx(ref.cmc(naive, 1))
    for f in FPIRS:
        assert union["tpir_at_far"][f"{f:g}"]["tpir"] == pytest.approx(ref.closed_tpir(naive, f))


def test_a_tie_with_a_non_mate_ranks_the_mate_second():
    feats = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])  # probe, its mate, a non-mate: equal
    templates = Templates.of([0, 1, 2], [0, 1, 2])
    found = identification(feats, templates, {"G1": (np.array([1, 2]), np.array([5, 6]))},
                           (np.array([0]), np.array([5])))  # fmt: skip
    assert found["galleries"]["G1"]["cmc"] == {"rank1": 0.0, "rank5": 1.0, "rank10": 1.0}
    assert found["galleries"]["G1"]["tpir_at_fpir"]["0.01"]["tpir"] is None  # no non-mated
    assert math.isclose(found["closed_set_union"]["cmc"]["rank1"], 0.0)


def test_insightface_reading_jumps_over_the_points_sklearn_drops():
    """Two same pairs on top, nine different ones one by one, two same, one different: the
    flat run's inner points are dropped by sklearn's default, so at FAR 0.6 the nearest kept
    point is FAR 0.9 (TAR 1.0), where the full curve has FAR 0.6 at TAR 0.5."""
    scores = [100, 100, *range(99, 90, -1), 50, 50, 0]
    labels = [1, 1, *[0] * 9, 1, 1, 0]
    numbers = verify(scores, labels, fars=(0.6,))
    assert numbers.insightface[0.6].tar == 1.0 == ref.insightface_tar(scores, labels, 0.6)
    assert numbers.insightface[0.6].far == 0.9
    assert numbers.conservative[0.6].tar == 0.5 == ref.conservative_tar(scores, labels, 0.6)


def test_ijbb_galleries_are_s1_and_s2_and_targets_are_checked():
    from facerec.data.ijb import IJBFiles

    files = IJBFiles.under("/data/IJB", "IJBB")
    assert [p.name for p in files.galleries] == ["ijbb_1N_gallery_S1.csv", "ijbb_1N_gallery_S2.csv"]
    assert str(files.pairs).endswith("IJBB/meta/ijbb_template_pair_label.txt")
    assert str(files.images).endswith("IJBB/loose_crop")
    with pytest.raises(ValueError, match="one of IJBC, IJBB"):
        IJBFiles.under("/data/IJB", "IJBA")
