"""Five landmarks -> similarity transform (least squares, Umeyama) -> the ArcFace 112x112 crop.

A similarity (rotation, one scale, translation) keeps the face's proportions; fitting it by
least squares over all five points spreads the landmark noise over them. RANSAC fits such as
``cv2.estimateAffinePartial2D``'s default drop points as outliers: on LFW faces it kept 3 of
the 5 and put the eyes 8-19 px off the template.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["ARCFACE_TEMPLATE", "TEMPLATE_SIZE", "template", "umeyama", "warp_face"]

# insightface's arcface_dst: left eye, right eye, nose tip, left and right mouth corner
# ("left" = the image's left), in pixels of a 112x112 crop.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
TEMPLATE_SIZE = 112


def template(size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The template scaled to a ``size`` x ``size`` crop: float64 ``(5, 2)``."""
    return ARCFACE_TEMPLATE * (size / TEMPLATE_SIZE)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The similarity transform that maps ``src`` onto ``dst`` with least squared error.

    Umeyama (1991), "Least-squares estimation of transformation parameters between two point
    patterns", restricted to 2-D and to proper rotations (a mirror is never a face alignment).

    Args:
        src: ``(N, 2)`` points (e.g. detected landmarks, image pixels), N >= 2.
        dst: ``(N, 2)`` points they should land on (e.g. :func:`template`).

    Returns:
        float64 ``(2, 3)`` matrix ``M`` with ``dst ~= src @ M[:, :2].T + M[:, 2]``.

    Raises:
        ValueError: shapes differ, fewer than 2 points, or the points are all one point.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"umeyama needs two (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    mean_src, mean_dst = src.mean(0), dst.mean(0)
    src_c, dst_c = src - mean_src, dst - mean_dst
    var_src = (src_c**2).sum() / len(src)
    if var_src <= 1e-12:
        raise ValueError("umeyama: the source points coincide")
    cov = dst_c.T @ src_c / len(src)  # (2, 2)
    u, sigma, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # would be a reflection: flip the last axis
        d[-1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = (sigma * d).sum() / var_src
    matrix = np.empty((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mean_dst - scale * rotation @ mean_src
    return matrix


def warp_face(
    image: np.ndarray, landmarks: np.ndarray, size: int = TEMPLATE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the face with these landmarks out of ``image`` onto the template.

    Args:
        image: uint8 ``(H, W, 3)``.
        landmarks: ``(5, 2)`` x, y pixels in ``image``, in template order (left eye, right eye,
            nose, left and right mouth corner).
        size: side of the output crop; the template is scaled from 112.

    Returns:
        The aligned uint8 ``(size, size, 3)`` crop (black where it leaves the image) and the
        float64 ``(2, 3)`` transform used.
    """
    matrix = umeyama(landmarks, template(size))
    # INTER_AREA is not supported by warpAffine; linear is what insightface's norm_crop uses.
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
    return crop, matrix
