"""Partial FC: the class centres sharded across the ranks (An et al., arXiv 2203.15565).

(Over 300 lines because this docstring is the design note the sharded maths is tested against;
the code is under 300, the collectives live in :mod:`facerec.criteria.collectives`.)

With millions of identities the ``(C, D)`` centres, their gradient and their momentum no
longer fit one device (2M x 512 in float32: 4 GB each). :class:`PartialFC` keeps on rank ``r``
only a contiguous block of classes (:func:`class_shard`) and computes the loss of the *global*
batch without ever materialising the ``(B, C)`` logits in one place:

1. every rank all-gathers the embeddings (with gradient) and labels of all ranks;
2. it computes its shard's logits with the wrapped margin head, optionally on a sample of its
   centres (all positives of the global batch plus a random fraction of the negatives);
3. a distributed softmax cross-entropy combines the shards: each rank's log-sum-exp and the
   target logit from the rank that owns it, so the loss (the mean over the global batch) is
   the same number on every rank.

With ``sample_rate = 1`` this is exact model parallelism: loss and gradients equal those of the
unsharded head on the concatenated batch (tests/test_partial_fc.py checks it to 1e-6 on two
gloo ranks, in float64, for every head that can be sharded).

Any head of :mod:`facerec.heads` can be wrapped (the margin stays the head's own code):

* built for its shard, ``instantiate(cfg.head, embedding_size=D, num_classes=local)`` with
  ``local`` from :func:`class_shard` (or :meth:`PartialFC.build` with a factory);
* called with labels remapped to its shard, ``-1`` for classes of other ranks, and a
  ``share_target`` callback that all-reduces the target cosines (see
  :meth:`facerec.heads.base.MarginHead.forward`), so the margin is applied once, by the rank
  that owns the class, and heads that read every sample's target cosine see the same values
  on every rank.

Heads with state, under Partial FC:

* SphereFace (iteration counter): advances once per training forward on every rank: in step.
* CurricularFace (``t``, the mean target cosine; hard negatives against each sample's target):
  the target cosines are all-reduced first, so every rank updates ``t`` from the whole global
  batch, exactly as the unsharded head would.
* AdaFace (running mean/std of the feature norms): computed from the gathered global batch,
  identical on every rank.
* MagFace's regulariser is added on this rank's *local* embeddings (so under DDP its gradient
  is averaged over the ranks like any per-rank loss term); the cross-entropy part is global.
* AdaCos is **not supported** with ``world_size > 1`` or ``sample_rate < 1`` (a clear
  ``ValueError``): its fixed scale depends on ``C`` and its dynamic update on the
  ``exp(s·cos)`` of every class, neither of which a shard has.

Sampling (``sample_rate < 1``, training mode only). Each step rank ``r`` keeps every class of
its shard that occurs in the global batch and fills up to ``int(sample_rate · local)`` centres
with random negatives, drawn by a ``torch.Generator`` seeded from ``(seed, step, rank)``: the
positives are the same on every rank by construction (they come from the gathered labels), the
draw is reproducible and a resumed run repeats it (``step`` is in ``state_dict``). The full
local centres stay the ``Parameter``; the sampled rows are indexed from it inside ``forward``,
so autograd writes exact gradients into those rows and zeros elsewhere. The optimizer therefore
treats all rows alike: with momentum and weight decay, rows not sampled this step still move by
their momentum and decay. insightface's ``partial_fc_v2`` does the same; its first version kept
a sampled copy and swapped the momentum rows in and out of the optimizer state instead, so
unsampled rows stayed frozen. Sampling does not save weight, gradient or momentum memory (they
are full-size per shard), only the ``(B, C_local)`` logits and the matmul time.

Gradient scale. The loss is the mean over the *global* batch and is identical on every rank.
The gradient that reaches a rank's local embeddings is ``world_size × ∂L/∂x_local``: DDP
averages the backbone gradients over the ranks, and that average must be ``∂L/∂θ``, the
gradient of the single-process loss on the concatenated batch (insightface's ``AllGather``
does the same). The centres' gradients are exact (``∂L/∂W_shard``) and must not be averaged:
the shard is this rank's alone, so DDP must wrap the backbone + embedding only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.parallel import DistributedDataParallel

from facerec import distributed
from facerec.criteria.base import Criterion
from facerec.criteria.collectives import (
    ShardedCrossEntropy,
    class_rows,
    class_shard,
    clip_grad_norm_,
    gather_batch,
    num_classes_as,
)
from facerec.criteria.margin import add_regularizer
from facerec.files import checkpoint

__all__ = ["PartialFC", "class_shard"]


class PartialFC(Criterion):
    """A margin head whose class centres are sharded over the ranks; returns the loss.

    Args:
        head: The margin head built for this rank's shard: ``num_classes`` =
            ``class_shard(num_classes, rank, world_size)[1]``, ``embedding_size`` = ``D``. Any
            :class:`~facerec.heads.base.MarginHead` or :class:`~facerec.heads.softmax.Softmax`;
            AdaCos only with ``world_size = 1`` and ``sample_rate = 1``.
        num_classes: Total number of classes ``C`` over all ranks.
        embedding_size: Embedding dimension ``D``.
        sample_rate: Fraction of this shard's centres used per training step (positives of the
            global batch always included), ``0 < sample_rate <= 1``; evaluation uses all.
        rank: This process's rank in ``group``.
        world_size: Number of ranks in ``group``; 1 runs without any communication (plain
            cross-entropy over the head, with sampling if asked).
        seed: Seed of the negative sampling (combined with the step and the rank).
        group: Process group; ``None`` is the default group.

    Raises:
        TypeError: If ``head`` does not declare ``shardable`` (not a facerec head).
        ValueError: On a shard size, embedding size or sample rate that does not fit, or
            a head declaring ``shardable = False`` (AdaCos) with ``world_size > 1`` or
            ``sample_rate < 1``.

    Attributes:
        head: The wrapped head; ``head.weight`` ``(C_local, D)`` (``(C_local·k, D)`` for
            sub-centre ArcFace) is this rank's shard, class ``class_start + i`` in row ``i``.
        class_start: First class of this rank's shard.
        num_local: Number of classes of this rank's shard.
        num_sample: Centres per training step when sampling (``int(sample_rate · num_local)``,
            at least 1; more when the batch has more positives).
        step: Training forwards so far (seeds the sampling; in ``state_dict``).
        last_index: Local class indices used by the last forward, sorted, ``(n,)``; ``None``
            when all centres were used.
    """

    replicated = False  # each rank's centres are its own

    def __init__(
        self,
        head: nn.Module,
        num_classes: int,
        embedding_size: int,
        sample_rate: float = 1.0,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        # Whether a head can be sharded is the head's own declaration (heads/base.py).
        shardable = getattr(head, "shardable", None)
        if shardable is None:
            raise TypeError(
                f"PartialFC wraps a MarginHead or Softmax, got {type(head).__name__}: a head "
                "must take labels -1 (another rank's class) and share_target, and declare "
                "`shardable`, to be sharded"
            )
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
        if not shardable and (world_size > 1 or sample_rate < 1.0):
            raise ValueError(
                f"{type(head).__name__} cannot run under Partial FC with world_size > 1 or "
                "sample_rate < 1: the head declares shardable = False (it needs the logits of "
                "every class, which no shard has); use another head or criterion=margin"
            )
        self.class_start, self.num_local = class_shard(num_classes, rank, world_size)
        if getattr(head, "num_classes", self.num_local) != self.num_local:
            raise ValueError(
                f"head built for {head.num_classes} classes, but rank {rank} of {world_size} owns "
                f"{self.num_local} of {num_classes}: build it with num_classes={self.num_local}"
            )
        rows = head.weight.shape[0]
        if head.weight.shape[1] != embedding_size or rows % self.num_local:
            raise ValueError(
                f"head.weight has shape {tuple(head.weight.shape)}, expected "
                f"({self.num_local}·k, {embedding_size})"
            )
        self.head = head
        self.num_classes = num_classes
        self.embedding_size = embedding_size
        self.sample_rate = float(sample_rate)
        self.rank = rank
        self.world_size = world_size
        self.seed = int(seed)
        self.group = group
        self.num_sample = max(1, int(self.sample_rate * self.num_local))
        self.step = 0
        self.last_index: Tensor | None = None

    @classmethod
    def build(
        cls,
        make_head: Callable[[int], nn.Module],
        num_classes: int,
        embedding_size: int,
        sample_rate: float = 1.0,
        **kwargs: object,
    ) -> PartialFC:
        """Build the shard's head with ``make_head(local_classes)`` and wrap it.

        Example: ``PartialFC.build(lambda n: instantiate(cfg.head, embedding_size=512,
        num_classes=n), C, 512, 0.2, rank=env.rank, world_size=env.world_size)``.

        Args:
            make_head: Returns a head for the given number of classes.
            num_classes: Total number of classes ``C``.
            embedding_size: Embedding dimension ``D``.
            sample_rate: As in the constructor.
            **kwargs: ``rank``, ``world_size``, ``seed``, ``group``.

        Returns:
            The wrapped head.
        """
        rank, world_size = int(kwargs.get("rank", 0)), int(kwargs.get("world_size", 1))
        _, local = class_shard(num_classes, rank, world_size)
        return cls(make_head(local), num_classes, embedding_size, sample_rate, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, classes {self.class_start}…"
            f"{self.class_start + self.num_local - 1} on rank {self.rank} of {self.world_size}, "
            f"sample_rate={self.sample_rate}"
        )

    # The sampling position is not a tensor: kept as extra state so a resumed run draws the
    # same negatives at the same step.
    def get_extra_state(self) -> dict[str, int]:
        return {"step": self.step}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])

    # --- pieces --------------------------------------------------------------------------

    def gather(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The global batch, in rank order.

        Args:
            embeddings: This rank's embeddings, ``(B_local, D)``.
            labels: This rank's labels, ``(B_local,)``, int64, in ``[0, C)``.

        Returns:
            ``(B_global, D)`` embeddings (differentiable, see the module docstring for the
            gradient's scale) and ``(B_global,)`` labels. The ranks may have different
            ``B_local`` (the trainer drops unreadable images).
        """
        everything, labels, _ = gather_batch(embeddings, labels, self.rank, self.world_size,
                                             self.group, grad_scale=self.world_size)  # fmt: skip
        return everything, labels

    def sample(self, labels: Tensor) -> Tensor:
        """The local classes used this step: every positive, then random negatives.

        Args:
            labels: Global batch's labels on this shard, ``(B_global,)``, ``-1`` elsewhere.

        Returns:
            Sorted local class indices, ``(max(num_sample, positives),)``, int64.
        """
        positives = torch.unique(labels[labels >= 0])
        count = max(self.num_sample, positives.numel())
        digest = hashlib.blake2b(f"{self.seed}/{self.step}/{self.rank}".encode(), digest_size=8)
        generator = torch.Generator(device=labels.device)
        generator.manual_seed(int.from_bytes(digest.digest(), "little") >> 1)
        score = torch.rand(self.num_local, generator=generator, device=labels.device)
        score[positives] = 2.0  # above any uniform draw: positives always win the top-k
        return torch.topk(score, count, sorted=False).indices.sort().values

    def _share_target(self, known: Tensor) -> Tensor:
        # Each row's target cosine is known on exactly one rank and is 0 on the others.
        total = known.clone()
        dist.all_reduce(total, group=self.group)
        return total

    def logits(self, embeddings: Tensor, labels: Tensor, index: Tensor | None = None) -> Tensor:
        """This shard's logits of the global batch, the margin applied by the owning rank.

        Args:
            embeddings: Global batch, ``(B_global, D)``.
            labels: Local class of each sample, ``(B_global,)``, ``-1`` for other shards;
                positions in ``index`` when it is given.
            index: Sampled local classes, sorted, ``(n,)``; ``None`` for all of them.

        Returns:
            ``(B_global, n)`` logits (``n = num_local`` without ``index``), float32 or
            float64.
        """
        kwargs = {"share_target": self._share_target} if self.world_size > 1 else {}
        if index is None:
            return self.head(embeddings, labels, **kwargs)
        params = {}
        for name in ("weight", "bias"):  # the head contract: weight (C·k, D), bias (C,)
            param = getattr(self.head, name, None)
            if isinstance(param, nn.Parameter):
                rows = class_rows(index, param.shape[0] // self.num_local)
                params[name] = param[rows]  # autograd scatters the gradient into these rows
        with num_classes_as(self.head, index.numel()):
            return functional_call(self.head, params, (embeddings, labels), kwargs, strict=False)

    # --- forward -------------------------------------------------------------------------

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The loss of the global batch (the same value on every rank).

        Args:
            embeddings: This rank's un-normalised embeddings, ``(B_local, D)``.
            labels: This rank's class indices, ``(B_local,)``, int64, in ``[0, C)``.

        Returns:
            0-d tensor: the mean cross-entropy over the global batch, plus the head's
            ``regularizer`` of the local embeddings if it has one. float32 (float64 for
            float64 embeddings or centres).
        """
        everything, every_label = self.gather(embeddings, labels)
        local = every_label.long() - self.class_start
        mine = (local >= 0) & (local < self.num_local)
        local = torch.where(mine, local, -1)
        index = None
        if self.training and self.num_sample < self.num_local:
            index = self.sample(local)
            # searchsorted finds each positive's position in the sorted sample.
            position = torch.searchsorted(index, local.clamp(min=0))
            local = torch.where(mine, position, -1)
        self.last_index = index
        # The whole head in float32 at least, as the margin heads compute anyway: gathered
        # under autocast the embeddings may be bf16 (half the bytes to send), which Softmax's
        # plain matmul with its float32 weight would refuse outside autocast.
        dtype = torch.promote_types(everything.dtype, self.head.weight.dtype)
        everything = everything.to(torch.promote_types(dtype, torch.float32))
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            logits = self.logits(everything, local, index)
            loss = ShardedCrossEntropy.apply(logits, local, self.world_size, self.group)
        if self.training:
            self.step += 1
        return add_regularizer(self.head, embeddings, loss)

    # --- what the trainer asks of a criterion (facerec.criteria.base.Criterion) ----------

    def clip_grad_norm_(self, replicated: Iterable[nn.Parameter], max_norm: float | None) -> Tensor:
        """One global norm: the model's replicated gradients plus every rank's shard."""
        return clip_grad_norm_(replicated, self.parameters(), max_norm, self.group)

    def data_parallel(self, recognizer: nn.Module, device_ids: Sequence[Any] | None) -> nn.Module:
        """DDP around the model only: the centres' gradients are exact per shard and must not
        be averaged over the ranks (see the module docstring)."""
        model = DistributedDataParallel(recognizer.model, device_ids=device_ids)
        return type(recognizer)(model, self)

    def broadcast_buffers(self) -> None:
        """Nothing: every shard keeps its own state (the stateful heads' buffers are computed
        from the gathered global batch, hence equal on every rank already)."""

    def shard_path(self, folder: Path, tag: str) -> Path:
        """This rank's shard (centres + optimizer state) of checkpoint ``folder/<tag>.pt``."""
        return folder / "shards" / f"rank{self.rank:05d}-{tag}.pt"

    def checkpoint_entries(
        self, optimizer: torch.optim.Optimizer, folder: Path, tag: str, step: int, keep: int
    ) -> dict[str, Any]:
        """Every rank writes its shard file; the main checkpoint gets nothing of the head.

        The optimizer state goes with the shard: its momentum of the centres is per rank (the
        model's part is the same everywhere, so rank 0's main file would only duplicate it).
        """
        shard = {"head": self.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                 "world_size": self.world_size}  # fmt: skip
        path = checkpoint.save(shard, self.shard_path(folder, tag))
        if tag.startswith("step_"):
            checkpoint.prune(path.parent, f"rank{self.rank:05d}-{checkpoint.STEP_GLOB}", keep)
        distributed.barrier()  # every shard is on disk before rank 0 writes the main file
        return {}

    def restore(self, ckpt: dict[str, Any], path: Path, optimizer: torch.optim.Optimizer) -> None:
        """Load this rank's shard and optimizer state saved beside checkpoint ``path``.

        Raises:
            ValueError: the shard is missing, or was written at another step or world size.
        """
        path = path.resolve()  # last.pt is a link: the shards sit beside its target
        shard = self.shard_path(path.parent, path.stem)
        if not shard.is_file():
            raise ValueError(
                f"checkpoint {path} has no Partial FC shard for rank {self.rank} ({shard}):"
                " resume with the number of processes that wrote it"
            )
        state = checkpoint.load(shard, required=("head", "optimizer", "world_size"))
        if state["world_size"] != self.world_size or state["step"] != ckpt["step"]:
            raise ValueError(
                f"{shard} was written at step {state['step']} by {state['world_size']}"
                f" processes; this run resumes step {ckpt['step']} on {self.world_size}"
            )
        checkpoint.load_module_state(self, state, "head", shard)
        optimizer.load_state_dict(state["optimizer"])
