"""Who is in a photo: every face, its best gallery identities, and "unknown" below a threshold.

gallery = read_gallery("people/")
searcher = Searcher(gallery, embedder)          # refuses another model's gallery
for face in searcher.photo("door.jpg", k=5, threshold=0.35):
    print(face.box, face.identity, face.candidates[0])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facerec.data.decode import read_image
from facerec.inference.enrol import check_model, model_record
from facerec.inference.gallery import Gallery
from facerec.inference.images import prepare_arrays
from facerec.inference.search import build_index

__all__ = ["UNKNOWN", "FaceAnswer", "Searcher"]

UNKNOWN = "unknown"


@dataclass(frozen=True)
class FaceAnswer:
    """One face of a photo.

    Attributes:
        box: x1, y1, x2, y2 in the photo's pixels (the whole photo when not detected).
        candidates: up to k ``(name, cosine)``, best first.
        identity: the best name, :data:`UNKNOWN` below the threshold, None without one.
    """

    box: tuple[float, float, float, float]
    candidates: list[tuple[str, float]]
    identity: str | None

    def as_dict(self) -> dict:
        top = [{"name": n, "similarity": round(s, 6)} for n, s in self.candidates]
        return {"box": [round(v, 1) for v in self.box], "identity": self.identity, "top": top}


class Searcher:
    """A gallery's index with the model that embeds the photos searched in it.

    Args:
        gallery: a :class:`Gallery` (:func:`facerec.inference.gallery.read_gallery`).
        embedder: the :class:`FaceEmbedder` it was built with (checked by fingerprint).
        index: ``"auto"``, ``"exact"`` or ``"faiss"`` (:func:`build_index`).
        where: the gallery's folder: named in messages, and where a FAISS index is cached
            (``index-<generation>.faiss``, rebuilt when the gallery is written again).

    Raises:
        ValueError: the gallery is another model's, or has no identities.
    """

    def __init__(self, gallery: Gallery, embedder, index: str = "auto", where="gallery"):
        check_model(gallery, model_record(embedder), where)
        if not gallery.names:
            raise ValueError(f"{where}: the gallery has no identities")
        self.gallery, self.embedder = gallery, embedder
        self.templates = gallery.templates()
        folder = Path(where)
        cache = folder / f"index-{gallery.generation}.faiss" if gallery.generation else None
        self.index = build_index(self.templates, index, cache if folder.is_dir() else None)

    def faces(self, photo: str | Path, mode: str = "auto"):
        """``(boxes, embeddings (F, D))`` of the faces of ``photo``.

        Args:
            mode: ``"all"`` (every face detected, the ``align`` extra), ``"one"`` (the photo
                prepared as training images were: the alignment's pick, or the photo itself
                for a centre-cropped model), ``"auto"`` (all for an aligned model, else one).

        Raises:
            OSError: unreadable; ImportError: ``"all"`` without the ``align`` extra.
        """
        image = read_image(photo)
        aligned = self.embedder.alignment is not None
        if mode == "all" or (mode == "auto" and aligned):
            found = self.embedder.faces(image)
            boxes = [tuple(float(v) for v in f.box) for f in found]
            emb = np.stack([f.embedding for f in found]) if found else np.zeros((0, 1))
            return boxes, emb
        crop, found = self.embedder.face_crop(image)
        if crop is None:
            return [], np.zeros((0, 1))
        size = self.embedder.preprocessing.image_size
        emb = self.embedder.embed(prepare_arrays([crop], size, self.embedder.crop))
        return [(0.0, 0.0, float(image.shape[1]), float(image.shape[0]))], emb

    def answer(self, embeddings: np.ndarray, k: int, threshold: float | None) -> list:
        """The top-``k`` identities of each embedding ``(F, D)`` and the decision at
        ``threshold`` (cosine; the best at or above it is named)."""
        if len(embeddings) == 0:
            return []
        scores, ids = self.index.search(embeddings, k)
        out = []
        for row_scores, row_ids in zip(scores, ids, strict=True):
            top = [(self.gallery.names[i], float(s))
                   for s, i in zip(row_scores, row_ids, strict=True) if i >= 0]  # fmt: skip
            known = threshold is None or (top and top[0][1] >= threshold)
            decision = None if threshold is None else (top[0][0] if known else UNKNOWN)
            out.append((top, decision))
        return out

    def photo(self, photo: str | Path, k: int = 5, threshold: float | None = None,
              mode: str = "auto") -> list[FaceAnswer]:  # fmt: skip
        """Every face of ``photo`` answered (empty: no face found)."""
        boxes, emb = self.faces(photo, mode)
        answers = self.answer(emb, k, threshold)
        return [FaceAnswer(box, top, decision)
                for box, (top, decision) in zip(boxes, answers, strict=True)]  # fmt: skip
