"""Every backbone x every head composes through Hydra and trains on a tiny batch."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from facerec.configs import CONFIG_DIR
from facerec.model import Recognizer
from facerec.model import build_recognizer as build

CONFIGS = CONFIG_DIR
BACKBONES = sorted(p.stem for p in (CONFIGS / "backbone").glob("*.yaml"))
HEADS = sorted(p.stem for p in (CONFIGS / "head").glob("*.yaml"))
NUM_CLASSES = 7


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_head_composes_with_backbone_and_backpropagates(backbone, compose_train):
    """One forward of the backbone, every head on its embeddings, one backward of the sum.

    Each (backbone, head) pair is composed by Hydra as a user would select it; sharing the
    backbone pass keeps resnet100 x 13 heads affordable on a CPU.
    """
    extra = ["backbone.model_name=resnet10t"] if backbone == "timm" else []
    model = build(compose_train(f"backbone={backbone}", *extra), NUM_CLASSES).model
    torch.manual_seed(0)
    embeddings = model(torch.randn(3, 3, 112, 112))
    labels = torch.tensor([0, 3, 6])
    total = torch.zeros(())
    heads = {}
    for head in HEADS:
        cfg = compose_train(f"backbone={backbone}", f"head={head}", *extra)
        heads[head] = instantiate(
            cfg.head, embedding_size=embeddings.shape[1], num_classes=NUM_CLASSES
        )
        logits = heads[head](embeddings, labels)
        assert logits.shape == (3, NUM_CLASSES), head
        loss = torch.nn.functional.cross_entropy(logits, labels)
        assert torch.isfinite(loss), head
        total = total + loss
    total.backward()
    for name, head in heads.items():
        assert head.weight.grad is not None and torch.isfinite(head.weight.grad).all(), name
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_build_returns_a_recognizer_with_the_configured_sizes(compose_train):
    cfg = compose_train("embedding.embedding_size=128", "head=cosface")
    recognizer = build(cfg, NUM_CLASSES)
    assert isinstance(recognizer, Recognizer)
    assert recognizer.head.weight.shape == (NUM_CLASSES, 128)
    recognizer.train()
    loss = recognizer(torch.randn(2, 3, 112, 112), torch.tensor([1, 2]))
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert recognizer.head.weight.grad is not None
