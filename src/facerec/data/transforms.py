"""Albumentations pipelines; image decoding is :mod:`facerec.data.decode` (re-exported here).

Images travel as uint8 ``(3, H, W)`` tensors and are normalised to [-1, 1] on the training
device (:func:`normalize`): four times less host-to-device traffic than float32, and the
cached (preloaded) images stay small.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations phones home at import

import albumentations as A
import cv2
import numpy as np
import torch

# The guarded decoder, importable from here as before (the tools and tests read images so).
from facerec.data.decode import decode_image, read_image

__all__ = [
    "augmentation",
    "decode_image",
    "geometry",
    "normalize",
    "read_image",
    "seed_augmentation",
    "to_tensor",
]

# DataLoader workers are already one process per core; OpenCV's own thread pool on top of
# them only oversubscribes the CPU.
cv2.setNumThreads(0)


def geometry(image_size: int = 112, center_crop: int | None = None) -> A.Compose:
    """Deterministic part: optional centre crop (padding images that are too small), resize.

    Deterministic so that its output can be cached (``data.preload``) and shared by
    training and verification.
    """
    steps: list[A.BasicTransform] = []
    if center_crop:
        steps += [
            A.PadIfNeeded(center_crop, center_crop, border_mode=cv2.BORDER_CONSTANT),
            A.CenterCrop(center_crop, center_crop),
        ]
    steps.append(A.Resize(image_size, image_size, interpolation=cv2.INTER_AREA))
    return A.Compose(steps)


def augmentation(hflip: bool = True, extra: A.BaseCompose | None = None) -> A.Compose:
    """Random part, applied to every training sample after :func:`geometry`: the flip, then
    ``extra`` (the ``augment=...`` config group, e.g. scale jitter, colour, occlusion).

    One flat Compose, so that the per-sample seed set on it reaches every transform.
    """
    steps: list[A.BasicTransform] = [A.HorizontalFlip(p=0.5)] if hflip else []
    if extra is not None:
        steps += list(extra.transforms)
    return A.Compose(steps)


def seed_augmentation(steps: A.BaseCompose, seed: int) -> None:
    """Fix one sample's random transforms from the sampler's ``seed``, each transform from
    its own stream.

    albumentations 2 gives every transform of a Compose the Compose's seed, so their first
    draws (whether to apply) are equal: a ToGray of p 0.1 would only ever come with a flip
    of p 0.5, and the per-step probabilities of an ``augment`` config would not hold. The
    first transform (the flip) keeps ``seed`` itself, so the flips are those of before and
    of device decoding (:mod:`facerec.data.device_decode`).
    """
    steps.set_random_seed(seed)
    for i, transform in enumerate(steps.transforms[1:], start=1):
        transform.set_random_seed(int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 ``(H, W, 3)`` -> uint8 tensor ``(3, H, W)``."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> float32 in [-1, 1], as every face backbone expects."""
    return images.float().sub_(127.5).div_(127.5)
