"""The model, loaded once, and what the page does with decoded photos (no web framework here).

Every call into the model holds :attr:`Service.lock`: a PyTorch module is not safe to run from
several threads at once (and one forward pass at a time is also what a 2-core machine can do),
so the web layer runs these methods in its thread pool and they queue here.

A photo becomes faces in one of two ways, as the model was trained:

- a model trained on aligned faces (``data.align``): every face MTCNN finds, aligned with the
  ArcFace template (:meth:`FaceEmbedder.faces`); none found -> the alignment's centre-crop
  fallback (or a refusal, when the model's alignment skips such images);
- a model trained on centre crops: the one centre crop training used, resized.

Either way the crop shown is the model's input for that face, pixel for pixel.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facerec.inference import FaceEmbedder
from facerec.inference.card import essentials
from facerec.inference.folder import describe
from facerec.inference.images import prepare_arrays
from facerec.inference.thresholds import threshold_claim
from facerec.serve.people import People, check_name, upload_record
from facerec.serve.schemas import (
    CandidateOut,
    EnrollOut,
    FaceOut,
    IdentifyOut,
    ModelOut,
    PhotoOut,
    ThresholdOut,
    VerifyOut,
)
from facerec.serve.uploads import BadUpload, Photo

__all__ = ["Found", "Service", "png_base64"]

REMEMBERED = 16  # photos whose faces are kept (a few MB at most: crops as PNG, embeddings)
ALIGNED, FALLBACK, CENTRE = "aligned", "centre crop (no face found)", "centre crop"


def png_base64(image: np.ndarray) -> str:
    """RGB uint8 ``(H, W, 3)`` as a base64 PNG."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV always writes PNG
        raise RuntimeError("OpenCV could not encode a PNG")
    return base64.b64encode(data.tobytes()).decode("ascii")


def centred_box(shape: tuple[int, ...], side: float | None) -> list[float]:
    """x1, y1, x2, y2 of a centred square of ``side`` (None: the whole image) in an image of
    ``shape`` ``(H, W, ...)``, clipped to the image."""
    h, w = shape[:2]
    if side is None:
        return [0.0, 0.0, float(w), float(h)]
    x, y = max(0.0, (w - side) / 2), max(0.0, (h - side) / 2)
    return [x, y, float(min(w, x + side)), float(min(h, y + side))]


@dataclass(frozen=True)
class Found:
    """A photo's faces: how they were found, each face, and their embeddings float32
    ``(F, D)``."""

    method: str
    faces: list[FaceOut]
    embeddings: np.ndarray


class Service:
    """A :class:`FaceEmbedder` behind one lock, with the page's operations.

    Args:
        model: the loaded model.
        gallery: the gallery folder identify and enrol use (None: they are not offered;
            a folder without a gallery yet: started by the first enrolment).
    """

    def __init__(self, model: FaceEmbedder, gallery: str | Path | None = None) -> None:
        self.model = model
        self.people = None if gallery is None else People(gallery, model)
        self.lock = threading.Lock()
        self._found: OrderedDict[bytes, Found] = OrderedDict()

    # photos -> faces ---------------------------------------------------------------------

    def find(self, photo: Photo) -> Found:
        """Every face of ``photo`` the model would embed, as the module docstring says; the
        last :data:`REMEMBERED` photos' answers are kept, so picking another face of the same
        photos on the page costs no second detection.

        Raises:
            BadUpload: an aligned model that skips photos without a face found none.
        """
        image = photo.image
        key = hashlib.blake2b(image.tobytes(), digest_size=16).digest() + repr(image.shape).encode()
        with self.lock:
            if key in self._found:
                self._found.move_to_end(key)
                return self._found[key]
        found = self._find(photo)
        with self.lock:
            self._found[key] = found
            while len(self._found) > REMEMBERED:
                self._found.popitem(last=False)
        return found

    def _find(self, photo: Photo) -> Found:
        alignment = self.model.alignment
        if alignment is None:
            side = self.model.crop
            return self._centre(photo.image, CENTRE, side, centred_box(photo.image.shape, side))
        with self.lock:
            faces = self.model.faces(photo.image)
        if faces:
            return Found(ALIGNED, [_face_out(f.box, f.crop, f.landmarks, f.score) for f in faces],
                         np.stack([f.embedding for f in faces]))  # fmt: skip
        if alignment.on_missing != "center":
            raise BadUpload(f"{photo.name}: no face found (the model skips such photos)")
        from facerec.align.image import center_crop  # the align extra, present when aligning

        side = min(photo.image.shape[:2]) * alignment.fallback_crop
        box = centred_box(photo.image.shape, side)
        return self._centre(center_crop(photo.image, alignment), FALLBACK, None, box)

    def _centre(self, image: np.ndarray, method: str, side: int | None, box: list[float]):
        tensor = prepare_arrays([image], self.model.preprocessing.image_size, side)
        with self.lock:
            embedding = self.model.embed(tensor)
        crop = tensor[0].permute(1, 2, 0).contiguous().numpy()
        return Found(method, [_face_out(box, crop)], embedding)

    # operations ------------------------------------------------------------------------------

    def verify(
        self, photos: tuple[Photo, Photo], indices: tuple[int, int], threshold: float | None
    ) -> VerifyOut:
        """Compare face ``indices[i]`` of ``photos[i]`` (``facerec verify``'s numbers).

        Raises:
            BadUpload: an index past the faces found.
        """
        found = [self.find(photo) for photo in photos]
        for photo, faces, index in zip(photos, found, indices, strict=True):
            if not 0 <= index < len(faces.faces):
                count = len(faces.faces)
                raise BadUpload(f"{photo.name}: face {index} asked for, but {count} found")
        x, y = (faces.embeddings[i] for faces, i in zip(found, indices, strict=True))
        result = self.model.compare_embeddings(x, y, threshold)
        decision = None if result.same is None else ("same" if result.same else "different")
        return VerifyOut(
            photos=[photo_out(p, f, i) for p, f, i in zip(photos, found, indices, strict=True)],
            similarity=result.similarity, distance=result.distance, threshold=result.threshold,
            threshold_source=result.source, decision=decision,
        )  # fmt: skip

    def identify(self, photo: Photo, k: int, threshold: float | None) -> IdentifyOut:
        """Every face of ``photo`` searched in the gallery: top-``k`` and the identity.

        Raises:
            BadUpload: 404 without a gallery, 409 while it is empty.
        """
        people = self._people()
        found = self.find(photo)
        answers, value, source = people.search(found.embeddings, k, threshold)
        return IdentifyOut(
            photo=photo_out(photo, found, 0), threshold=value, threshold_source=source,
            answers=[[CandidateOut(name=n, similarity=c) for n, c in top] for top, _ in answers],
            identities=[identity for _, identity in answers],
        )  # fmt: skip

    def enroll(self, name: str, photos: Sequence[Photo]) -> EnrollOut:
        """Enrol the largest face of each photo under ``name`` (a face per photo, as
        ``facerec gallery build`` does), write the gallery; the name is searchable at once.

        Raises:
            BadUpload: 404 without a gallery; a bad name; a photo without a face.
        """
        people, name = self._people(), check_name(name)
        found = [self.find(photo) for photo in photos]
        chosen = [max(range(len(f.faces)), key=lambda i, f=f: _area(f.faces[i].box)) for f in found]
        records = [upload_record(hashlib.sha256(p.image.tobytes()).hexdigest(), p.name, p.size)
                   for p in photos]  # fmt: skip
        embeddings = np.stack([f.embeddings[i] for f, i in zip(found, chosen, strict=True)])
        count = people.enroll(name, records, embeddings)
        shown = [photo_out(p, f, i) for p, f, i in zip(photos, found, chosen, strict=True)]
        return EnrollOut(name=name, photos=shown, images=count, gallery=people.summary())

    def _people(self) -> People:
        if self.people is None:
            raise BadUpload("no gallery: start the server with --gallery FOLDER", 404)
        return self.people

    def model_info(self) -> ModelOut:
        """The card's essentials, how photos are prepared, the threshold and the device."""
        model = self.model
        card = essentials(describe(model.config, model.meta, model.spec))
        results = card["results"].items()
        card["results"] = {name: {k: float(v) for k, v in r.items() if _number(v)}
                           for name, r in results if isinstance(r, dict)}  # fmt: skip
        record = model.threshold
        threshold = None
        if record is not None:
            threshold = ThresholdOut(value=float(record["threshold"]),
                                     source=threshold_claim(record))  # fmt: skip
        return ModelOut(path=str(model.path), **card, preparation=self.preparation(),
                        threshold=threshold, device=str(model.device),
                        gallery=self.people and self.people.summary())  # fmt: skip

    def preparation(self) -> str:
        """How a photo becomes the model's input, in words."""
        size = self.model.preprocessing.image_size
        alignment = self.model.alignment
        if alignment is not None:
            missing = "a centre crop" if alignment.on_missing == "center" else "refused"
            return (f"faces found by MTCNN, aligned to the ArcFace template at {size}x{size}; "
                    f"no face: {missing}")  # fmt: skip
        crop = self.model.crop
        return f"centre crop {crop or 'none'}, resized to {size}x{size} (no face detection)"


def _area(box: list[float]) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _face_out(box, crop: np.ndarray, landmarks=None, score=None) -> FaceOut:
    return FaceOut(box=[float(v) for v in box], crop_png=png_base64(crop),
                   landmarks=None if landmarks is None else np.asarray(landmarks).tolist(),
                   score=None if score is None else float(score))  # fmt: skip


def photo_out(photo: Photo, found: Found, chosen: int) -> PhotoOut:
    """The response entry of one photo."""
    h, w = photo.image.shape[:2]
    return PhotoOut(name=photo.name, width=w, height=h, method=found.method, faces=found.faces,
                    chosen=chosen)  # fmt: skip
