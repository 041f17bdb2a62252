"""Verification of a face model on pair lists: embed each image and its mirror, then score."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from facerec.data.module import Pairs, PairsSet
from facerec.data.transforms import normalize
from facerec.eval.verification import VerificationResult, evaluate_pairs


class Verifier:
    """One verification set, decoded once and kept in RAM as uint8 ``(M, 3, H, W)``.

    Args:
        pairs_set: the set's files.
        batch_size: images per forward pass (each with its mirror, so 2x on the device).
        num_workers: decoding processes for the first (and only) read of the images.
    """

    def __init__(self, pairs_set: PairsSet, batch_size: int = 256, num_workers: int = 2) -> None:
        self.pairs: Pairs = pairs_set.load()
        self.pairs_set = pairs_set
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.images: torch.Tensor | None = None

    def _decoded(self, show_progress: bool) -> torch.Tensor:
        if self.images is None:
            loader = DataLoader(
                self.pairs_set.dataset(self.pairs.images),
                batch_size=64,
                num_workers=self.num_workers,
            )
            name = self.pairs_set.pairs_file.name
            batches = tqdm(loader, desc=f"decode {name}", unit="batch", disable=not show_progress)
            self.images = torch.cat(list(batches))
        return self.images

    @torch.no_grad()
    def embed(
        self,
        model: nn.Module,
        device: torch.device,
        amp_dtype: torch.dtype | None = None,
        channels_last: bool = False,
        show_progress: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of every image and of its horizontal mirror: two float32 ``(M, D)``."""
        images = self._decoded(show_progress)
        was_training = model.training
        model.eval()
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        autocast = (
            torch.autocast(device.type, dtype=amp_dtype)
            if amp_dtype is not None
            else contextlib.nullcontext()
        )
        plain, mirror = [], []
        try:
            for start in range(0, len(images), self.batch_size):
                batch = normalize(images[start : start + self.batch_size].to(device))
                # The image and its mirror in one forward pass: one batch, twice the width.
                both = torch.cat([batch, batch.flip(3)]).contiguous(memory_format=memory_format)
                with autocast:
                    emb = model(both).float()
                plain.append(emb[: len(batch)].cpu())
                mirror.append(emb[len(batch) :].cpu())
        finally:
            model.train(was_training)
        return torch.cat(plain).numpy(), torch.cat(mirror).numpy()

    def evaluate(self, model: nn.Module, device: torch.device, **kwargs) -> VerificationResult:
        """Flip-fused 10-fold verification of ``model`` (backbone + embedding) on this set."""
        emb, emb_flip = self.embed(model, device, **kwargs)
        first, second = self.pairs.index[:, 0], self.pairs.index[:, 1]
        return evaluate_pairs(
            emb[first], emb[second], self.pairs.issame, emb_flip[first], emb_flip[second]
        )
