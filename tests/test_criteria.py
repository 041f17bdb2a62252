"""Every criterion in configs/criterion/ builds, trains and checkpoints through the one interface
the trainer uses; in float64 each equals the plain cross-entropy of the unsharded head."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from facerec.cli import CONFIG_DIR
from facerec.criteria import Criterion
from facerec.model import FaceModel, build_recognizer

CONFIGS = CONFIG_DIR
CRITERIA = sorted(p.stem for p in (CONFIGS / "criterion").glob("*.yaml"))
CLASSES = 6


def recognizer(criterion: str, head: str = "arcface"):
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"criterion={criterion}", f"head={head}",
                                          "embedding.embedding_size=16"])  # fmt: skip
    torch.manual_seed(0)
    return build_recognizer(cfg, CLASSES).double().train()


def batch():
    torch.manual_seed(1)
    pixels = torch.randint(0, 256, (4, 3, 112, 112), dtype=torch.uint8)
    return FaceModel.preprocess(pixels).double(), torch.tensor([0, 2, 5, 2])


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("head", ["arcface", "magface", "softmax"])
def test_every_criterion_is_the_plain_cross_entropy_in_float64(criterion, head):
    """One process, all centres: the loss and every gradient equal an independent sum of
    ``F.cross_entropy`` of the head's logits and the head's regulariser."""
    model = recognizer(criterion, head)
    assert isinstance(model.criterion, Criterion)
    reference = copy.deepcopy(model)
    images, labels = batch()
    loss = model(images, labels)
    loss.backward()
    embeddings = reference.model(images)
    inner = reference.head
    expected = F.cross_entropy(inner(embeddings, labels), labels)
    if hasattr(inner, "regularizer"):
        expected = expected + inner.regularizer(embeddings)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters(),
                                 strict=True):  # fmt: skip
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_the_trainer_interface(criterion, tmp_path):
    """Gradient norm, scalars and a checkpoint round trip, as the loop uses them."""
    model = recognizer(criterion)
    images, labels = batch()
    model(images, labels).backward()
    params = list(model.parameters())
    expected = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    norm = model.clip_grad_norm_(None)  # float32 under Partial FC (summed across ranks)
    torch.testing.assert_close(norm.double(), expected, rtol=1e-6, atol=0)
    assert model.criterion.scalars() == {"head_s": 64.0}
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
