"""The face model (backbone -> embedding) and the recognizer trained around it (model + criterion).

Images enter as uint8 pixels and are normalised here, on the model's device, the one place it
happens (the loaders ship uint8: four times less host-to-device traffic than float32).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from facerec import distributed
from facerec.criteria.base import Criterion
from facerec.data.transforms import normalize

__all__ = [
    "FaceModel",
    "HeadFactory",
    "Recognizer",
    "build_face_model",
    "build_recognizer",
    "embed_batches",
]


class FaceModel(nn.Module):
    """``images (B, 3, 112, 112) -> embeddings (B, D)``, not L2-normalised.

    Args:
        backbone: images -> features of shape ``(B, *backbone.feature_shape)``.
        embedding: features -> embeddings ``(B, D)``, e.g. :class:`facerec.embedding.Embedding`.
    """

    def __init__(self, backbone: nn.Module, embedding: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.embedding = embedding

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, D)``.

        ``images`` are uint8 pixels, normalised here to ``(x - 127.5) / 127.5``, or a float
        tensor already normalised that way (the ONNX export's input, see
        :data:`facerec.inference.images.PREPROCESSING`).
        """
        if images.dtype == torch.uint8:
            images = self.preprocess(images)
        return self.embedding(self.backbone(images))

    @staticmethod
    def preprocess(images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` -> the float32 input in [-1, 1] (the ONNX export takes it)."""
        return normalize(images)


def build_face_model(cfg: Mapping[str, Any]) -> FaceModel:
    """Backbone -> embedding from a composed training config's ``backbone`` and ``embedding``.

    A training config is code by design (its ``_target_``s are imported); a *saved* config (a
    checkpoint's, a model folder's) never comes here: it is read as data into a
    :class:`facerec.inference.spec.ModelSpec`, whose ``build()`` calls facerec's own classes.

    Args:
        cfg: a composed training config (DictConfig).

    Returns:
        A freshly initialised :class:`FaceModel` (no head).
    """
    backbone = instantiate(cfg["backbone"])
    embedding = instantiate(cfg["embedding"], in_shape=backbone.feature_shape)
    return FaceModel(backbone, embedding)


class Recognizer(nn.Module):
    """Face model + training criterion in one module, so one DDP wrapper can sync both.

    The trainer steps, clips, wraps and broadcasts through these methods; what differs between
    criteria (replicated or sharded centres) is the criterion's to decide.

    Args:
        model: images -> embeddings (a :class:`FaceModel`, or a compiled/DDP wrapper of one).
        criterion: embeddings, labels -> loss; the recognizer calls its
            ``loss(model, images, labels)`` (a distillation criterion also runs a teacher there).
    """

    def __init__(self, model: nn.Module, criterion: Criterion) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion

    @property
    def head(self) -> nn.Module | None:
        """The criterion's margin head (its class centres are ``head.weight``)."""
        return getattr(self.criterion, "head", None)

    @property
    def parts(self) -> dict[str, nn.Module]:
        """The parts whose learning rate can be scaled (``trainer.lr_scale``)."""
        return {"backbone": self.model.backbone, "embedding": self.model.embedding,
                "criterion": self.criterion}  # fmt: skip

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch.

        Args:
            images: ``(B, 3, H, W)`` uint8, or float normalised to [-1, 1].
            labels: ``(B,)`` int64 class indices.

        Returns:
            Scalar loss (float32, or float64 for a float64 model).
        """
        return self.criterion.loss(self.model, images, labels)

    def no_sync(self) -> contextlib.AbstractContextManager:
        """DDP's no_sync of the model when only the model is DDP-wrapped (sharded criterion)."""
        no_sync = getattr(self.model, "no_sync", None)
        return no_sync() if no_sync is not None else contextlib.nullcontext()

    def data_parallel(self, device_ids: Sequence[Any] | None) -> nn.Module:
        """The DDP module a training step runs through; it shares every parameter with this."""
        return self.criterion.data_parallel(self, device_ids)

    def clip_grad_norm_(self, max_norm: float | None) -> torch.Tensor:
        """The global gradient norm (0-d, the same on every rank), clipped to ``max_norm``."""
        return self.criterion.clip_grad_norm_(self.model.parameters(), max_norm)

    def broadcast_buffers(self) -> None:
        """Rank 0's BatchNorm statistics (and the criterion's replicated state) everywhere."""
        distributed.broadcast_buffers(self.model)
        self.criterion.broadcast_buffers()


@dataclass(frozen=True)
class HeadFactory:
    """``factory(num_classes) -> head``: the head's config bound to the embedding size.

    A criterion builds its head(s) with it, for all classes or for its shard of them.
    """

    config: DictConfig
    embedding_size: int

    def __call__(self, num_classes: int) -> nn.Module:
        return instantiate(self.config, embedding_size=self.embedding_size, num_classes=num_classes)


def build_recognizer(
    cfg: DictConfig, num_classes: int, env: distributed.Dist | None = None
) -> Recognizer:
    """Backbone -> embedding, then the criterion (``cfg.criterion``) around the head.

    Args:
        cfg: the composed training config.
        num_classes: identities in the training data.
        env: this process's rank and world size (a sharded criterion builds its shard).
    """
    size = int(cfg.embedding.embedding_size)
    rank, world = (env.rank, env.world_size) if env else (0, 1)
    make_criterion = instantiate(cfg.criterion, _partial_=True)
    criterion = make_criterion(make_head=HeadFactory(cfg.head, size), num_classes=num_classes,
                               embedding_size=size, rank=rank, world_size=world,
                               seed=int(cfg.seed))  # fmt: skip
    return Recognizer(build_face_model(cfg), criterion)


@torch.no_grad()
def embed_batches(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = 256,
    flip: bool = True,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw embeddings of uint8 images, and of their horizontal mirrors, in eval mode.

    The model's train/eval mode is restored afterwards.

    Args:
        model: uint8 images ``(B, 3, H, W)`` -> embeddings ``(B, D)`` (a
            :class:`facerec.model.FaceModel`, which normalises its input).
        images: uint8 ``(M, 3, H, W)`` on any device; moved batch by batch.
        device: where the model is.
        batch_size: images per forward pass (each with its mirror, so 2x on the device).
        flip: also embed the mirrors.
        amp_dtype: autocast dtype, or None for full precision.
        channels_last: feed NHWC tensors (as the model was trained with).

    Returns:
        ``(emb, emb_flip)``: float32 ``(M, D)`` each, not normalised; ``emb_flip`` is None
        without ``flip``.
    """
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
        for start in range(0, len(images), batch_size):
            # uint8 on the device: the model normalises its input itself.
            batch = images[start : start + batch_size].to(device)
            # The image and its mirror in one forward pass: one batch, twice the width.
            both = torch.cat([batch, batch.flip(3)]) if flip else batch
            with autocast:
                emb = model(both.contiguous(memory_format=memory_format)).float()
            plain.append(emb[: len(batch)].cpu())
            if flip:
                mirror.append(emb[len(batch) :].cpu())
    finally:
        model.train(was_training)
    return torch.cat(plain).numpy(), torch.cat(mirror).numpy() if flip else None
