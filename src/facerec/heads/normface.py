"""NormFace: softmax on scaled cosines (Wang et al., arXiv 1704.06369)."""

from __future__ import annotations

from facerec.heads.base import MarginHead

__all__ = ["NormFace"]


class NormFace(MarginHead):
    """``s · cos θ_j`` for every class, no margin: the base pipeline with its default hooks.

    Args:
        embedding_size: Dimension ``D`` of the embeddings.
        num_classes: Number of classes ``C``.
        s: Scale. Normalised logits lie in ``[-1, 1]``, which bounds the softmax loss far above
            zero (NormFace, Prop. 2); ``s`` lifts that bound.
    """

    def __init__(self, embedding_size: int, num_classes: int, s: float = 30.0) -> None:
        super().__init__(embedding_size, num_classes, s=s)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s={self.s}"
