"""The training objective as one component: the loss, and everything the trainer asks of it.

detectron2's ``SimpleTrainer`` never asks what kind of model it trains; the difference lives in
the component. Here the component is the *criterion*: it maps a batch's embeddings and labels
to the loss and owns whatever parameters that takes (a margin head's class centres, a shard of
them, nothing at all for a triplet loss). The trainer calls the methods below and never
branches on the criterion's kind; a new objective is one subclass plus one YAML file in
``configs/criterion/``.

The defaults describe a criterion whose parameters are *replicated*: identical on every rank,
kept in sync by DDP around the whole recognizer, saved in the main checkpoint. A sharded
criterion (:class:`facerec.criteria.partial_fc.PartialFC`) overrides them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from facerec import distributed
from facerec.files.checkpoint import load_module_state

__all__ = ["Criterion"]


class Criterion(nn.Module):
    """``(embeddings (B, D), labels (B,)) -> loss``, plus what the trainer needs of its state.

    Attributes:
        replicated: True when this criterion's parameters are the same on every rank (DDP keeps
            them in sync); False when each rank holds its own part (Partial FC).
        head: the margin head whose scalars are reported (``None`` for an objective without
            one).
    """

    # `head` is not a class attribute: nn.Module keeps submodules in `_modules`, and a class
    # attribute would shadow them.
    replicated: bool = True

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The loss of a batch.

        Args:
            embeddings: ``(B, D)`` float, not L2-normalised.
            labels: ``(B,)`` int64 class indices.

        Returns:
            0-d float32 (float64 for float64 inputs) loss.
        """
        raise NotImplementedError

    def loss(self, model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
        """The loss of a batch of images: what the :class:`~facerec.model.Recognizer` calls.

        The model runs here, inside the module DDP wraps, so its gradients are synchronised
        as before. A criterion that needs the images too (distillation runs a teacher on
        them) overrides this; every other one only sees the embeddings.

        Args:
            model: ``images (B, 3, H, W) -> embeddings (B, D)``.
            images: ``(B, 3, H, W)`` uint8 (or float normalised to [-1, 1]).
            labels: ``(B,)`` int64 class indices.

        Returns:
            The 0-d loss of :meth:`forward`.
        """
        return self(model(images), labels)

    def scalars(self) -> dict[str, float]:
        """Values worth a TensorBoard curve, e.g. the head's (possibly adaptive) scale ``s``."""
        scale = getattr(getattr(self, "head", None), "s", None)
        return {} if scale is None else {"head_s": float(scale)}

    def clip_grad_norm_(self, replicated: Iterable[nn.Parameter], max_norm: float | None) -> Tensor:
        """The global gradient norm of ``replicated`` (the model's) and this criterion's
        parameters, clipped to ``max_norm`` (None: only computed).

        Returns:
            0-d tensor, the same on every rank (a non-finite one skips the step everywhere).
        """
        params = [*replicated, *self.parameters()]
        return nn.utils.clip_grad_norm_(params, max_norm or math.inf)

    def data_parallel(self, recognizer: nn.Module, device_ids: Sequence[Any] | None) -> nn.Module:
        """The module a DDP training step runs through: here the whole recognizer, replicated."""
        return DistributedDataParallel(recognizer, device_ids=device_ids)

    def broadcast_buffers(self) -> None:
        """Give every rank rank 0's buffers (e.g. AdaCos's scale) at the end of training."""
        distributed.broadcast_buffers(self)

    def checkpoint_entries(
        self, optimizer: torch.optim.Optimizer, folder: Path, tag: str, step: int, keep: int
    ) -> dict[str, Any]:
        """What the main checkpoint holds of this criterion and the optimizer.

        Called on every rank before rank 0 writes ``folder/<tag>.pt`` (``tag``: ``best`` or
        ``step_<step>``); a sharded criterion writes its per-rank files here.

        Returns:
            Entries for the main checkpoint: the head's ``state_dict`` and the optimizer's.
        """
        head = getattr(self, "head", self)
        return {"head": head.state_dict(), "optimizer": optimizer.state_dict()}

    def restore(self, ckpt: dict[str, Any], path: Path, optimizer: torch.optim.Optimizer) -> None:
        """Load what :meth:`checkpoint_entries` saved into this criterion and the optimizer.

        Raises:
            ValueError: naming ``path``, when the saved head does not fit this one.
        """
        head = getattr(self, "head", self)
        load_module_state(head, ckpt, "head", path)
        optimizer.load_state_dict(ckpt["optimizer"])
