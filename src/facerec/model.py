"""The face model: backbone followed by the embedding layer."""

import torch
from torch import nn

__all__ = ["FaceModel"]


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
        """``(B, 3, H, W) -> (B, D)``."""
        return self.embedding(self.backbone(images))
