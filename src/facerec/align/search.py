"""Where to look again when the first detection finds no face: padded, enhanced, rotated views.

MTCNN misses faces that touch the image border (a tight crop: its windows must fit inside the
image), faces in dark or flat images (its networks saw well-lit photos), faces smaller than
its ``min_face`` and faces turned more than about 30 degrees in the image plane. Each of those
has a view that undoes it: a padded copy, a contrast-enhanced copy (the crop is still cut from
the original pixels), a search with a smaller ``min_face``, copies rotated back. A view is an
image plus the affine map from its pixels to the original's, so the landmarks found in it are
mapped back exactly.

The views are tried in order only for the images the plain detection missed, so the common
case costs nothing more. What each step gained on degraded LFW copies is measured by
``scripts/hard_faces.py`` (docs/alignment.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from facerec.align.detect import Face, choose_face

__all__ = [
    "SEARCH_STEPS",
    "View",
    "enhance",
    "find_in_views",
    "map_face",
    "search",
    "search_views",
    "second_look",
    "tilt",
    "touches_border",
]

# Padding as a fraction of the longer side: a crop at the face box +-10% needs the box's
# context (MTCNN's box reaches the forehead and chin) restored around it.
PAD = 0.25
# Rotations tried for a face turned in the image plane: MTCNN itself copes with about +-30.
ANGLES = (-45.0, 45.0, -90.0, 90.0)
# A face box nearer the edge than this fraction of its size is looked for again, padded.
BORDER_MARGIN = 0.15
# The face's side in a second look (px): about an aligned crop's.
FACE_SIDE = 96
# A face turned more than this (degrees) is looked at again, levelled.
MAX_TILT = 10.0
# A smaller face than this (px) is not searched for: P-Net's window is 12 px.
SMALLEST_FACE = 12


@dataclass(frozen=True)
class View:
    """One way of looking at an image.

    Attributes:
        image: RGB uint8 ``(h, w, 3)`` detection image.
        matrix: float64 ``(2, 3)`` affine map from the view's pixels to the original's.
        min_face: smallest face side searched in this view (px); None: the detector's own.
    """

    image: np.ndarray
    matrix: np.ndarray
    min_face: int | None = None


def _affine_inverse(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(matrix)


def map_face(face: Face, matrix: np.ndarray) -> Face:
    """``face`` found in a view, in the original's pixels (its box: the bounding box of the
    mapped corners)."""
    points = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
    x1, y1, x2, y2 = face.box
    corners = np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2]]) @ matrix[:, :2].T + matrix[:, 2]
    box = np.concatenate([corners.min(0), corners.max(0)])
    return Face(box, face.score, points)


def _pad(image: np.ndarray, fraction: float = PAD) -> View:
    pad = round(max(image.shape[:2]) * fraction)
    # A flat border of the image's mean colour: on tight LFW crops its landmarks were 0.97 px
    # off (median, 112x112 frame) against 1.11 with replicated edges, 9.3 with no padding.
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT,
                                value=_mean_colour(image))  # fmt: skip
    return View(padded, np.array([[1.0, 0.0, -pad], [0.0, 1.0, -pad]]))


def _mean_colour(image: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in image.reshape(-1, image.shape[-1]).mean(0))


def touches_border(face: Face, shape: tuple[int, ...], margin: float = BORDER_MARGIN) -> bool:
    """Whether ``face``'s box comes within ``margin`` x its size of the image's edge."""
    x1, y1, x2, y2 = face.box
    mx, my = margin * (x2 - x1), margin * (y2 - y1)
    return bool(x1 < mx or y1 < my or x2 > shape[1] - mx or y2 > shape[0] - my)


def tilt(face: Face) -> float:
    """The eye line's angle (degrees, image axes: positive = the right eye lower)."""
    dx, dy = face.landmarks[1] - face.landmarks[0]
    return float(np.degrees(np.arctan2(dy, dx)))


def needs_second_look(face: Face, shape: tuple[int, ...]) -> bool:
    """Where MTCNN finds a face but misplaces its landmarks: at the image's border (by 9 px
    in the 112 frame on tight crops), small (6 px for faces 4-8x smaller than LFW's), turned
    (7 px at 60 degrees)."""
    side = max(face.box[2] - face.box[0], face.box[3] - face.box[1])
    return touches_border(face, shape) or side < FACE_SIDE / 2 or abs(tilt(face)) > MAX_TILT


def face_view(image: np.ndarray, face: Face) -> View:
    """The face levelled, scaled to :data:`FACE_SIDE` px and centred on a canvas three times
    that, filled with the image's mean colour beyond its edges."""
    x1, y1, x2, y2 = face.box
    scale = FACE_SIDE / max(x2 - x1, y2 - y1, 1.0)
    matrix = cv2.getRotationMatrix2D(((x1 + x2) / 2, (y1 + y2) / 2), tilt(face), scale)
    matrix[:, 2] += (1.5 * FACE_SIDE - (x1 + x2) / 2, 1.5 * FACE_SIDE - (y1 + y2) / 2)
    side = 3 * FACE_SIDE
    view = cv2.warpAffine(image, matrix, (side, side), flags=cv2.INTER_LINEAR,
                          borderValue=_mean_colour(image))  # fmt: skip
    return View(view, _affine_inverse(matrix))


def second_look(image: np.ndarray, face: Face, detect) -> Face | None:
    """``face`` found again in its :func:`face_view` (the face there nearest the centre),
    in ``image``'s pixels; None when the view shows none."""
    view = face_view(image, face)
    faces = detect([view.image], None)[0]
    if not faces:
        return None
    return map_face(choose_face(faces, view.image.shape, "center"), view.matrix)


def enhance(image: np.ndarray) -> np.ndarray:
    """A copy made readable for the detector: luminance stretched (1st-99th percentile),
    brightened by the gamma that puts its median at 0.45, then CLAHE; RGB uint8 like the
    input. Used for detection only: the crop is cut from the original."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    light = lab[..., 0].astype(np.float32)
    low, high = np.percentile(light, (1, 99))
    light = np.clip((light - low) / max(high - low, 1.0), 0.0, 1.0)
    median = float(np.clip(np.median(light), 0.02, 0.98))
    light = light ** (np.log(0.45) / np.log(median))
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    lab[..., 0] = clahe.apply((light * 255).astype(np.uint8))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def _enhanced(image: np.ndarray) -> list[View]:
    padded = _pad(image)
    return [View(enhance(padded.image), padded.matrix)]


def _padded(image: np.ndarray) -> list[View]:
    return [_pad(image)]


def _small(image: np.ndarray) -> list[View]:
    return [View(image, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), SMALLEST_FACE)]


def _rotated(image: np.ndarray, angles: Sequence[float] = ANGLES) -> list[View]:
    """The image turned by each angle about its centre on a square canvas of its diagonal
    (nothing is cut, and all views share one shape: one detection batch)."""
    h, w = image.shape[:2]
    side = int(np.ceil(np.hypot(h, w)))
    views = []
    for angle in angles:
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        matrix[:, 2] += ((side - w) / 2, (side - h) / 2)
        turned = cv2.warpAffine(image, matrix, (side, side), flags=cv2.INTER_LINEAR,
                                borderValue=_mean_colour(image))  # fmt: skip
        views.append(View(turned, _affine_inverse(matrix)))
    return views


# name -> views of an image, tried in this order (each step only for images still missing).
SEARCH_STEPS: dict[str, Callable[[np.ndarray], list[View]]] = {
    "pad": _padded,
    "enhance": _enhanced,
    "small": _small,
    "rotate": _rotated,
}


def search_views(image: np.ndarray, step: str) -> list[View]:
    """The views of ``image`` one search step looks at (see :data:`SEARCH_STEPS`)."""
    try:
        return SEARCH_STEPS[step](image)
    except KeyError:
        raise ValueError(
            f"unknown face search step {step!r}; valid: {list(SEARCH_STEPS)}"
        ) from None


def find_in_views(detect: Callable[[list[np.ndarray], int | None], list[list[Face]]],
                  views: Sequence[View]) -> list[Face]:  # fmt: skip
    """Faces found in any of ``views``, in the original's pixels.

    Views of one shape and ``min_face`` are detected as one batch. Where several views find
    faces, those of the view whose best face has the highest score are kept, each mapped
    back to the original.
    """
    groups: dict[tuple, list[int]] = {}
    for i, view in enumerate(views):
        groups.setdefault((view.image.shape, view.min_face), []).append(i)
    found: list[list[Face]] = [[] for _ in views]
    for (_, min_face), members in groups.items():
        for i, faces in zip(members, detect([views[i].image for i in members], min_face),
                            strict=True):  # fmt: skip
            found[i] = faces
    hits = [i for i, faces in enumerate(found) if faces]
    if not hits:
        return []
    # The view whose best face MTCNN is surest of: on LFW turned by 60 degrees it kept the
    # right face for 89 of 100 images, the most upright view's face for 84.
    best = max(hits, key=lambda i: found[i][0].score)
    return [map_face(face, views[best].matrix) for face in found[best]]


def search(image: np.ndarray, detector, steps: Sequence[str], faces: Sequence[Face] = (),
           select: str = "largest") -> tuple[list[Face], str | None]:  # fmt: skip
    """Where the plain detection missed, try ``steps`` in order; then, where the face found
    is at the border, small or turned (:func:`needs_second_look`), look again at it in its
    :func:`face_view` (levelled, scaled, padded).

    Args:
        image: RGB uint8 ``(H, W, 3)`` detection image.
        detector: a :class:`facerec.align.detect.FaceDetector` (anything with its ``detect``).
        steps: names from :data:`SEARCH_STEPS`.
        faces: what the plain detection found in ``image``.
        select: the rule that picks the face (:func:`facerec.align.detect.choose_face`).

    Returns:
        The faces (in ``image``'s pixels), the one ``select`` chose first (replaced by its
        second look: the choice is made once, before a second look resizes its box), and
        how they were found: ``"detect"`` (the plain detection), the name of the step that
        found them, ``+look`` added when a second look placed the landmarks; ``([], None)``.
    """
    how = "detect" if faces else None
    faces = list(faces)
    for step in steps if not faces else ():
        faces = find_in_views(detector.detect, search_views(image, step))
        if faces:
            how = step
            break
    if not faces:
        return faces, how
    chosen = choose_face(faces, image.shape, select)
    others = [face for face in faces if face is not chosen]
    look = bool(steps) and needs_second_look(chosen, image.shape)
    better = second_look(image, chosen, detector.detect) if look else None
    if better is None:
        return [chosen, *others], how
    return [better, *others], f"{how}+look"
