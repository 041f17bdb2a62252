"""The IJB-B / IJB-C meta files as insightface's evaluation package lays them out, read strictly.

Under ``ROOT/<TARGET>/`` (``t`` = ``ijbc`` or ``ijbb``)::

    loose_crop/<image>                     the face crops
    meta/<t>_face_tid_mid.txt              image template_id media_id         (one row a face)
    meta/<t>_name_5pts_score.txt           image x1 y1 ... x5 y5 score        (same rows, order)
    meta/<t>_template_pair_label.txt       template1 template2 label          (1:1)
    meta/<t>_1N_gallery_G1.csv, _G2.csv    TEMPLATE_ID,SUBJECT_ID,...         (1:N; IJB-B: S1, S2)
    meta/<t>_1N_probe_mixed.csv

Every problem (a wrong column count, a value that does not parse, rows of the two face files
that name different images, a template no face belongs to, a missing image) is a
``ValueError`` / ``FileNotFoundError`` of one line, ``<file>:<line>: <what>``.
"""

from __future__ import annotations

import math
import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["TARGETS", "Faces", "IJBFiles", "check_images", "read_faces", "read_pairs",
           "read_subjects"]  # fmt: skip

# target -> (file prefix, the two galleries' suffixes)
TARGETS = {"IJBC": ("ijbc", ("G1", "G2")), "IJBB": ("ijbb", ("S1", "S2"))}


@dataclass(frozen=True)
class IJBFiles:
    """The paths of one target's files (nothing is read or checked here)."""

    target: str
    images: Path
    faces: Path
    landmarks: Path
    pairs: Path
    galleries: tuple[Path, Path]
    probes: Path

    @classmethod
    def under(cls, root: str | Path, target: str) -> IJBFiles:
        """The layout under ``root/<target>/`` (``target`` ``IJBC`` or ``IJBB``)."""
        if target not in TARGETS:
            raise ValueError(f"IJB target {target!r}: one of {', '.join(TARGETS)}")
        prefix, galleries = TARGETS[target]
        base = Path(root) / target
        meta = base / "meta"
        return cls(
            target=target,
            images=base / "loose_crop",
            faces=meta / f"{prefix}_face_tid_mid.txt",
            landmarks=meta / f"{prefix}_name_5pts_score.txt",
            pairs=meta / f"{prefix}_template_pair_label.txt",
            galleries=tuple(meta / f"{prefix}_1N_gallery_{g}.csv" for g in galleries),
            probes=meta / f"{prefix}_1N_probe_mixed.csv",
        )


@dataclass(frozen=True)
class Faces:
    """Every face of a target, in the files' row order.

    Attributes:
        names: ``n`` image paths relative to ``loose_crop``.
        landmarks: float32 ``(n, 5, 2)`` x, y of left eye, right eye, nose, mouth corners.
        scores: float32 ``(n,)`` detector scores.
        templates, medias: int64 ``(n,)``.
    """

    names: list[str]
    landmarks: np.ndarray
    scores: np.ndarray
    templates: np.ndarray
    medias: np.ndarray


def _rows(path: Path, columns: int, what: str, sep: str | None = None) -> Iterator[tuple]:
    """``(line number, fields)`` of each non-blank line, each with exactly ``columns`` fields."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            fields = [x.strip() for x in line.split(sep)] if sep else line.split()
            if not line.strip():
                continue
            if len(fields) != columns:
                raise ValueError(
                    f"{path}:{number}: {len(fields)} columns, expected {columns} ({what})"
                )
            yield number, fields


def _number(text: str, kind: type, path: Path, line: int, name: str):
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{path}:{line}: {name} {text[:40]!r} is not {kind.__name__}") from None
    if kind is float and not math.isfinite(value):
        raise ValueError(f"{path}:{line}: {name} {text[:40]!r} is not finite")
    return value


def read_faces(files: IJBFiles) -> Faces:
    """Both face files, checked row by row against each other.

    Raises:
        FileNotFoundError, ValueError: one line naming the file and line.
    """
    # compact C arrays, not lists of Python numbers: IJB-C's 469,375 rows stay ~30 MB
    names, landmarks, scores = [], array("d"), array("d")
    for line, fields in _rows(files.landmarks, 12, "image x1 y1 ... x5 y5 detector_score"):
        names.append(fields[0])
        landmarks.extend(_number(v, float, files.landmarks, line, "landmark") for v in fields[1:11])
        scores.append(_number(fields[11], float, files.landmarks, line, "detector score"))
    templates, medias, count = array("q"), array("q"), 0
    for line, (name, template, media) in _rows(files.faces, 3, "image template_id media_id"):
        if count >= len(names):
            raise ValueError(f"{files.faces}:{line}: more faces than {files.landmarks.name} has "
                             f"({len(names)})")  # fmt: skip
        if name != names[count]:
            raise ValueError(f"{files.faces}:{line}: image {name!r}, but row {count + 1} of "
                             f"{files.landmarks.name} is {names[count]!r}")  # fmt: skip
        templates.append(_number(template, int, files.faces, line, "template id"))
        medias.append(_number(media, int, files.faces, line, "media id"))
        count += 1
    if count != len(names) or not names:
        raise ValueError(f"{files.faces}: {count} faces, but {files.landmarks.name} has "
                         f"{len(names)}")  # fmt: skip
    return Faces(names, np.frombuffer(landmarks, np.float64).astype(np.float32).reshape(-1, 5, 2),
                 np.frombuffer(scores, np.float64).astype(np.float32),
                 np.frombuffer(templates, np.int64).copy(),
                 np.frombuffer(medias, np.int64).copy())  # fmt: skip


def check_images(files: IJBFiles, faces: Faces) -> None:
    """Every face's image exists under ``loose_crop`` (checked before any is embedded)."""
    for row, name in enumerate(faces.names):
        if not os.path.isfile(files.images / name):
            raise FileNotFoundError(f"{files.landmarks}:{_line_of_row(files.landmarks, row)}: "
                                    f"image {files.images / name} not found")  # fmt: skip


def _line_of_row(path: Path, row: int) -> int:
    """The line number of the ``row``-th (0-based) non-blank line."""
    with open(path, encoding="utf-8", errors="replace") as f:
        seen = -1
        for number, line in enumerate(f, 1):
            seen += bool(line.strip())
            if seen == row:
                return number
    return 0


def _unknown(path: Path, line: int, template: int, faces: Path) -> ValueError:
    return ValueError(f"{path}:{line}: template {template} has no face in {faces.name}")


def read_pairs(files: IJBFiles, known: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 1:1 pairs: int64 ``(P,)`` template ids twice and bool ``(P,)`` same-person labels.

    numpy's parser reads IJB-C's 15.7M rows in seconds; on any failure the file is scanned
    line by line for the message. ``known``: sorted template ids that have faces.
    """
    path = files.pairs
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    try:
        rows = np.loadtxt(path, dtype=np.int64, ndmin=2, comments=None)
    except ValueError:
        rows = None
    if rows is None or rows.shape[1] != 3:
        for line, fields in _rows(path, 3, "template1 template2 label"):
            for name, value in zip(("template id", "template id", "label"), fields, strict=True):
                _number(value, int, path, line, name)
        raise ValueError(f"{path}: not a table of integers (template1 template2 label)")
    if rows.shape[0] == 0:
        raise ValueError(f"{path}: no pairs")
    bad = np.flatnonzero((rows[:, 2] != 0) & (rows[:, 2] != 1))
    if bad.size:
        raise ValueError(f"{path}:{_line_of_row(path, int(bad[0]))}: label {rows[bad[0], 2]} "
                         "is not 0 or 1")  # fmt: skip
    for column in (0, 1):
        where = np.searchsorted(known, rows[:, column]).clip(0, len(known) - 1)
        bad = np.flatnonzero(known[where] != rows[:, column])
        if bad.size:
            line = _line_of_row(path, int(bad[0]))
            raise _unknown(path, line, int(rows[bad[0], column]), files.faces)
    return rows[:, 0].copy(), rows[:, 1].copy(), rows[:, 2] == 1


def read_subjects(path: Path, known: np.ndarray, faces: Path) -> tuple[np.ndarray, np.ndarray]:
    """A 1:N CSV (header ``TEMPLATE_ID,SUBJECT_ID,...``, one row per face) as its templates:
    int64 ``(k,)`` sorted template ids and each one's subject id.

    Raises:
        ValueError: one line naming the file and line (a template with two subjects, a
            template with no face in ``faces``, a malformed row).
    """
    header = path.open(encoding="utf-8", errors="replace").readline() if path.is_file() else ""
    names = [x.strip().upper() for x in header.split(",")]
    if path.is_file() and names[:2] != ["TEMPLATE_ID", "SUBJECT_ID"]:
        raise ValueError(f"{path}:1: header {header.strip()[:60]!r} does not start with "
                         "TEMPLATE_ID,SUBJECT_ID")  # fmt: skip
    subject_of: dict[int, int] = {}
    rows = _rows(path, len(names), f"the header's {len(names)}", sep=",")
    for line, fields in rows:
        if line == 1:
            continue
        template = _number(fields[0], int, path, line, "TEMPLATE_ID")
        subject = _number(fields[1], int, path, line, "SUBJECT_ID")
        if subject_of.setdefault(template, subject) != subject:
            raise ValueError(f"{path}:{line}: template {template} has subject {subject}, but "
                             f"{subject_of[template]} on an earlier row")  # fmt: skip
        i = int(np.searchsorted(known, template))
        if i >= len(known) or known[i] != template:
            raise _unknown(path, line, template, faces)
    if not subject_of:
        raise ValueError(f"{path}: no rows after the header")
    templates = np.array(sorted(subject_of), dtype=np.int64)
    return templates, np.array([subject_of[t] for t in templates], dtype=np.int64)
