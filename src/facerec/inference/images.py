"""Images as a model wants them: read, centre-cropped and resized per its :class:`Preprocessing`.

The normalisation (``(uint8 - 127.5) / 127.5``) happens inside the model
(:meth:`facerec.model.FaceModel.preprocess`), so every function here gives uint8 tensors.
Alignment of raw photos is :mod:`facerec.inference.alignment`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facerec.data.decode import read_image
from facerec.data.folder import IMAGE_EXTENSIONS
from facerec.data.transforms import geometry, to_tensor
from facerec.inference.preprocessing import Preprocessing
from facerec.inference.spec import ModelSpec, read_spec

__all__ = ["IMAGE_EXTENSIONS", "PREPROCESSING", "center_crop", "image_size", "list_images",
           "load_images", "preparation", "prepare_arrays", "preprocessing"]  # fmt: skip

PREPROCESSING = (
    "RGB float32 (B, 3, H, W) = (uint8 - 127.5) / 127.5 of an aligned face, H = W = the "
    "training image size (112), after the training centre crop if any"
)


Source = ModelSpec | Preprocessing | Mapping[str, Any]


def preprocessing(source: Source) -> Preprocessing:
    """The :class:`Preprocessing` of a spec, or of a loaded config (read by the one parser,
    :func:`facerec.inference.spec.read_spec`)."""
    if isinstance(source, ModelSpec):
        return source.preprocessing
    if isinstance(source, Preprocessing):
        return source
    return read_spec(
        source, "the model's config", "a model config", architecture=False
    ).preprocessing


def image_size(source: Source) -> int:
    """The side of the square images the model was trained on (``data.image_size``)."""
    return preprocessing(source).image_size


def center_crop(source: Source, override: int | None = None, aligned: bool = False) -> int | None:
    """The centre crop to use: ``override`` if given (0 = none), else none for ``aligned``
    images (already the face), else the training one."""
    return preprocessing(source).crop(override, aligned)


def preparation(source: Source) -> dict[str, Any]:
    """How a model's training images were made.

    Returns:
        ``{"method": "aligned", "align": {...options}}`` (``data.align`` set: MTCNN + the
        ArcFace template) or ``{"method": "center_crop", "center_crop": N or None}``.
    """
    prep = preprocessing(source)
    if prep.alignment is not None:
        return {"method": "aligned", "align": prep.alignment.as_dict()}
    return {"method": "center_crop", "center_crop": prep.center_crop}


def load_images(
    paths: Sequence[str | Path], size: int = 112, crop: int | None = None
) -> torch.Tensor:
    """Decode, centre-crop and resize image files as verification does.

    Args:
        paths: image files.
        size: side of the square output images.
        crop: side of the centre crop taken before resizing (None: none).

    Returns:
        uint8 ``(N, 3, size, size)``.

    Raises:
        OSError: naming a file that is missing or not an image.
    """
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"image not found: {p}")
    return prepare_arrays((read_image(p) for p in paths), size, crop)


def prepare_arrays(
    images: Iterable[np.ndarray], size: int = 112, crop: int | None = None
) -> torch.Tensor:
    """Centre-crop and resize decoded images as :func:`load_images` does.

    Args:
        images: RGB uint8 ``(H, W, 3)`` arrays (sizes may differ).
        size: side of the square output images.
        crop: side of the centre crop taken before resizing (None: none).

    Returns:
        uint8 ``(N, 3, size, size)``.
    """
    transform = geometry(size, crop)
    return torch.stack([to_tensor(transform(image=image)["image"]) for image in images])


def list_images(folder: str | Path) -> list[Path]:
    """Every image file under ``folder`` (recursively), sorted by path.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ValueError: it holds no image (extensions :data:`IMAGE_EXTENSIONS`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found (or not a folder): {folder}")
    paths = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )
    if not paths:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) found under it")
    return paths
