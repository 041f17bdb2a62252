"""Five landmarks per image given in a file, used instead of detecting (``--landmarks FILE``).

Two layouts, told apart by the file's first line:

- CSV (a comma in the first line): ``image,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5``, an optional header
  row (its second field is not a number), more columns after the ten ignored;
- whitespace text, insightface's ``*_name_5pts_score.txt`` (IJB-B/C meta files):
  ``image x1 y1 ... x5 y5 [score]``.

Points are pixels of the image as stored, in the ArcFace template's order: left eye, right eye,
nose tip, left and right mouth corner ("left" = the image's left). ``image`` is the path
relative to the aligned folder's source (``person/photo.jpg``) or a bare file name, which
matches a file of that name anywhere below it when only one has it.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np

__all__ = ["GivenLandmarks", "parse_landmarks", "read_landmarks"]


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_landmarks(lines: list[str], what: str = "landmarks") -> dict[str, np.ndarray]:
    """``{image: float64 (5, 2)}`` from the lines of a landmarks file.

    Raises:
        ValueError: one line naming ``what``, the line number and what is wrong with it.
    """
    comma = bool(lines) and "," in lines[0]
    rows = csv.reader(lines) if comma else (line.split() for line in lines)
    points: dict[str, np.ndarray] = {}
    for number, row in enumerate(rows, 1):
        row = [field.strip() for field in row]
        if not row or not row[0] or row[0].startswith("#"):
            continue
        if number == 1 and len(row) > 1 and not _number(row[1]):
            continue  # a header row
        if len(row) < 11 or not all(_number(v) for v in row[1:11]):
            raise ValueError(f"{what}:{number}: expected 'image x1 y1 ... x5 y5' (an image and"
                             f" 10 numbers), got {' '.join(row)[:80]!r}")  # fmt: skip
        values = np.array([float(v) for v in row[1:11]], dtype=np.float64).reshape(5, 2)
        if not np.isfinite(values).all():
            raise ValueError(f"{what}:{number}: landmarks must be finite numbers")
        points[row[0]] = values
    return points


def read_landmarks(path: str | Path) -> dict[str, np.ndarray]:
    """Parse a landmarks file (see the module's docstring); errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the landmarks file: {error}") from None
    return parse_landmarks(text.splitlines(), str(path))


class GivenLandmarks:
    """The landmarks of a file, looked up by an image's path under a source folder.

    Args:
        points: ``{image: (5, 2)}`` as :func:`read_landmarks` gives.
        root: the folder the images' relative paths start from (None: absolute paths and bare
            names only).
    """

    def __init__(self, points: dict[str, np.ndarray], root: Path | None = None) -> None:
        self.points = points
        self.root = root
        names: dict[str, list[str]] = {}
        for key in points:
            names.setdefault(Path(key).name, []).append(key)
        # A bare name is usable only when it names one entry.
        self.by_name = {name: keys[0] for name, keys in names.items() if len(keys) == 1}
        digest = hashlib.sha1()
        for key in sorted(points):
            digest.update(key.encode() + points[key].tobytes())
        self.key = digest.hexdigest()[:8]  # joins the cache key: other landmarks, other crops

    def get(self, path: Path) -> np.ndarray | None:
        """The ``(5, 2)`` landmarks of the image at ``path``, or None when the file lacks it."""
        keys = [str(path)]
        if self.root is not None and self.root in path.parents:
            keys.insert(0, path.relative_to(self.root).as_posix())
        for key in keys:
            if key in self.points:
                return self.points[key]
        key = self.by_name.get(path.name)
        return self.points[key] if key is not None else None
