"""Verification of a face model on pair lists: embed each image and its mirror, then score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from facerec.data.module import Pairs
from facerec.eval.verification import VerificationResult, evaluate_pairs, fuse_flip, make_folds
from facerec.model import embed_batches

__all__ = ["VerificationSet", "Verifier"]


class VerificationSet(Protocol):
    """What :class:`Verifier` needs of a set (:class:`facerec.data.PairsSet`,
    :class:`facerec.data.binpack.BinSet`)."""

    @property
    def name(self) -> str:
        """Short name for progress bars and messages."""
        ...

    def load(self) -> Pairs:
        """The distinct images (as keys for :meth:`dataset`), the pairs and their labels."""
        ...

    def dataset(self, images: Sequence) -> Dataset:
        """The images with keys ``images``, each uint8 ``(3, H, W)``."""
        ...


class Verifier:
    """One verification set, decoded once and kept in RAM as uint8 ``(M, 3, H, W)``.

    Args:
        pairs_set: the set (a :class:`facerec.data.PairsSet` or
            :class:`facerec.data.binpack.BinSet`).
        batch_size: images per forward pass (each with its mirror, so 2x on the device).
        num_workers: decoding processes for the first (and only) read of the images.
        fusion: how an image and its mirror combine: ``sum`` (insightface: add, then
            L2-normalise) or ``concat`` (the CosFace paper: concatenate, then normalise; the
            squared distance is then 2 - 2 cos of the concatenated features).
    """

    def __init__(
        self,
        pairs_set: VerificationSet,
        batch_size: int = 256,
        num_workers: int = 2,
        fusion: str = "sum",
    ) -> None:
        if fusion not in ("sum", "concat"):
            raise ValueError(f"fusion={fusion!r}: choose 'sum' (insightface) or 'concat' (CosFace)")
        self.fusion = fusion
        self.pairs: Pairs = pairs_set.load()
        self.pairs_set = pairs_set
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.images: torch.Tensor | None = None
        self.embeddings: np.ndarray | None = None

    def check(self, show_progress: bool = False) -> None:
        """Fail at start-up, not at the first evaluation (after hours of training): the pairs
        must make 10 folds and every image must decode (kept in RAM for the evaluations).

        Raises:
            ValueError: naming the set, too few same or different pairs for 10 folds.
            OSError: naming the file, an image that is missing or does not decode.
        """
        try:
            make_folds(self.pairs.issame)
        except ValueError as error:
            raise ValueError(f"verification set {self.pairs_set.name}: {error}") from None
        self.decode(show_progress)

    def decode(self, show_progress: bool = False) -> torch.Tensor:
        """Every distinct image, uint8 ``(M, 3, H, W)``; decoded on the first call only."""
        if self.images is None:
            loader = DataLoader(
                self.pairs_set.dataset(self.pairs.images),
                batch_size=64,
                num_workers=self.num_workers,
            )
            name = self.pairs_set.name
            batches = tqdm(loader, desc=f"decode {name}", unit="batch", disable=not show_progress)
            self.images = torch.cat(list(batches))
        return self.images

    def embed(
        self,
        model: nn.Module,
        device: torch.device,
        amp_dtype: torch.dtype | None = None,
        channels_last: bool = False,
        show_progress: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of every image and of its horizontal mirror: two float32 ``(M, D)``."""
        images = self.decode(show_progress)
        emb, emb_flip = embed_batches(
            model, images, device, self.batch_size, True, amp_dtype, channels_last
        )
        return emb, emb_flip

    def evaluate(self, model: nn.Module, device: torch.device, **kwargs) -> VerificationResult:
        """Flip-fused 10-fold verification of ``model`` (backbone + embedding) on this set."""
        emb, emb_flip = self.embed(model, device, **kwargs)
        # Kept for the TensorBoard projector: one flip-fused unit vector per image (M, D).
        self.embeddings = fuse_flip(emb, emb_flip, self.fusion)
        first, second = self.pairs.index[:, 0], self.pairs.index[:, 1]
        return evaluate_pairs(
            emb[first], emb[second], self.pairs.issame, emb_flip[first], emb_flip[second],
            method=self.fusion,
        )  # fmt: skip

    def pair_images(self, pairs: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
        """The two images of some pairs, e.g. those :func:`facerec.eval.hardest_pairs` picks.

        Args:
            pairs: ``(K,)`` pair indices.

        Returns:
            uint8 ``(K, 3, H, W)`` first images and ``(K, 3, H, W)`` second images.
        """
        images = self.decode()
        rows = self.pairs.index[np.asarray(pairs, dtype=np.int64)]
        return images[torch.from_numpy(rows[:, 0])], images[torch.from_numpy(rows[:, 1])]
