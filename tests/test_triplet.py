"""The triplet loss against a naive float64 loop over every triplet of the batch, for each
mining mode, distance and margin kind: loss and gradient, with ties, an identity with a single
image, and batches without any valid triplet."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
import triplet_worker as worker
from test_partial_fc import run_ranks
from triplet_reference import naive

from facerec.criteria import TripletLoss

ROOT = Path(__file__).resolve().parents[1]

MININGS = ["batch_all", "batch_hard", "semi_hard"]
DISTANCES = ["squared_euclidean", "cosine"]


def check(emb, labels, mining, kind, margin=0.3, soft=False):
    x = emb.clone().requires_grad_(True)
    y = emb.clone().requires_grad_(True)
    loss = TripletLoss(margin=margin, distance=kind, mining=mining, soft=soft)(x, labels)
    expected = naive(y, labels, mining, kind, margin, soft)
    loss.backward()
    expected.backward()
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-8, atol=1e-10)
    assert torch.isfinite(x.grad).all()
    return loss, x.grad


def batch(seed: int = 0, dim: int = 8):
    torch.manual_seed(seed)
    # 4 identities, one of them (label 3) with a single image: it can only be a negative.
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 1])
    return torch.randn(len(labels), dim, dtype=torch.float64), labels


@pytest.mark.parametrize(("mining", "kind", "soft"),
                         list(itertools.product(MININGS, DISTANCES, [False, True])))  # fmt: skip
def test_loss_and_gradient_equal_the_naive_loop(mining, kind, soft):
    for seed in range(3):
        emb, labels = batch(seed)
        check(emb, labels, mining, kind, soft=soft)


@pytest.mark.parametrize("mining", MININGS)
def test_ties_give_the_gradient_to_the_first_index(mining):
    """Two identical negatives and two identical positives: the same loss and gradient as the
    loop that takes the first of equals.

    Rows of +-1/4 in 16 dimensions have norm 1 and dot products in steps of 1/16, all exact in
    float64 whatever order a BLAS sums them in: with random rows, two copies of one vector in
    different columns of ``x @ x.T`` can differ by an ulp (seen with torch 2.14), and the "tie"
    is then broken by rounding instead of by the rule. The margin 0.8 keeps every hinge and
    window edge off the 1/8 grid of the distances and puts tied negatives inside semi-hard
    windows (a last-index rule in either miner fails this test)."""
    _, labels = batch(1)
    torch.manual_seed(1)
    emb = (torch.randint(0, 2, (len(labels), 16), dtype=torch.float64) * 2 - 1) / 4
    emb[4] = emb[3]  # identity 1: a tie among positives (and, for others, among negatives)
    emb[9] = emb[3]
    emb[7] = emb[6]
    check(emb, labels, mining, "squared_euclidean", margin=0.8)


@pytest.mark.parametrize("mining", MININGS)
@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [5, 5, 5, 5]], ids=["singletons", "one-id"])
def test_no_valid_triplet_is_zero_loss_with_zero_gradient(mining, labels):
    """Every identity alone (no positive), or one identity (no negative): loss 0, gradient 0."""
    torch.manual_seed(0)
    x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    criterion = TripletLoss(mining=mining)
    loss = criterion(x, torch.tensor(labels))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert criterion.scalars()["triplets_valid"] == 0.0


def test_easy_batch_all_is_zero_not_nan():
    """Batch-all with every triplet inside the margin: no active term, loss exactly 0."""
    emb = torch.tensor([[1.0, 0], [1, 0.01], [-1, 0], [-1, 0.01]], dtype=torch.float64)
    loss, grad = check(emb, torch.tensor([0, 0, 1, 1]), "batch_all", "cosine", margin=0.1)
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


def test_scalars_are_the_active_fraction_and_mean_distances():
    emb, labels = batch(2)
    criterion = TripletLoss(margin=0.3, mining="batch_hard", distance="cosine")
    criterion(emb, labels)
    x = emb / emb.norm(dim=1, keepdim=True)
    d = 1 - x @ x.T
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(len(labels), dtype=torch.bool)
    diff = labels[:, None] != labels[None, :]
    stats = criterion.scalars()
    assert math.isclose(stats["distance_positive"], d[same].mean().item(), rel_tol=1e-9)
    assert math.isclose(stats["distance_negative"], d[diff].mean().item(), rel_tol=1e-9)
    anchors = [a for a in range(len(labels)) if same[a].any()]
    active = [d[a][same[a]].max() - d[a][diff[a]].min() + 0.3 > 0 for a in anchors]
    assert stats["triplets_valid"] == len(anchors)
    assert math.isclose(stats["triplets_active"], sum(active) / len(anchors), rel_tol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_embeddings_are_mined_in_float32(dtype):
    emb, labels = batch(3)
    low = emb.to(dtype).requires_grad_(True)
    loss = TripletLoss(mining="semi_hard")(low, labels)
    loss.backward()
    reference = naive(emb.to(dtype).double(), labels, "semi_hard", "squared_euclidean", 0.2, False)
    assert loss.dtype == torch.float32
    assert torch.isfinite(low.grad.float()).all()
    torch.testing.assert_close(loss.double(), reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("option", "value"), [("mining", "hardest"), ("distance", "l1"),
                                               ("margin", 0.0), ("margin", -1)])  # fmt: skip
def test_bad_options_name_the_key(option, value):
    with pytest.raises(ValueError, match=f"criterion.{option}"):
        TripletLoss(**{option: value})


def test_global_mining_under_ddp_is_the_mean_of_the_ranks_losses(tmp_path):
    """2 gloo ranks with 5 and 3 samples: each rank's loss is its anchors against the gathered
    batch (the naive loop), and DDP's averaged gradient is the gradient of their mean."""
    ranks = run_ranks("triplet_worker.py", tmp_path, worker.WORLD)
    labels = torch.cat(worker.LABELS)
    for mining in worker.MININGS:
        model = worker.model()
        emb = model(worker.inputs())
        losses = []
        for r in range(worker.WORLD):
            start = sum(worker.SIZES[:r])
            anchors = range(start, start + worker.SIZES[r])
            losses.append(naive(emb, labels, mining, "squared_euclidean", 0.5, False, anchors))
            torch.testing.assert_close(ranks[r][mining]["loss"], losses[-1].detach())
        torch.stack(losses).mean().backward()
        for r in range(worker.WORLD):
            for got, p in zip(ranks[r][mining]["grads"], model.parameters(), strict=True):
                torch.testing.assert_close(got, p.grad, rtol=1e-9, atol=1e-12)
