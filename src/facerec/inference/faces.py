"""Every face in a photo, as insightface's ``FaceAnalysis.get`` gives them: box, landmarks,
score and the aligned crop (the embedding is added by :meth:`FaceEmbedder.faces`).

Detection is the ``align`` extra's MTCNN (:class:`facerec.align.detect.FaceDetector`), the crop
the ArcFace template warp (:func:`facerec.align.transform.warp_face`): the same two steps that
made an aligned model's training images, applied here to every face rather than the chosen one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from facerec.messages import first_line

__all__ = ["DetectedFace", "detect_faces", "detector"]


@dataclass(frozen=True)
class DetectedFace:
    """One face of a photo.

    Attributes:
        box: float64 ``(4,)`` x1, y1, x2, y2 in the photo's pixels.
        landmarks: float64 ``(5, 2)`` x, y of left eye, right eye, nose, left and right mouth
            corner, in the photo's pixels.
        score: detector confidence in [0, 1].
        crop: the aligned face, uint8 ``(S, S, 3)`` RGB (S = the alignment size, 112).
        embedding: float32 ``(D,)`` unit vector, flip-fused (None until embedded).
    """

    box: np.ndarray
    landmarks: np.ndarray
    score: float
    crop: np.ndarray
    embedding: np.ndarray | None = None


def detector(options, device: torch.device):
    """The MTCNN detector for ``options`` (:class:`facerec.align.AlignOptions`).

    Raises:
        ImportError: one line naming the ``align`` extra when it is not installed.
    """
    from facerec.align.detect import FaceDetector, MissingExtra

    try:
        return FaceDetector(device, min_face=options.min_face)
    except MissingExtra as error:
        raise ImportError(f"finding faces in a photo: {first_line(error)}") from None


def detect_faces(image: np.ndarray, found_by, options) -> list[DetectedFace]:
    """Every face ``found_by`` (a :class:`FaceDetector`) finds in ``image``, aligned.

    Args:
        image: RGB uint8 ``(H, W, 3)``.
        found_by: the detector.
        options: :class:`facerec.align.AlignOptions` (``max_side``: detection runs on a copy
            shrunk to it; ``size``: the crop's side).

    Returns:
        The faces, highest score first (empty: none found).
    """
    from facerec.align.image import detection_image
    from facerec.align.transform import warp_face

    small, scale = detection_image(image, options.max_side)
    faces = []
    for face in found_by.detect([small])[0]:
        landmarks = face.landmarks / scale
        crop, _ = warp_face(image, landmarks, options.size)
        faces.append(DetectedFace(face.box / scale, landmarks, face.score, crop))
    return faces
