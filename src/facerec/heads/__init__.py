"""Classification heads: embeddings ``(B, D)`` + labels ``(B,)`` -> logits ``(B, C)``.

Each head is built by Hydra from ``configs/head/<name>.yaml`` with
``instantiate(cfg.head, embedding_size=D, num_classes=C)``; the class centres are
``head.weight`` ``(C, D)``.
"""

from facerec.heads.adacos import AdaCos
from facerec.heads.airface import AirFace
from facerec.heads.arcface import ArcFace
from facerec.heads.base import MarginHead
from facerec.heads.combined import CombinedMargin
from facerec.heads.cosface import CosFace
from facerec.heads.normface import NormFace
from facerec.heads.softmax import Softmax
from facerec.heads.sphereface import SphereFace

__all__ = [
    "AdaCos",
    "AirFace",
    "ArcFace",
    "CombinedMargin",
    "CosFace",
    "MarginHead",
    "NormFace",
    "Softmax",
    "SphereFace",
]
