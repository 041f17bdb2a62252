"""Align many image files: detect in batches, warp, write, remember what was done.

``align_files`` is the one loop behind ``scripts/align.py``, ``pack_dataset.py --align`` and
the LFW data config's ``align``: every file ends in exactly one :class:`Summary` bucket, bad
input is named in one line and counted, and nothing stops the run over a folder. A manifest
in the output folder records, per source file, its size, mtime and the options' key, so a
second run re-aligns only what changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from facerec.align.detect import FaceDetector
from facerec.align.image import crop_faces, detection_image
from facerec.align.landmarks import GivenLandmarks, read_landmarks
from facerec.align.manifest import Manifest
from facerec.align.options import AlignOptions
from facerec.align.outcomes import (
    ALIGNED,
    CENTERED,
    NO_FACE,
    TOO_SMALL,
    UNREADABLE,
    WHOLE,
    WRITTEN,
    Summary,
)
from facerec.align.search import search
from facerec.align.transform import warp_face
from facerec.data.decode import read_image
from facerec.data.folder import IMAGE_EXTENSIONS
from facerec.files.atomic import write_atomic

__all__ = ["align_files", "align_folder", "list_folder", "write_image"]

log = logging.getLogger("facerec.align")


def write_image(path: Path, image: np.ndarray) -> None:
    """Write RGB uint8 ``(H, W, 3)`` in the format of ``path``'s extension, atomically."""
    ext = path.suffix.lower() or ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
    ok, data = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OSError(f"{path}: OpenCV cannot write {ext} images")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: tmp.write_bytes(data.tobytes()))


_MISSING = {
    WHOLE: "{src}: no face detected; it looks like a face crop: resized whole",
    CENTERED: "{src}: no face detected; centre-cropped instead",
    NO_FACE: "{src}: no face detected; skipped",
}


class _Run:
    """One :func:`align_files` call: detection batches by image shape, one outcome per file."""

    def __init__(self, jobs: Sequence[tuple[Path, Path | None]], options: AlignOptions,
                 detector: FaceDetector | None, manifest_root: Path | None, batch_size: int,
                 progress: bool, sink: Callable[[int, np.ndarray], None] | None,
                 given: GivenLandmarks | None) -> None:  # fmt: skip
        self.jobs, self.options, self.detector, self.sink = jobs, options, detector, sink
        self.batch_size, self.given = batch_size, given
        self.summary = Summary()
        self.manifest = Manifest(manifest_root, options, given.key if given else "")
        # image shape -> [(job index, full image, detection image, its scale)]
        self.pending: dict[tuple[int, ...], list[tuple[int, np.ndarray, np.ndarray, float]]] = {}
        self.bar = tqdm(total=len(jobs), desc="align", unit="img", disable=not progress)

    def finish(self, index: int, outcome: str, crop: np.ndarray | None, message: str | None,
               faces: int = 0, how: str = "") -> None:  # fmt: skip
        """Write the crop (a failed write turns into ``unreadable``), record, report."""
        src, dst = self.jobs[index]
        if crop is not None and dst is not None:
            try:
                write_image(dst, crop)
            except OSError as error:
                outcome, message, crop = UNREADABLE, f"{src}: cannot write {dst}: {error}", None
        if message and outcome != ALIGNED:
            log.warning("align: %s", message)
        self.summary.add(str(src), outcome, message, how)
        self.summary.several_faces += faces > 1
        self.manifest.record(src, outcome, message, faces, how)
        if crop is not None and self.sink is not None:
            self.sink(index, crop)
        self.bar.update(1)

    def cached(self, index: int) -> bool:
        """Take the file's outcome from the manifest, if it is there and still valid."""
        src, dst = self.jobs[index]
        entry = self.manifest.lookup(src, dst)
        if entry is None:
            return False
        outcome, message, faces, how = entry
        self.summary.add(str(src), outcome, message, how)
        self.summary.several_faces += faces > 1
        self.summary.cached += 1
        if self.sink is not None and outcome in WRITTEN:
            self.sink(index, read_image(dst))
        self.bar.update(1)
        return True

    def add(self, index: int) -> None:
        """Read one file and queue it for detection (or finish it when it cannot be)."""
        src = self.jobs[index][0]
        try:
            image = read_image(src)
        except OSError as error:
            self.finish(index, UNREADABLE, None, str(error))
            return
        if min(image.shape[:2]) < self.options.min_side:
            h, w = image.shape[:2]
            self.finish(index, TOO_SMALL, None, f"{src}: {w}x{h} px is too small to find a face"
                        f" in (min_side {self.options.min_side})")  # fmt: skip
            return
        points = self.given.get(src) if self.given is not None else None
        if points is not None:  # landmarks given: used instead of detecting
            crop, _ = warp_face(image, points, self.options.size)
            self.finish(index, ALIGNED, crop, None, 1, "given")
            return
        if self.detector is None:
            self.detector = FaceDetector(min_face=self.options.min_face)
        small, scale = detection_image(image, self.options.max_side)
        self.pending.setdefault(small.shape, []).append((index, image, small, scale))
        if len(self.pending[small.shape]) >= self.batch_size:
            self.flush(small.shape)
            if self.bar.n % (self.batch_size * 16) < self.batch_size:
                self.manifest.save()  # an interrupted run keeps what it did

    def detect(self, smalls: list[np.ndarray]) -> list[list | Exception]:
        """Faces of one batch; a batch that fails is retried image by image, so one odd
        image does not cost the others their batch."""
        try:
            return self.detector.detect(smalls)
        except Exception:
            found: list[list | Exception] = []
            for small in smalls:
                try:
                    found += self.detector.detect([small])
                except Exception as error:
                    found.append(error)
            return found

    def flush(self, shape: tuple[int, ...]) -> None:
        """Detect the queued images of one shape and finish each."""
        batch = self.pending.pop(shape, [])
        if not batch:
            return
        found = self.detect([small for _, _, small, _ in batch])
        for (index, image, small, scale), faces in zip(batch, found, strict=True):
            src = self.jobs[index][0]
            if isinstance(faces, Exception):
                self.finish(index, UNREADABLE, None, f"{src}: detector failed: {faces}")
                continue
            faces, how = search(small, self.detector, self.options.search, faces,
                                self.options.select)  # fmt: skip
            crop, outcome, count, looks_cropped = crop_faces(image, faces, scale, self.options,
                                                        self.detector)  # fmt: skip
            message = _MISSING.get(outcome, "").format(src=src)
            self.finish(index, outcome, crop, message or None, count,
                        "cropped" if looks_cropped else how or "")  # fmt: skip

    def close(self) -> Summary:
        for shape in list(self.pending):
            self.flush(shape)
        self.bar.close()
        self.manifest.save()
        return self.summary


def align_files(
    jobs: Sequence[tuple[Path, Path | None]],
    options: AlignOptions,
    detector: FaceDetector | None = None,
    manifest_root: Path | None = None,
    batch_size: int = 32,
    progress: bool = True,
    sink: Callable[[int, np.ndarray], None] | None = None,
    landmarks: GivenLandmarks | None = None,
) -> Summary:
    """Align each ``(source, destination)`` file; the core of every alignment entry point.

    Args:
        jobs: source image files and where their crop goes (None: only ``sink`` gets it).
        options: how to align.
        detector: a :class:`FaceDetector` to reuse (default: a new one on the CPU).
        manifest_root: folder of the manifest that makes re-runs skip finished files (None:
            no cache).
        batch_size: images of one shape detected together.
        progress: show a tqdm bar.
        sink: called as ``sink(job_index, crop)`` with every crop written (e.g. a pack
            writer); cached files are read back from their destination for it.
        landmarks: given landmarks (``--landmarks FILE``): the files it lists are aligned
            with them instead of detected.

    Returns:
        The :class:`Summary`; problems are also logged, one line per file.
    """
    run = _Run(jobs, options, detector, manifest_root, batch_size, progress, sink, landmarks)
    for index in range(len(jobs)):
        if not run.cached(index):
            run.add(index)
    return run.close()


def list_folder(src: Path) -> tuple[list[Path], list[Path]]:
    """Image files under ``src`` (recursively, sorted) and the other files found there."""
    images, others = [], []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        if path.name.startswith("."):
            continue
        (images if path.suffix.lower() in IMAGE_EXTENSIONS else others).append(path)
    return images, others


def align_folder(
    src: str | Path,
    dst: str | Path,
    options: AlignOptions | None = None,
    files: Iterable[str | Path] | None = None,
    detector: FaceDetector | None = None,
    batch_size: int = 32,
    progress: bool = True,
    landmarks: str | Path | None = None,
) -> Summary:
    """Align ``src/<identity>/<image>`` into ``dst`` with the same layout and file names.

    Args:
        src: the raw folder.
        dst: the aligned folder (created); its manifest makes a re-run skip finished files.
        options: how to align (default :class:`AlignOptions`).
        files: only these images (paths under ``src``, absolute or relative to it); default:
            every image file under ``src``.
        detector, batch_size, progress: as in :func:`align_files`.
        landmarks: a landmarks file (:mod:`facerec.align.landmarks`): its images are aligned
            with the landmarks given instead of detected.

    Raises:
        FileNotFoundError: ``src`` is not a folder.
        ValueError: ``dst`` is ``src`` or inside it (the crops would become inputs).
    """
    src, dst = Path(src).resolve(), Path(dst).resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"source folder not found (or not a folder): {src}")
    if dst == src or src in dst.parents:
        raise ValueError(f"the aligned folder {dst} must not be the source folder or inside it")
    others: list[Path] = []
    if files is None:
        paths, others = list_folder(src)
        if others:
            log.warning("align: %d files under %s are not images (%s) and were ignored, e.g. %s",
                        len(others), src, ", ".join(IMAGE_EXTENSIONS), others[0])  # fmt: skip
    else:
        paths = [p if Path(p).is_absolute() else src / p for p in files]
        paths = [Path(p).resolve() for p in paths]
    jobs = [(p, dst / p.relative_to(src)) for p in paths]
    given = GivenLandmarks(read_landmarks(landmarks), src) if landmarks else None
    return align_files(jobs, options or AlignOptions(), detector, dst, batch_size, progress,
                       None, given)  # fmt: skip
