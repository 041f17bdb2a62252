"""Shared machinery of the cosine-based classification heads.

Every margin head in this package computes its logits the same way:

    normalise embeddings and class centres -> cosine matrix -> gather the target-class
    cosine and clamp it to [-1, 1] -> modify it (the margin) -> scale
    -> scatter the modified target back into the logits

:class:`MarginHead` implements that pipeline once (template method); a concrete head overrides
one hook, or two where its paper also changes the non-target logits:

* :meth:`MarginHead.target_logit` -- the margin on the target-class cosine (CosFace, ArcFace, ...).
* :meth:`MarginHead.logits` -- a map applied to every cosine before the target is replaced
  (AirFace's linear-in-angle logits).
* :meth:`MarginHead.scale` -- the factor the logits are multiplied by (SphereFace's ``‖x‖``,
  AdaCos's adaptive ``s``).
* :meth:`MarginHead.update_state` -- called once per forward in ``train()`` mode only, for heads
  whose state evolves during training (SphereFace's iteration counter, AdaCos's ``s``,
  CurricularFace's ``t``, AdaFace's feature-norm statistics).
* :meth:`MarginHead.apply_margin` -- the wider form of :meth:`MarginHead.target_logit`, for
  margins that need more than the target cosine: the feature norm (AdaFace, MagFace) or a
  change of the non-target logits that depends on the target (CurricularFace's hard
  negatives). Its default calls :meth:`MarginHead.target_logit`.

Optional extra loss term (the ``regularizer`` contract). A head whose paper adds a term to the
cross-entropy that is not a logit (MagFace's ``λ_g · g(‖x‖)``) defines a method
``regularizer(self, embeddings: Tensor) -> Tensor``:

* ``embeddings`` is the same un-normalised ``(B, D)`` tensor that was passed to ``forward`` in
  this step, not detached, so the term's gradient reaches the backbone;
* it returns a 0-d tensor, float32 (float64 for float64 inputs), computed with autocast
  disabled: the batch *mean* of the per-sample term, already multiplied by the head's own
  weight (MagFace's ``lambda_g``), so the trainer adds it unweighted;
* the training loss is ``F.cross_entropy(head(x, y), y) + head.regularizer(x)``; heads without
  such a term do not define the method, so the trainer looks it up with
  ``getattr(head, "regularizer", None)``;
* it reads and updates no state, and behaves the same in ``train()`` and ``eval()`` mode.

Sharded centres (:class:`facerec.criteria.partial_fc.PartialFC`). A head may hold only a shard of
the classes; then ``forward(embeddings, labels, share_target=...)`` takes ``-1`` for the samples
whose class lives on another shard: their row gets no margin (the owner of the class applies
it), and ``share_target`` supplies their target cosine, without gradient, for the state updates
and margins that read every row's target (CurricularFace's ``t`` and hard negatives). Whether
a head can be sharded at all is its class attribute ``shardable`` (True for every
:class:`MarginHead` unless a subclass says otherwise, as AdaCos does), which Partial FC reads.

The safe maths the hooks use (``sin θ`` and ``θ`` from ``cos θ`` with finite derivatives at ±1,
the fused normalise-and-multiply of the cosine) is in :mod:`facerec.heads.functional`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facerec.heads.functional import normalized_linear

__all__ = ["MarginHead"]


class MarginHead(nn.Module):
    """Base class of the cosine heads: normalise, cosine, margin on the target, scale.

    Subclasses override the hooks described in the module docstring; the default hooks give
    NormFace, ``s · cos θ``.

    All arithmetic runs with autocast disabled, in float32 (float64 if the inputs or the
    weights are float64): cos θ close to ±1 is exactly where the margins are evaluated and where
    half precision has no resolution left (bf16 spacing just below 1 is 0.004, i.e. θ ≈ 0.09).

    Args:
        embedding_size: Dimension ``D`` of the embeddings.
        num_classes: Number of classes ``C``.
        s: Scale applied to the (modified) cosines; ``None`` for heads whose scale is not a
            fixed hyper-parameter (they override :meth:`scale`).

    Attributes:
        weight: Class centres, shape ``(C, D)``; normalised on the fly, so their norm is free.
        shardable: Whether the head may hold only a shard of the classes (Partial FC): its
            logits, margin and state need nothing but its own columns and the shared target
            cosines (see :meth:`forward`). A class attribute; True unless a subclass says not.
    """

    shardable: bool = True

    def __init__(self, embedding_size: int, num_classes: int, s: float | None = 30.0) -> None:
        super().__init__()
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        if s is not None:
            self.s = float(s)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise the class centres (normal, std 0.01, as insightface)."""
        # Only the direction enters the logits, but the norm sets the effective step on it
        # (the gradient w.r.t. w scales as 1/‖w‖): insightface's init keeps its learning-rate
        # and weight-decay settings transferable.
        nn.init.normal_(self.weight, std=0.01)

    def extra_repr(self) -> str:
        return f"embedding_size={self.embedding_size}, num_classes={self.num_classes}"

    # --- hooks -------------------------------------------------------------------------------

    def logits(self, cos: Tensor) -> Tensor:
        """Map every cosine to its unscaled logit (identity by default).

        Args:
            cos: Cosines, shape ``(B, C)``, *not* clamped (a few ulp outside [-1, 1] are
                possible): clamp before any function defined only on [-1, 1].

        Returns:
            Unscaled logits, shape ``(B, C)``; the target column is overwritten afterwards.
        """
        return cos

    def target_logit(self, cos_target: Tensor) -> Tensor:
        """Apply the margin to the target-class cosine (identity by default).

        Args:
            cos_target: Clamped cosine between each embedding and its own class centre,
                shape ``(B, 1)``.

        Returns:
            Unscaled target logit, shape ``(B, 1)``.
        """
        return cos_target

    def scale(self, embeddings: Tensor) -> Tensor | float:
        """Factor multiplying the unscaled logits (the constant ``s`` by default).

        Args:
            embeddings: Un-normalised embeddings in the compute dtype, shape ``(B, D)``.

        Returns:
            A Python float, a 0-d tensor, or a per-sample tensor of shape ``(B, 1)``.
        """
        return self.s

    def update_state(
        self, cos: Tensor, cos_target: Tensor, index: Tensor, embeddings: Tensor
    ) -> None:
        """Advance training-time state; called under ``no_grad`` in ``train()`` mode only.

        Called once per forward, before the other hooks, so a step's logits use the state
        of that step (e.g. SphereFace's λ at iteration ``t`` for the ``t``-th step).

        Args:
            cos: Cosines, shape ``(B, C)``, not clamped.
            cos_target: Target-class cosines, clamped, shape ``(B, 1)``.
            index: Labels as a column, shape ``(B, 1)``, int64. On a shard (``share_target``
                given to :meth:`forward`) the rows of other shards' classes hold 0 here, not
                their class: a head whose state needs every row's target *column* (AdaCos)
                declares ``shardable = False``.
            embeddings: Un-normalised embeddings in the compute dtype, shape ``(B, D)`` (every
                row, also on a shard), for state read from the features themselves (AdaFace's
                norm statistics).
        """

    def apply_margin(
        self, logits: Tensor, cos_target: Tensor, embeddings: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Apply the margin: modified target logit and, if a paper changes them, other logits.

        The default applies :meth:`target_logit` and leaves the other logits alone. Override
        this wider hook only when the margin needs more than the target cosine: the feature
        norm (AdaFace, MagFace) or non-target logits that depend on the target
        (CurricularFace).

        Args:
            logits: Unscaled logits from :meth:`logits`, shape ``(B, C)`` (the cosines
                themselves, not clamped, for heads that keep the default :meth:`logits`).
                Autograd may have saved it: return a new tensor rather than modifying it.
            cos_target: Clamped target-class cosines, shape ``(B, 1)``.
            embeddings: Un-normalised embeddings in the compute dtype, shape ``(B, D)``, with
                their gradient (detach them where the paper does).

        Returns:
            ``(logits, target)``: unscaled logits ``(B, C)``, whose target column is then
            overwritten, and the unscaled target logit ``(B, 1)``.
        """
        return logits, self.target_logit(cos_target)

    # --- template ----------------------------------------------------------------------------

    def cosine(self, embeddings: Tensor) -> Tensor:
        """Cosine between each embedding and each class centre (not clamped).

        Args:
            embeddings: Shape ``(B, D)``, any float dtype.

        Returns:
            ``cos θ``, shape ``(B, C)``, in the compute dtype (float32, or float64 if the
            embeddings or the weights are float64). Rounding may put it a few ulp outside
            ``[-1, 1]``.
        """
        dtype = torch.promote_types(
            torch.promote_types(embeddings.dtype, self.weight.dtype), torch.float32
        )
        # F.normalize divides by max(‖x‖, eps): a zero embedding gives a zero row, not NaN.
        x = F.normalize(embeddings.to(dtype), dim=1)
        # Dividing the (B, C) product by ‖w_j‖ instead of normalising the (C, D) weight: the
        # same cosine, but the backward of a (C, D) normalisation costs several passes over
        # the largest tensor of the head (C·D = 5.4M for CASIA at D = 512), which made the
        # head 1.35x a plain linear layer on CPU. The division and its backward are one
        # autograd Function (normalized_linear): autograd's own backward of the division
        # still made the heads 1.15-1.26x.
        return normalized_linear(x, self.weight.to(dtype))

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        share_target: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """Compute the logits for cross-entropy.

        Args:
            embeddings: Un-normalised embeddings, shape ``(B, D)``, float.
            labels: Class indices, shape ``(B,)``, int64. With ``share_target``, ``-1`` marks a
                sample whose class is not among this head's centres (another rank's shard under
                Partial FC): its row keeps plain non-target logits, no margin.
            share_target: Only for a head holding a shard of the classes. Called once with the
                clamped target cosines this shard knows, shape ``(B, 1)``, detached, 0 on the
                ``-1`` rows; returns every row's target cosine, same shape (Partial FC: a sum
                over the ranks, each row being known to exactly one). The ``-1`` rows use it
                wherever :meth:`update_state` and :meth:`apply_margin` read the target cosine.

        Returns:
            Logits, shape ``(B, C)``, float32 (float64 for float64 inputs/weights).
        """
        # The margin must not run in half precision even when the caller trains under autocast.
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cos = self.cosine(embeddings)
            index = labels.reshape(-1, 1)
            if share_target is not None:
                known = index >= 0
                index = index.clamp(min=0)  # any column: the -1 rows' values are replaced
            # Clamped here, on B values, rather than on the whole (B, C) matrix: only the
            # target goes through acos / sqrt(1 - cos²) by default, and a full clamp costs a
            # (B, C) pass forward and a masked one backward.
            cos_target = cos.gather(1, index).clamp(-1.0, 1.0)
            if share_target is not None:
                shared = share_target(torch.where(known, cos_target.detach(), 0.0))
                cos_target = torch.where(known, cos_target, shared)
            embeddings = embeddings.to(cos.dtype)
            if self.training:
                with torch.no_grad():
                    self.update_state(cos, cos_target, index, embeddings)
            scale = self.scale(embeddings)
            logits, target = self.apply_margin(self.logits(cos), cos_target, embeddings)
            if share_target is not None:
                # A -1 row has no target column on this shard: the scatter below writes its
                # own (unscaled) logit back into the column it points at.
                target = torch.where(known, target, logits.gather(1, index))
            # In place: `scale * logits` is a fresh product autograd has not saved, and an
            # out-of-place scatter would add one more (B, C) copy.
            return (scale * logits).scatter_(1, index, scale * target)
