"""Verifier: each image and its mirror embedded once, fused as configured, then scored."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from facerec.data.module import Pairs
from facerec.eval.verification import evaluate_pairs
from facerec.model import FaceModel
from facerec.training.verifier import Verifier


class FakeSet:
    """20 random images, 20 pairs (10 same, 10 different), in the VerificationSet interface."""

    name = "fake"

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.images = torch.from_numpy(rng.integers(0, 255, (20, 3, 8, 8), dtype=np.uint8))
        self.index = rng.integers(0, 20, (20, 2))
        self.issame = np.array([True] * 10 + [False] * 10)

    def load(self) -> Pairs:
        return Pairs(list(range(20)), self.index, self.issame)

    def dataset(self, images: list[int]) -> Dataset:
        return [self.images[i] for i in images]


@pytest.mark.parametrize("fusion", ["sum", "concat"])
def test_verifier_matches_the_protocol_on_the_model_outputs(fusion):
    torch.manual_seed(0)
    # A FaceModel (it normalises the uint8 images the Verifier hands it) of a linear map.
    model = FaceModel(nn.Flatten(), nn.Linear(3 * 8 * 8, 16))
    fake = FakeSet()
    result = Verifier(fake, batch_size=7, num_workers=0, fusion=fusion).evaluate(
        model, torch.device("cpu")
    )
    with torch.no_grad():
        x = fake.images.float().sub(127.5).div(127.5)
        emb, emb_flip = model(x).numpy(), model(x.flip(3)).numpy()
    a, b = fake.index[:, 0], fake.index[:, 1]
    expected = evaluate_pairs(emb[a], emb[b], fake.issame, emb_flip[a], emb_flip[b], method=fusion)
    assert result.accuracy == expected.accuracy
    np.testing.assert_allclose(result.distances, expected.distances, rtol=1e-5, atol=1e-6)


def test_unknown_fusion_is_named():
    with pytest.raises(ValueError, match="fusion='mean'"):
        Verifier(FakeSet(), fusion="mean")
