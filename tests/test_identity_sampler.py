"""The P x K identity sampler: batch structure, small identities, determinism, resume
mid-epoch, and disjoint identities across DDP ranks."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest

from facerec.data import IdentitySampler
from facerec.data.sampler import ResumableSampler

# 12 identities: sizes 1..12 images (identity i has i + 1 images), shuffled positions.
SIZES = np.arange(1, 13)
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(12), SIZES))


def batches(sampler: IdentitySampler, batch_size: int) -> list[list[int]]:
    indices = [index for index, _ in sampler]
    return [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]


@pytest.mark.parametrize("small", ["replace", "skip"])
def test_every_batch_is_p_identities_times_k_images(small):
    sampler = IdentitySampler(LABELS, batch_size=12, images_per_identity=3, small=small, seed=1)
    out = batches(sampler, 12)
    assert len(out) == sampler.batches and len(out) * 12 == len(sampler)
    for batch in out:
        counts = Counter(LABELS[batch].tolist())
        assert sorted(counts.values()) == [3, 3, 3, 3]  # P = 4 identities, K = 3 each
        if small == "skip":
            assert not {0, 1} & set(counts)  # identities with 1 and 2 images are left out
            assert len(set(batch)) == 12  # and nothing is drawn twice
    assert sampler.skipped == (2 if small == "skip" else 0)
    # Groups per epoch: each identity max(1, n // 3), the kept ones only.
    kept = SIZES if small == "replace" else SIZES[SIZES >= 3]
    assert sampler.batches == sum(max(1, n // 3) for n in kept) // 4


def test_small_identities_are_sampled_with_replacement_and_seeds_stay_unique():
    sampler = IdentitySampler(LABELS, batch_size=8, images_per_identity=4, seed=3)
    items = list(sampler)
    seeds = [seed for _, seed in items]
    assert len(set(seeds)) == len(seeds)  # two copies of one image get two augmentations
    single = np.flatnonzero(LABELS == 0)[0]
    drawn = [index for index, _ in items if LABELS[index] == 0]
    assert set(drawn) <= {single} and len(drawn) % 4 == 0


def test_deterministic_per_seed_and_epoch():
    a = IdentitySampler(LABELS, 12, 3, seed=5)
    b = IdentitySampler(LABELS, 12, 3, seed=5)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert [i for i, _ in a] != [i for i, _ in b]
    c = IdentitySampler(LABELS, 12, 3, seed=6)
    assert [i for i, _ in a] != [i for i, _ in c]


def test_resume_mid_epoch_yields_exactly_what_was_left():
    full = IdentitySampler(LABELS, 12, 3, seed=2)
    full.set_epoch(4)
    everything = list(full)
    resumed = IdentitySampler(LABELS, 12, 3, seed=2)
    resumed.set_epoch(4, start=2 * 12)  # two batches were trained before the interruption
    assert list(resumed) == everything[24:]
    assert len(resumed) == len(everything) - 24


def test_ddp_ranks_draw_disjoint_identities_each_step():
    world = [IdentitySampler(LABELS, 8, 2, num_replicas=2, rank=r, seed=9) for r in range(2)]
    per_rank = [batches(s, 8) for s in world]
    assert len(per_rank[0]) == len(per_rank[1]) == world[0].batches > 0
    seeds = [seed for s in world for _, seed in s]
    assert len(set(seeds)) == len(seeds)
    for mine, theirs in zip(*per_rank, strict=True):
        assert not set(LABELS[mine].tolist()) & set(LABELS[theirs].tolist())
        assert sorted(Counter(LABELS[mine].tolist()).values()) == [2, 2, 2, 2]


def test_every_epoch_has_the_same_length_even_when_identities_run_out():
    # One identity with many images, the rest with few: the dealt groups run out of distinct
    # identities before the epoch's batches are drawn, so the groups are dealt again.
    labels = np.concatenate([np.zeros(40, int), np.repeat(np.arange(1, 5), 2)])
    sampler = IdentitySampler(labels, 4, 2, seed=0)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        out = batches(sampler, 4)
        assert len(out) == sampler.batches == (20 + 4) // 2
        assert all(len(set(labels[b].tolist())) == 2 for b in out)


def test_unreadable_samples_are_never_drawn():
    labels = LABELS.copy()
    labels[:5] = -1  # marked unreadable by a preloading data module
    drawn = {index for index, _ in IdentitySampler(labels, 12, 3, seed=0)}
    assert not drawn & set(range(5))


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"images_per_identity": 1}, "sampler.images_per_identity"),
    ({"images_per_identity": 5}, "sampler.images_per_identity"),
    ({"small": "drop"}, "sampler.small"),
    ({"batch_size": 60}, "cannot fill one step"),
])  # fmt: skip
def test_impossible_settings_name_the_key(kwargs, key):
    options = {"batch_size": 12, "images_per_identity": 3, **kwargs}
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        IdentitySampler(LABELS, **options)


def test_skipped_identities_are_counted_in_the_log(caplog):
    with caplog.at_level(logging.WARNING):
        IdentitySampler(LABELS, 12, 3, small="skip")
    assert "2 identities with fewer than 3 images skipped" in caplog.text


def test_factories_share_the_loaders_signature():
    class Data:
        labels = LABELS

        def __len__(self):
            return len(LABELS)

    assert isinstance(ResumableSampler.build(Data(), batch_size=12), ResumableSampler)
    sampler = IdentitySampler.build(Data(), batch_size=12, images_per_identity=3)
    assert sampler.p == 4 and sampler.k == 3
    with pytest.raises(ValueError, match="needs per-sample labels"):
        IdentitySampler.build([1, 2, 3], batch_size=12)
