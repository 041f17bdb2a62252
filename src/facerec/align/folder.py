"""Align many image files: detect in batches, warp, write, remember what was done.

``align_files`` is the one loop behind ``scripts/align.py``, ``pack_dataset.py --align`` and
the LFW data config's ``align``: every file ends in exactly one :class:`Summary` bucket, bad
input is named in one line and counted, and nothing stops the run over a folder. A manifest
in the output folder records, per source file, its size, mtime and the options' key, so a
second run re-aligns only what changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from facerec.align.detect import Face, FaceDetector
from facerec.align.landmarks import GivenLandmarks, read_landmarks
from facerec.align.search import SEARCH_STEPS, search
from facerec.align.transform import warp_face
from facerec.data.decode import read_image
from facerec.data.folder import IMAGE_EXTENSIONS
from facerec.files.jsonfile import read_json

__all__ = ["MANIFEST", "ON_MISSING", "AlignOptions", "Summary", "align_files", "align_folder",
           "align_image", "fallback", "find_faces"]  # fmt: skip

log = logging.getLogger("facerec.align")

MANIFEST = ".facerec-align.json"
# Outcomes; the first three write a crop.
ALIGNED, WHOLE, CENTERED, NO_FACE, TOO_SMALL, UNREADABLE = (
    "aligned", "whole", "center_crop", "no_face", "too_small", "unreadable",
)  # fmt: skip
WRITTEN = (ALIGNED, WHOLE, CENTERED)
FALLBACKS = (WHOLE, CENTERED, NO_FACE)
# Options added after checkpoints stored AlignOptions (see AlignOptions.as_dict).
_LATER_FIELDS = ("crop_score", "search")
# --on-missing choices: what a file with no face found becomes.
ON_MISSING = ("auto", "whole", "center", "skip")


@dataclass(frozen=True)
class AlignOptions:
    """How to align; :attr:`key` names them in caches and checkpoints.

    Attributes:
        size: side of the output crop (the ArcFace template is scaled from 112).
        select: several faces: keep the ``"largest"`` or the one nearest the ``"center"``.
        on_missing: no face found: ``"auto"`` resizes a photo that is already a face crop
            whole (see :meth:`facerec.align.detect.FaceDetector.crop_scores`) and centre-crops
            any other; ``"whole"`` or ``"center"`` (the default) does that to every such file;
            ``"skip"`` writes nothing. Counted and named per file either way.
        fallback_crop: side of that centre crop as a fraction of the image's shorter side
            (0.6 = LFW's usual 150 of 250 px).
        crop_score: O-Net score of the whole image from which ``"auto"`` takes it for a face
            crop.
        search: where to look again when the plain detection finds nothing, in order (names
            of :data:`facerec.align.search.SEARCH_STEPS`; empty: nowhere).
        min_face: smallest face side (px, in the detection image) MTCNN looks for.
        max_side: images with a longer side are shrunk to it for detection only (the crop is
            cut from the full image): a 6000 px photo costs no more than a 1280 px one.
        min_side: images with a shorter side than this are reported as too small.
    """

    size: int = 112
    select: str = "largest"
    # "center" by default here: checkpoints and exported folders store these options, and
    # their readers accept "skip" and "center"; the command line defaults to "auto".
    on_missing: str = "center"
    fallback_crop: float = 0.6
    crop_score: float = 0.8
    search: tuple[str, ...] = ("pad", "enhance", "small", "rotate")
    min_face: int = 20
    max_side: int = 1280
    min_side: int = 32

    def __post_init__(self) -> None:
        if self.select not in ("largest", "center"):
            raise ValueError(f"align select must be 'largest' or 'center', got {self.select!r}")
        if self.on_missing not in ON_MISSING:
            raise ValueError(
                f"align on_missing must be one of {ON_MISSING}, got {self.on_missing!r}"
            )
        object.__setattr__(self, "search", tuple(self.search))  # a config's list
        unknown = [step for step in self.search if step not in SEARCH_STEPS]
        if unknown:
            raise ValueError(f"unknown align search step(s) {unknown}; valid: {list(SEARCH_STEPS)}")
        if self.size < 16 or not 0 < self.fallback_crop <= 1 or self.max_side < self.min_side:
            raise ValueError(f"impossible align options: {self}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> AlignOptions:
        """From a config mapping; unknown keys are an error naming the valid ones."""
        values = dict(values or {})
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            valid = list(cls.__dataclass_fields__)
            raise ValueError(f"unknown align option(s) {sorted(unknown)}; valid: {valid}")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """The fields as plain JSON types. The fields added after checkpoints began to store
        these options are left out while they hold their defaults, so readers that predate
        them read what this version writes."""
        values = asdict(self)
        for name in _LATER_FIELDS:
            if values[name] == self.__dataclass_fields__[name].default:
                del values[name]
        if "search" in values:
            values["search"] = list(values["search"])
        return values

    @property
    def key(self) -> str:
        """8 hex digits that change with any option (and with the method's version)."""
        text = json.dumps({"method": "mtcnn-umeyama-arcface/2", **self.as_dict()}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:8]


@dataclass
class Summary:
    """What a run did: every input file is in exactly one of the outcome lists.

    ``cached`` counts the files whose outcome was read from the manifest instead of redone;
    ``found_by`` how the aligned faces were found (``detect``: the plain detection, a search
    step's name, ``given``: a landmarks file); ``look_cropped`` how many files without a face
    looked like face crops already (whatever ``on_missing`` made of them).
    """

    aligned: list[str] = field(default_factory=list)
    whole: list[str] = field(default_factory=list)
    center_crop: list[str] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)
    too_small: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    several_faces: int = 0
    cached: int = 0
    look_cropped: int = 0
    found_by: dict[str, int] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # file -> its one-line message

    @property
    def total(self) -> int:
        return sum(len(getattr(self, k)) for k in (*WRITTEN, NO_FACE, TOO_SMALL, UNREADABLE))

    @property
    def missing(self) -> list[str]:
        """Files with no output crop."""
        return self.no_face + self.too_small + self.unreadable

    def add(self, path: str, outcome: str, message: str | None = None, how: str = "") -> None:
        """Count one file; ``how``: the face's source (aligned) or ``"cropped"`` (a fallback
        that looked like a face crop)."""
        getattr(self, outcome).append(path)
        if message:
            self.problems[path] = message
        if outcome == ALIGNED:
            self.found_by[how or "detect"] = self.found_by.get(how or "detect", 0) + 1
        self.look_cropped += how == "cropped"

    def fallbacks(self) -> dict[str, str]:
        """``{file: what it became}`` for every file without a face found: ``whole``,
        ``center_crop`` or ``no_face`` (a tool's JSON names the fallback per image)."""
        return {path: kind for kind in FALLBACKS for path in getattr(self, kind)}

    def as_json(self) -> dict[str, Any]:
        """Everything in plain JSON types: the outcome lists, counts, fallbacks, advice."""
        return {"several_faces": self.several_faces, "cached": self.cached,
                **{kind: getattr(self, kind) for kind in (*WRITTEN, NO_FACE, TOO_SMALL,
                                                          UNREADABLE)},
                "found_by": self.found_by, "look_cropped": self.look_cropped,
                "fallback": self.fallbacks(), "advice": self.advice(),
                "problems": self.problems}  # fmt: skip

    def advice(self) -> str | None:
        """One loud line when most readable files had no face found, naming the option that
        fits what they look like; None otherwise."""
        fallen = sum(len(getattr(self, kind)) for kind in FALLBACKS)
        readable = fallen + len(self.aligned)
        if not fallen or fallen * 2 <= readable:
            return None
        head = f"WARNING: no face found in {fallen} of {readable} images ({fallen / readable:.0%})"
        if self.look_cropped * 2 > fallen:
            return (f"{head}; {self.look_cropped} of them look like face crops already: if the"
                    " folder holds cropped faces, use --on-missing whole (resize each image"
                    " whole), or give their landmarks with --landmarks FILE")  # fmt: skip
        return (f"{head}, and most do not look like face crops: check the folder, give"
                " landmarks with --landmarks FILE, or use --on-missing skip to keep only the"
                " faces found")  # fmt: skip

    def lines(self, examples: int = 5) -> list[str]:
        """A short human report: the counts, then the first few files of each problem."""
        head = (
            f"{self.total} images: {len(self.aligned)} aligned, {len(self.center_crop)} without"
            f" a detected face centre-cropped, {len(self.whole)} resized whole (face crops),"
            f" {len(self.no_face)} without a face skipped,"
            f" {len(self.too_small)} too small, {len(self.unreadable)} unreadable"
            f" ({self.several_faces} with several faces, {self.cached} from the cache)"
        )
        found = ", ".join(f"{how} {n}" for how, n in sorted(self.found_by.items()))
        out = [head, f"  faces found by: {found}"] if found else [head]
        for kind in ("whole", "center_crop", "no_face", "too_small", "unreadable"):
            files = getattr(self, kind)
            for path in files[:examples]:
                out.append(f"  {kind}: {self.problems.get(path, path)}")
            if len(files) > examples:
                out.append(f"  {kind}: ... and {len(files) - examples} more")
        advice = self.advice()
        return [*out, advice] if advice else out


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
    crop, outcome, count, _ = _crop(image, faces, scale, options, detector)
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


def _crop(
    image: np.ndarray, faces: list, scale: float, options: AlignOptions, detector: FaceDetector
) -> tuple[np.ndarray | None, str, int, bool]:
    if not faces:
        crop, outcome, looks_cropped = fallback(image, detector, options)
        return crop, outcome, 0, looks_cropped
    crop, _ = warp_face(image, faces[0].landmarks / scale, options.size)  # the chosen face
    return crop, ALIGNED, len(faces), False


def write_image(path: Path, image: np.ndarray) -> None:
    """Write RGB uint8 ``(H, W, 3)`` in the format of ``path``'s extension, atomically."""
    ext = path.suffix.lower() or ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
    ok, data = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OSError(f"{path}: OpenCV cannot write {ext} images")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.tobytes())
    os.replace(tmp, path)


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


class _Manifest:
    """``dst/.facerec-align.json``: ``{"key", "options", "files": {src: [size, mtime, outcome,
    message, faces, how]}}``. Entries made with other options (or other given landmarks: their
    hash joins the key) are ignored (and replaced)."""

    def __init__(self, root: Path | None, options: AlignOptions, given: str = "") -> None:
        self.path = root / MANIFEST if root is not None else None
        self.key = options.key + (f"-{given}" if given else "")
        self.options = options.as_dict()
        self.files: dict[str, list] = {}
        if self.path is not None and self.path.is_file():
            try:  # a manifest lists every aligned file: large for a large dataset
                data = read_json(self.path, "align manifest", max_bytes=2**31)
                if data.get("key") == self.key:
                    self.files = dict(data.get("files", {}))
            except (OSError, ValueError, TypeError):
                log.warning("align: %s is not readable; re-aligning everything", self.path)

    def lookup(self, src: Path, dst: Path | None) -> tuple[str, str | None, int, str] | None:
        entry = self.files.get(str(src))
        try:
            if entry is None or entry[:2] != _stamp(src):
                return None
        except OSError:
            return None
        if entry[2] in WRITTEN and (dst is None or not dst.is_file()):
            return None
        faces, how = [*entry[4:6], 0, ""][:2]
        return entry[2], entry[3], int(faces), str(how or "")

    def record(self, src: Path, outcome: str, message: str | None, faces: int, how: str) -> None:
        with contextlib.suppress(OSError):  # vanished meanwhile: nothing to remember
            self.files[str(src)] = [*_stamp(src), outcome, message, faces, how]

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        record = {"key": self.key, "options": self.options, "files": self.files}
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.path)


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
        self.manifest = _Manifest(manifest_root, options, given.key if given else "")
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
            crop, outcome, count, looks_cropped = _crop(image, faces, scale, self.options,
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
