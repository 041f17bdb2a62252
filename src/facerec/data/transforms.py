"""Albumentations pipelines and image decoding.

Images travel as uint8 ``(3, H, W)`` tensors and are normalised to [-1, 1] on the training
device (:func:`normalize`): four times less host-to-device traffic than float32, and the
cached (preloaded) images stay small.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations phones home at import

import albumentations as A
import cv2
import numpy as np
import torch

# DataLoader workers are already one process per core; OpenCV's own thread pool on top of
# them only oversubscribes the CPU.
cv2.setNumThreads(0)


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB uint8 ``(H, W, 3)``; greyscale/CMYK/PNG become RGB.

    Raises:
        OSError: naming the file when it is missing, truncated or not an image.
    """
    data = np.fromfile(str(path), dtype=np.uint8)  # np.fromfile: non-ASCII paths work too
    return decode_image(data, f"image {path}")


# OpenCV >= 4.10 decodes straight to RGB (libjpeg-turbo writes RGB), saving a cvtColor; on this
# CPU that made cv2.imdecode the fastest decoder of 112x112 JPEGs, ahead of
# torchvision.io.decode_jpeg (see docs/performance.md).
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)


def decode_rgb(data: np.ndarray) -> np.ndarray | None:
    """Decode encoded image bytes to RGB uint8 ``(H, W, 3)``; None when they do not decode.

    Args:
        data: uint8 ``(L,)`` file contents (a memory-map slice is fine: nothing is copied).
    """
    if data.size == 0:
        return None
    if _IMREAD_RGB is not None:
        return cv2.imdecode(data, _IMREAD_RGB)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_image(data: np.ndarray | bytes, what: str = "image") -> np.ndarray:
    """:func:`decode_rgb`, raising when the bytes do not decode: RGB uint8 ``(H, W, 3)``.

    The one place that turns "does not decode" into an error, so every reader (image files,
    packs, RecordIO, ``.bin`` verification packs, the device decoder's CPU fallback) names
    the broken sample the same way.

    Args:
        data: uint8 ``(L,)`` file contents, or the same as ``bytes``.
        what: how to name the image in the error, e.g. ``"lfw.bin: image 17"``.

    Raises:
        OSError: naming ``what``: the bytes are not a decodable image.
    """
    if not isinstance(data, np.ndarray):
        data = np.frombuffer(data, np.uint8)
    image = decode_rgb(data)
    if image is None:
        raise OSError(
            f"{what}: cannot decode ({data.size} bytes; corrupt, truncated or not an image)"
        )
    return image


def decodes(data: np.ndarray) -> bool:
    """Whether encoded image bytes uint8 ``(L,)`` decode, checked cheaply: a JPEG decoded at
    1/8 scale in grey still parses its whole stream, for a fraction of a full decode."""
    return data.size > 0 and cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_8) is not None


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


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 ``(H, W, 3)`` -> uint8 tensor ``(3, H, W)``."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> float32 in [-1, 1], as every face backbone expects."""
    return images.float().sub_(127.5).div_(127.5)
