"""Every criterion in configs/criterion/ builds, trains and checkpoints through the one interface
the trainer uses; in float64 each equals the plain cross-entropy of the unsharded head."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_distill import save_teacher
from triplet_reference import naive

from facerec.configs import CONFIG_DIR
from facerec.criteria import Criterion
from facerec.model import FaceModel, build_recognizer

CONFIGS = CONFIG_DIR
CRITERIA = sorted(p.stem for p in (CONFIGS / "criterion").glob("*.yaml"))
CLASSES = 6


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A 16-d teacher checkpoint for ``criterion=distill``."""
    return save_teacher(tmp_path_factory.mktemp("teacher") / "teacher.pt", size=16)


@pytest.fixture
def recognizer(compose_train, teacher):
    """``recognizer(criterion, head="arcface", *overrides)``: that model in float64 with 16-d
    embeddings and ``CLASSES`` classes, initialised from seed 0, in training mode."""

    def build(criterion: str, head: str = "arcface", *overrides: str):
        needs = [f"criterion.teacher={teacher}"] if criterion == "distill" else []
        cfg = compose_train(f"criterion={criterion}", f"head={head}",
                            "embedding.embedding_size=16", *needs, *overrides)  # fmt: skip
        torch.manual_seed(0)
        return build_recognizer(cfg, CLASSES).double().train()

    return build


def batch():
    torch.manual_seed(1)
    pixels = torch.randint(0, 256, (4, 3, 112, 112), dtype=torch.uint8)
    # Identity 2 twice: a positive pair, so the triplet criteria have triplets to mine.
    return FaceModel.preprocess(pixels).double(), torch.tensor([0, 2, 5, 2])


def cross_entropy(model, embeddings, labels):
    """The plain cross-entropy of the (unsharded) head's logits + the head's regulariser."""
    inner = model.head
    loss = F.cross_entropy(inner(embeddings, labels), labels)
    if hasattr(inner, "regularizer"):
        loss = loss + inner.regularizer(embeddings)
    return loss


def triplet(model, embeddings, labels, options=None):
    """The naive loop over every triplet (tests/triplet_reference.py)."""
    o = dict(options or model.criterion.options)
    return naive(embeddings, labels, o["mining"], o["distance"], o["margin"], o["soft"])


def weighted_sum(model, embeddings, labels):
    """Each term's own reference, weighted."""
    total = 0
    for name, term in model.criterion.terms.items():
        kind = REFERENCE_OF[type(term).__name__]
        part = triplet(model, embeddings, labels, term.options) if kind is triplet else kind(
            model, embeddings, labels)  # fmt: skip
        total = total + model.criterion.weights[name] * part
    return total


def distillation(model, embeddings, labels):
    """The cross-entropy + λ × (1 - cos) to the teacher's embeddings of the same batch."""
    target = model.criterion.teacher(batch()[0]).double()
    cos = (embeddings * target).sum(dim=1) / (embeddings.norm(dim=1) * target.norm(dim=1))
    weight = model.criterion.weight
    return cross_entropy(model, embeddings, labels) + weight * (1 - cos).mean()


# Every criterion class is checked against an independent reference of what it computes.
REFERENCE_OF = {"MarginLoss": cross_entropy, "PartialFC": cross_entropy, "TripletLoss": triplet,
                "WeightedSum": weighted_sum, "DistillationLoss": distillation}  # fmt: skip


def test_every_criterion_config_has_a_reference(recognizer):
    for name in CRITERIA:
        assert type(recognizer(name).criterion).__name__ in REFERENCE_OF, name


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("head", ["arcface", "magface", "softmax"])
def test_every_criterion_equals_its_float64_reference(criterion, head, recognizer):
    """One process, all centres: the loss and every gradient equal an independent reference
    (the plain ``F.cross_entropy`` of the head's logits and its regulariser for margin
    criteria, the naive triplet loop for pair losses, their weighted sum for combinations)."""
    model = recognizer(criterion, head)
    assert isinstance(model.criterion, Criterion)
    reference = copy.deepcopy(model)
    images, labels = batch()
    loss = model(images, labels)
    loss.backward()
    expected = REFERENCE_OF[type(model.criterion).__name__](
        reference, reference.model(images), labels)  # fmt: skip
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters(),
                                 strict=True):  # fmt: skip
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-8, atol=1e-12, msg=name)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_the_trainer_interface(criterion, tmp_path, recognizer):
    """Gradient norm, scalars and a checkpoint round trip, as the loop uses them."""
    model = recognizer(criterion)
    images, labels = batch()
    model(images, labels).backward()
    params = list(model.parameters())
    expected = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    norm = model.clip_grad_norm_(None)  # float32 under Partial FC (summed across ranks)
    torch.testing.assert_close(norm.double(), expected, rtol=1e-6, atol=0)
    scalars = model.criterion.scalars()
    assert all(isinstance(v, float) for v in scalars.values())
    if model.head is not None:
        assert scalars.get("head_s", scalars.get("margin/head_s")) == 64.0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    optimizer.step()
    entries = model.criterion.checkpoint_entries(optimizer, tmp_path, "step_000000001", 1, 3)
    ckpt = {"step": 1, **entries}
    other = recognizer(criterion)
    other_optimizer = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    other.criterion.restore(ckpt, tmp_path / "step_000000001.pt", other_optimizer)
    for p, q in zip(model.criterion.parameters(), other.criterion.parameters(), strict=True):
        assert torch.equal(p, q)
    assert other_optimizer.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()


@pytest.mark.parametrize("smoothing", [0.1, 0.3])
def test_label_smoothing_equals_the_written_out_mixture(smoothing, recognizer):
    """``criterion.label_smoothing=e``: (1 - e) x the margin cross-entropy + e x the mean of
    -log p over all C classes, the margin logits written out in float64 by hand."""
    model = recognizer("margin", "cosface", f"criterion.label_smoothing={smoothing}")
    images, labels = batch()
    embeddings = model.model(images)
    loss = model.criterion(embeddings, labels)
    weight = model.head.weight.double()
    cos = F.normalize(embeddings, dim=1) @ F.normalize(weight, dim=1).T
    logits = model.head.s * (cos - model.head.m * F.one_hot(labels, CLASSES))
    log_p = logits.log_softmax(dim=1)
    true = -log_p.gather(1, labels[:, None]).squeeze(1)
    expected = ((1 - smoothing) * true + smoothing * -log_p.mean(dim=1)).mean()
    # 1e-8: the head clamps the target cosine a hair inside [-1, 1]; smoothing moves it by ~5%
    torch.testing.assert_close(loss, expected, rtol=1e-8, atol=1e-10)


def test_impossible_label_smoothing_is_refused_naming_the_key():
    from facerec.criteria import MarginLoss

    with pytest.raises(ValueError, match=r"criterion\.label_smoothing=1"):
        MarginLoss(torch.nn.Identity(), label_smoothing=1.0)
