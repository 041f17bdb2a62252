"""Identify and enrol on the page: a gallery searched with :class:`facerec.inference.identify.
Searcher` and grown with :mod:`facerec.inference.gallery` (nothing of theirs is redone here).

The gallery folder is given at start-up (``facerec serve MODEL --gallery G``); a folder without
a gallery yet is created by the first enrolment. Enrolments are serialised by one lock; each
writes the whole gallery atomically (:func:`write_gallery`: a temporary file renamed), then the
searcher is rebuilt, so a request sees the gallery before or after an enrolment, never half.

An uploaded photo is not kept: its gallery record is ``upload:<sha256 prefix>:<file name>``, its
size and the enrolment time (the same photo enrolled again under a name replaces itself).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from facerec.inference.calibration import threshold_for
from facerec.inference.enrol import check_model, model_record
from facerec.inference.gallery import INDEX, Gallery, ImageRecord, read_gallery, write_gallery
from facerec.inference.identify import Searcher
from facerec.serve.schemas import GalleryOut
from facerec.serve.uploads import BadUpload

__all__ = ["MAX_NAME", "People", "check_name", "upload_record"]

MAX_NAME = 100


def check_name(name: str) -> str:
    """A person's name as enrolled: stripped, 1 to :data:`MAX_NAME` printable characters, no
    path separators (``facerec gallery build`` names people after folders).

    Raises:
        BadUpload: 422, saying what is wrong.
    """
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise BadUpload(f"name: 1 to {MAX_NAME} characters, got {len(name)}")
    if not name.isprintable() or any(c in name for c in "/\\"):
        raise BadUpload(f"name {name[:40]!r}: printable characters only, no / or \\")
    return name


class People:
    """The page's gallery: read (or started empty), searched, enrolled into.

    Args:
        folder: the gallery folder.
        model: the :class:`FaceEmbedder` (a gallery of another model is refused).

    Raises:
        ValueError: the folder holds a gallery that cannot be read, or another model's.
    """

    def __init__(self, folder: str | Path, model) -> None:
        self.folder, self.model = Path(folder), model
        self.lock = threading.Lock()
        record = model_record(model)
        if (self.folder / INDEX).is_file():
            gallery = read_gallery(self.folder)
            check_model(gallery, record, self.folder)
        else:
            empty = np.zeros((0, record["embedding_size"]), np.float32)
            gallery = Gallery([], [], empty, record)
        self._use(gallery)

    def _use(self, gallery: Gallery) -> None:
        searcher = Searcher(gallery, self.model, "auto", self.folder) if gallery.names else None
        self.gallery, self.searcher = gallery, searcher  # swapped together, under self.lock

    def summary(self) -> GalleryOut:
        gallery = self.gallery
        return GalleryOut(path=str(self.folder), identities=len(gallery.names),
                          images=len(gallery.embeddings), names=gallery.names[:200],
                          calibrated=gallery.calibration is not None)  # fmt: skip

    def threshold(self, given: float | None) -> tuple[float | None, str]:
        """The cosine threshold of identify and where it came from: ``given``, else the
        gallery's calibrated false-accept rate, else the model's verification threshold read
        as a cosine (``1 - d / 2``), else none (every face gets its nearest identity)."""
        if given is not None:
            return given, "given"
        gallery, searcher = self.gallery, self.searcher
        if gallery.calibration is not None and searcher is not None:
            try:
                value, strangers = threshold_for(gallery, None, searcher.templates)
                return value, (f"false-accept rate {gallery.calibration['far']:g} on "
                               f"{strangers} photos of people not enrolled")  # fmt: skip
            except ValueError as error:
                reason = f"calibration unusable ({error})"
        else:
            reason = "gallery not calibrated"
        record = self.model.threshold
        if record is None:
            return None, f"none ({reason}, no model threshold): the nearest identity is named"
        d = float(record["threshold"])
        return 1 - d / 2, (f"the model's verification threshold, squared distance {d:.4f} "
                           f"= cosine {1 - d / 2:.4f} ({reason})")  # fmt: skip

    def search(self, embeddings: np.ndarray, k: int, threshold: float | None):
        """:meth:`Searcher.answer` of float32 ``(F, D)`` embeddings: per face ``(top-k
        [(name, cosine)], identity)``, with the threshold and its source.

        Raises:
            BadUpload: 409 while the gallery is empty.
        """
        with self.lock:
            searcher = self.searcher
            value, source = self.threshold(threshold)
        if searcher is None:
            raise BadUpload(f"the gallery {self.folder} is empty: enrol someone first", 409)
        return searcher.answer(embeddings, k, value), value, source

    def enroll(self, name: str, records: list[ImageRecord], embeddings: np.ndarray) -> int:
        """Add ``records`` with their embeddings float32 ``(n, D)`` under ``name``, write the
        gallery and search it from now on; returns the name's photo count."""
        with self.lock:
            entries = self.gallery.entries()
            old, old_emb = entries.get(name, ([], self.gallery.embeddings[:0]))
            new = {r.file for r in records}
            keep = [i for i, r in enumerate(old) if r.file not in new]
            rows = np.concatenate([old_emb[keep], embeddings.astype(old_emb.dtype)])
            entries[name] = ([old[i] for i in keep] + list(records), rows)
            gallery = self.gallery.with_identities(entries)
            write_gallery(gallery, self.folder)
            self._use(gallery)
            return len(entries[name][0])


def upload_record(digest: str, name: str, size: int) -> ImageRecord:
    """The gallery record of an uploaded photo (not kept on disk)."""
    return ImageRecord(f"upload:{digest[:16]}:{name}", size, time.time_ns())
