"""Classification heads: embeddings ``(B, D)`` + labels ``(B,)`` -> logits ``(B, C)``.

Each head is built by Hydra from ``configs/head/<name>.yaml`` with
``instantiate(cfg.head, embedding_size=D, num_classes=C)``; the class centres are
``head.weight`` ``(C, D)`` (``(C·k, D)`` for :class:`SubcenterArcFace`). A head may define
``regularizer(embeddings)``, an extra loss term (MagFace); see :mod:`facerec.heads.base`. Each
head declares ``shardable`` (whether Partial FC may split its classes across ranks). The safe
maths the margins share is in :mod:`facerec.heads.functional`.
"""

from facerec.heads.adacos import AdaCos
from facerec.heads.adaface import AdaFace
from facerec.heads.airface import AirFace
from facerec.heads.arcface import ArcFace
from facerec.heads.base import MarginHead
from facerec.heads.combined import CombinedMargin
from facerec.heads.cosface import CosFace
from facerec.heads.curricularface import CurricularFace
from facerec.heads.magface import MagFace
from facerec.heads.normface import NormFace
from facerec.heads.softmax import Softmax
from facerec.heads.sphereface import SphereFace
from facerec.heads.subcenter_arcface import SubcenterArcFace

__all__ = [
    "AdaCos",
    "AdaFace",
    "AirFace",
    "ArcFace",
    "CombinedMargin",
    "CosFace",
    "CurricularFace",
    "MagFace",
    "MarginHead",
    "NormFace",
    "Softmax",
    "SphereFace",
    "SubcenterArcFace",
]
