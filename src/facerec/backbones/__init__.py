"""Backbones: images ``(B, 3, 112, 112)`` -> features ``(B, *feature_shape)``.

Each backbone exposes ``feature_shape``, the per-sample shape of its output, which sizes the
embedding layer. Select one with ``configs/backbone/<name>.yaml`` (``_target_`` + arguments).
``TimmBackbone`` lives in :mod:`facerec.backbones.timm` and is not imported here, so that using
the built-in backbones does not import timm.
"""

from facerec.backbones.iresnet import IResNet, iresnet18, iresnet34, iresnet50, iresnet100
from facerec.backbones.mobilefacenet import MobileFaceNet

__all__ = ["IResNet", "MobileFaceNet", "iresnet18", "iresnet34", "iresnet50", "iresnet100"]
