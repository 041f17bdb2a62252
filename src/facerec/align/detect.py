"""Face detection with five landmarks: MTCNN from facenet-pytorch, imported only when used.

facenet-pytorch 2.5.3 ships the P/R/O-Net weights inside its wheel (pnet.pt 28,570 B, rnet.pt
403,147 B, onet.pt 1,559,269 B), so nothing is downloaded at run time; 2.6.0 pins torch<2.3,
which is why the ``align`` extra pins 2.5.3. About 50-60 ms per 250x250 image on one CPU
thread; same-sized images are detected as one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Face", "FaceDetector", "MissingExtra", "choose_face"]

INSTALL_HINT = "pip install 'facerec[align]'  (facenet-pytorch==2.5.3 and requests)"


class MissingExtra(ImportError):
    """The ``align`` extra is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Face:
    """One detected face.

    Attributes:
        box: float64 ``(4,)`` x1, y1, x2, y2 in pixels.
        score: detector confidence in [0, 1].
        landmarks: float64 ``(5, 2)`` x, y of left eye, right eye, nose, left and right mouth
            corner (left = the image's left), the order of the ArcFace template.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])


def choose_face(faces: Sequence[Face], shape: tuple[int, ...], rule: str = "largest") -> Face:
    """The face to keep when a picture holds several.

    Args:
        faces: at least one face.
        shape: the image's ``(H, W, ...)``.
        rule: ``"largest"`` (box area) or ``"center"`` (box centre nearest the image centre).
    """
    if rule == "largest":
        return max(faces, key=lambda f: f.area)
    if rule == "center":
        middle = np.array([shape[1] / 2, shape[0] / 2])
        return min(faces, key=lambda f: float(((f.center - middle) ** 2).sum()))
    raise ValueError(f"face selection rule must be 'largest' or 'center', got {rule!r}")


def _load_mtcnn():
    try:
        from facenet_pytorch import MTCNN
    except ImportError as error:  # the package, or its `requests` dependency
        raise MissingExtra(
            f"face alignment needs the 'align' extra ({error}): {INSTALL_HINT}"
        ) from None
    return MTCNN


class FaceDetector:
    """MTCNN returning every face with its landmarks.

    Args:
        device: where the three small networks run (``"cpu"``, ``"cuda"``, a torch.device).
        min_face: smallest face side, in pixels, MTCNN searches for.
        thresholds: MTCNN's P/R/O-Net score thresholds (facenet-pytorch's defaults).

    Raises:
        MissingExtra: facenet-pytorch (or requests) is not installed.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        min_face: int = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
    ) -> None:
        mtcnn = _load_mtcnn()
        self.device = torch.device(device)
        self.mtcnn = mtcnn(
            keep_all=True, min_face_size=min_face, thresholds=list(thresholds), device=self.device
        )

    def crop_scores(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """How much each whole image looks like a face crop: float64 ``(N,)`` in [0, 1].

        The centred square of the shorter side, resized to 48x48, is scored by MTCNN's O-Net,
        the stage that judges face candidates: a candidate box is roughly a tight face crop,
        so a photo that is one scores high, a scene or a loosely framed face low.

        Args:
            images: RGB uint8 ``(H, W, 3)`` arrays of any shapes.
        """
        import cv2

        squares = []
        for image in images:
            h, w = image.shape[:2]
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            square = image[top : top + side, left : left + side]
            squares.append(cv2.resize(square, (48, 48), interpolation=cv2.INTER_AREA))
        if not squares:
            return np.zeros(0)
        batch = torch.as_tensor(np.stack(squares), device=self.device).permute(0, 3, 1, 2)
        with torch.inference_mode():
            onet = self.mtcnn.onet
            batch = (batch.to(next(onet.parameters()).dtype) - 127.5) * 0.0078125
            return onet(batch)[2][:, 1].double().cpu().numpy()

    def detect(self, images: Sequence[np.ndarray], min_face: int | None = None) -> list[list[Face]]:
        """Faces in each image, highest score first.

        Args:
            images: RGB uint8 ``(H, W, 3)`` arrays, all of one shape (one network batch).
            min_face: smallest face side searched this time (px); None: the detector's own.

        Returns:
            One list per image (empty: no face found).
        """
        if not len(images):
            return []
        default = self.mtcnn.min_face_size
        self.mtcnn.min_face_size = min_face or default
        try:
            with torch.inference_mode():
                boxes, scores, points = self.mtcnn.detect(np.stack(images), landmarks=True)
        finally:
            self.mtcnn.min_face_size = default
        out = []
        for box, score, point in zip(boxes, scores, points, strict=True):
            # Under numpy 2 facenet-pytorch hands back object arrays (None for no face).
            if box is None or point is None:
                out.append([])
                continue
            box = np.asarray(box, dtype=np.float64).reshape(-1, 4)
            point = np.asarray(point, dtype=np.float64).reshape(-1, 5, 2)
            score = np.asarray(score, dtype=np.float64).reshape(-1)
            faces = [Face(b, float(s), p) for b, s, p in zip(box, score, point, strict=True)]
            out.append(sorted(faces, key=lambda f: -f.score))
        return out
