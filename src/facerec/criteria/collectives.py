"""The collectives and sharded maths under Partial FC (:mod:`facerec.criteria.partial_fc`).

Pure functions and autograd Functions over a process group: which classes a rank owns, an
all-gather that carries the gradient back at the right scale, a softmax cross-entropy over
classes split across the ranks, and the global gradient norm when part of the parameters is
sharded. The gradient-scale argument is in :mod:`facerec.criteria.partial_fc`'s docstring.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AllGather",
    "ShardedCrossEntropy",
    "class_rows",
    "class_shard",
    "clip_grad_norm_",
    "gather_batch",
    "gather_rows",
    "num_classes_as",
]


def class_shard(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous block of classes a rank owns: ``(start, count)``.

    ``C // W`` classes each, the first ``C % W`` ranks one more (insightface's split), so any
    ``C >= W`` works.

    Args:
        num_classes: Total number of classes ``C``.
        rank: This rank, ``0 <= rank < world_size``.
        world_size: Number of ranks ``W``.

    Returns:
        ``(start, count)``: the rank owns classes ``start … start + count - 1``.

    Raises:
        ValueError: If ``num_classes < world_size`` or ``rank`` is out of range.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    if num_classes < world_size:
        raise ValueError(
            f"Partial FC needs num_classes >= world_size, got {num_classes} < {world_size}"
        )
    base, extra = divmod(num_classes, world_size)
    return base * rank + min(rank, extra), base + int(rank < extra)


class AllGather(torch.autograd.Function):
    """All-gather rows of possibly different counts per rank, with a gradient.

    Backward: every rank holds the gradient of its own loss term w.r.t. the *whole* gathered
    batch (its shard's contribution); their sum over the ranks is the full gradient. It is
    all-reduced (a reduce-scatter would move half the bytes, but gloo has none and the tensor
    is only ``(B_global, D)``), this rank's rows are kept and multiplied by ``grad_scale``:
    ``world_size`` when the ranks' losses are parts of one sum (Partial FC), so that DDP's
    average of the backbone gradients over the ranks is the exact gradient; 1 when each rank's
    loss is its own mean (the triplet loss's local anchors: DDP's average is then the gradient
    of the mean of the ranks' losses).
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        local: Tensor,
        sizes: list[int],
        rank: int,
        group: dist.ProcessGroup | None,
        grad_scale: float,
    ) -> Tensor:
        ctx.sizes, ctx.rank, ctx.group, ctx.grad_scale = sizes, rank, group, grad_scale
        return gather_rows(local, sizes, group)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor, None, None, None, None]:
        total = grad.contiguous().clone()  # autograd may hand the same tensor to others
        dist.all_reduce(total, group=ctx.group)
        start = sum(ctx.sizes[: ctx.rank])
        mine = total[start : start + ctx.sizes[ctx.rank]]
        return mine * ctx.grad_scale, None, None, None, None


def gather_batch(
    embeddings: Tensor, labels: Tensor, rank: int, world_size: int,
    group: dist.ProcessGroup | None, grad_scale: float,
) -> tuple[Tensor, Tensor, int]:  # fmt: skip
    """The global batch, in rank order, and where this rank's rows start in it.

    Args:
        embeddings: this rank's ``(B_local, D)``; the ranks may have different ``B_local``
            (the trainer drops unreadable images).
        labels: this rank's ``(B_local,)`` int64.
        grad_scale: see :class:`AllGather`.

    Returns:
        ``(B_global, D)`` embeddings (differentiable), ``(B_global,)`` labels, and the index of
        this rank's first row.
    """
    if world_size == 1:
        return embeddings, labels, 0
    # One tiny collective and a host sync for the sizes: all_gather needs equal shapes.
    size = torch.tensor([embeddings.shape[0]], device=embeddings.device)
    sizes = [torch.empty_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size, group=group)
    counts = [int(n) for n in torch.cat(sizes).tolist()]
    everything = AllGather.apply(embeddings, counts, rank, group, grad_scale)
    return everything, gather_rows(labels, counts, group), sum(counts[:rank])


def gather_rows(local: Tensor, sizes: list[int], group: dist.ProcessGroup | None) -> Tensor:
    """Concatenate every rank's ``(sizes[r], …)`` rows (padded to the largest for the call)."""
    longest = max(sizes)
    padded = F.pad(local, (0, 0) * (local.dim() - 1) + (0, longest - local.shape[0]))
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous(), group=group)
    return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])


class ShardedCrossEntropy(torch.autograd.Function):
    """Softmax cross-entropy over classes split across the ranks, averaged over the batch.

    Forward: each rank's log-sum-exp over its columns and its target logits (0 where it does
    not own the class) are all-gathered in one call; ``lse = logsumexp_r lse_r`` and the
    target is their sum (exactly one rank owns each row). Backward needs no communication:
    ``∂L/∂z_ij = (softmax_ij - [j = y_i]) / B`` on this rank's columns, with the global ``lse``.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        logits: Tensor,
        labels: Tensor,
        world_size: int,
        group: dist.ProcessGroup | None,
    ) -> Tensor:
        known = labels >= 0
        index = labels.clamp(min=0).unsqueeze(1)
        lse = torch.logsumexp(logits, dim=1)
        target = torch.where(known, logits.gather(1, index).squeeze(1), 0.0)
        if world_size > 1:
            stats = torch.stack([lse, target])  # (2, B): one collective instead of two
            parts = [torch.empty_like(stats) for _ in range(world_size)]
            dist.all_gather(parts, stats, group=group)
            every = torch.stack(parts)  # (W, 2, B)
            lse = torch.logsumexp(every[:, 0], dim=0)
            target = every[:, 1].sum(dim=0)
        ctx.save_for_backward(logits, lse, index, known)
        return (lse - target).mean()

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor, None, None, None]:
        logits, lse, index, known = ctx.saved_tensors
        probs = torch.exp(logits - lse.unsqueeze(1))
        probs.scatter_add_(1, index, -known.unsqueeze(1).to(probs.dtype))
        return probs.mul_(grad / logits.shape[0]), None, None, None


def class_rows(index: Tensor, k: int) -> Tensor:
    """Rows of the classes ``index`` ``(n,)`` in a class-major ``(C·k, …)`` parameter."""
    if k == 1:
        return index
    return (index.unsqueeze(1) * k + torch.arange(k, device=index.device)).flatten()


@contextlib.contextmanager
def num_classes_as(head: nn.Module, count: int) -> Iterator[None]:
    """Let ``head.num_classes`` say ``count`` while it runs on a sample of its centres.

    Sub-centre ArcFace reshapes its ``(B, C·k)`` cosines with ``num_classes``; the other heads
    read it only at construction.
    """
    saved = getattr(head, "num_classes", None)
    if saved is None:
        yield
        return
    head.num_classes = count
    try:
        yield
    finally:
        head.num_classes = saved


def clip_grad_norm_(
    replicated: Iterable[nn.Parameter],
    sharded: Iterable[nn.Parameter],
    max_norm: float | None = None,
    group: dist.ProcessGroup | None = None,
) -> Tensor:
    """Norm of the whole gradient when part of the parameters is sharded; clip by it.

    ``torch.nn.utils.clip_grad_norm_`` on one rank would see only its own shard of the
    centres: the norm, the clipping factor and the skip-on-non-finite decision would then
    differ between ranks. Here the squared norm of the shards is summed over the ranks (one
    all-reduce of a scalar), so every rank gets the same norm.

    Args:
        replicated: Parameters whose gradients are identical on every rank (the DDP model).
        sharded: This rank's :class:`PartialFC` parameters.
        max_norm: Clip to this global norm; ``None`` only computes it.
        group: Process group of the shards; ignored when not distributed.

    Returns:
        The global gradient norm, 0-d float32, identical on every rank.
    """
    replicated, sharded = list(replicated), list(sharded)
    grads = [p.grad for p in replicated if p.grad is not None]
    shard_grads = [p.grad for p in sharded if p.grad is not None]
    device = (grads + shard_grads)[0].device if grads or shard_grads else torch.device("cpu")
    squared = torch.nn.utils.get_total_norm(shard_grads).to(device, torch.float32).square()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(squared, group=group)
    squared = squared + torch.nn.utils.get_total_norm(grads).to(device, torch.float32).square()
    total = squared.sqrt()
    if max_norm is not None:
        torch.nn.utils.clip_grads_with_norm_(replicated + sharded, max_norm, total)
    return total
