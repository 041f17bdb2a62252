"""Align one decoded image: find its faces, warp the chosen one, or fall back when none is found."""

from __future__ import annotations

import cv2
import numpy as np

from facerec.align.detect import Face, FaceDetector
from facerec.align.options import AlignOptions
from facerec.align.outcomes import ALIGNED, CENTERED, NO_FACE, WHOLE
from facerec.align.search import search
from facerec.align.transform import warp_face

__all__ = ["align_image", "center_crop", "crop_faces", "detection_image", "fallback",
           "find_faces"]  # fmt: skip


def center_crop(image: np.ndarray, options: AlignOptions, fraction: float | None = None
                ) -> np.ndarray:  # fmt: skip
    """The fallback: a centred square of ``fraction`` (default ``fallback_crop``) x the shorter
    side, resized to ``(size, size, 3)``."""
    h, w = image.shape[:2]
    side = max(1, round(min(h, w) * (fraction or options.fallback_crop)))
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[top : top + side, left : left + side]
    return cv2.resize(crop, (options.size, options.size), interpolation=cv2.INTER_AREA)


def detection_image(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``image`` shrunk so its longer side is at most ``max_side``, and the factor used."""
    scale = min(1.0, max_side / max(image.shape[:2]))
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def find_faces(
    image: np.ndarray, detector: FaceDetector, options: AlignOptions
) -> tuple[list[Face], float, str | None]:
    """Faces of one decoded image: the plain detection, then ``options.search`` if it missed.

    Returns:
        The faces (in the detection image's pixels; the one to align first), that image's
        scale, and how they were found (``"detect"`` or a search step's name; None: not found).
    """
    small, scale = detection_image(image, options.max_side)
    faces, how = search(small, detector, options.search, detector.detect([small])[0],
                        options.select)  # fmt: skip
    return faces, scale, how


def align_image(
    image: np.ndarray, detector: FaceDetector, options: AlignOptions
) -> tuple[np.ndarray | None, str, int]:
    """Align one decoded image: ``(crop uint8 (size, size, 3) or None, outcome, faces found)``."""
    faces, scale, _ = find_faces(image, detector, options)
    crop, outcome, count, _ = crop_faces(image, faces, scale, options, detector)
    return crop, outcome, count


# on_missing -> what a file without a face becomes (``auto`` picks one of the first two).
_FALLBACK = {
    "whole": (lambda image, options: center_crop(image, options, 1.0), WHOLE),
    "center": (center_crop, CENTERED),
    "skip": (lambda image, options: None, NO_FACE),
}


def fallback(
    image: np.ndarray, detector: FaceDetector, options: AlignOptions
) -> tuple[np.ndarray | None, str, bool]:
    """What an image without a face found becomes: ``(crop or None, outcome, looks like a
    face crop)``. ``"whole"`` is the centred square of the full shorter side, resized."""
    looks_cropped = bool(detector.crop_scores([image])[0] >= options.crop_score)
    choice = options.on_missing
    if choice == "auto":
        choice = "whole" if looks_cropped else "center"
    make, outcome = _FALLBACK[choice]
    return make(image, options), outcome, looks_cropped


def crop_faces(
    image: np.ndarray, faces: list, scale: float, options: AlignOptions, detector: FaceDetector
) -> tuple[np.ndarray | None, str, int, bool]:
    if not faces:
        crop, outcome, looks_cropped = fallback(image, detector, options)
        return crop, outcome, 0, looks_cropped
    crop, _ = warp_face(image, faces[0].landmarks / scale, options.size)  # the chosen face
    return crop, ALIGNED, len(faces), False
