"""Readers for the LFW protocol files (``pairs*.txt``, ``people*.txt``) with precise errors.

Formats (LFW README, section "Training, Validation, and Testing"):

* ``pairs.txt`` (View 2): header ``10 300`` (folds, pairs per kind per fold), then for each fold
  300 same-person lines ``name i j`` followed by 300 different-person lines
  ``name1 i name2 j``: 6,000 pairs.
* ``pairsDevTrain.txt`` / ``pairsDevTest.txt`` (View 1): header ``1100`` / ``500`` (pairs per
  kind), then that many same lines followed by as many different lines.
* ``peopleDevTrain.txt`` / ``peopleDevTest.txt``: header = number of people, then ``name count``.
* ``people.txt``: header = number of folds, then per fold a count line and that many
  ``name count`` lines.

Fields are separated by tabs or spaces; blank lines are ignored. Image ``i`` of ``name`` is
``<image_root>/<name>/<name>_<i:04d>.jpg``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["image_path", "read_pairs", "read_people", "read_people_folds"]

_MAX_MISSING_SHOWN = 5


def image_path(image_root: str | Path, name: str, index: int, ext: str = ".jpg") -> Path:
    """The LFW path of image ``index`` (1-based) of ``name``: ``root/name/name_0001.jpg``."""
    return Path(image_root) / name / f"{name}_{index:04d}{ext}"


def _lines(path: Path, kind: str) -> list[tuple[int, str]]:
    """Non-blank lines of ``path`` as ``(1-based line number, stripped text)``."""
    if not path.is_file():
        raise FileNotFoundError(f"{kind} file not found: {path}")
    with path.open(encoding="utf-8") as f:
        lines = [(n, line.strip()) for n, line in enumerate(f, start=1)]
    return [(n, text) for n, text in lines if text]


def _int_or_none(token: str) -> int | None:
    try:
        return int(token)
    except ValueError:
        return None


def _positive(token: str) -> bool:
    value = _int_or_none(token)
    return value is not None and value >= 1


def read_pairs(
    pairs_file: str | Path, image_root: str | Path, ext: str = ".jpg"
) -> tuple[list[tuple[Path, Path]], np.ndarray]:
    """Read an LFW-format pairs file and check that every image it names exists.

    The header line is optional. ``F N`` (``pairs.txt``) promises ``2 * F * N`` pairs and ``N``
    (``pairsDev*.txt``) promises ``2 * N``; when present, the number of pairs must match it.
    Pair order is exactly the file's, so :func:`facerec.eval.make_folds` recovers the folds.

    Args:
        pairs_file: the pairs file.
        image_root: folder holding one sub-folder per person (e.g. ``lfw-deepfunneled``).
        ext: image file extension.

    Returns:
        ``(paths, issame)``: a list of N ``(path1, path2)`` tuples and an ``(N,)`` bool array,
        True for ``name i j`` (same person) lines.

    Raises:
        FileNotFoundError: the pairs file or image root does not exist, or images are missing
            (the message gives the count and the first few, with their line numbers).
        ValueError: the file holds no pairs, a line is malformed (file, line number and the line
            are shown), or the header's count disagrees with the lines.
    """
    pairs_file, image_root = Path(pairs_file), Path(image_root)
    expected, lines = _pairs_header(pairs_file, _lines(pairs_file, "pairs"))
    if not lines:
        raise ValueError(f"{pairs_file}: contains no pairs")

    paths: list[tuple[Path, Path]] = []
    issame: list[bool] = []
    for line_no, text in lines:
        name1, i, name2, j = _pair_line(pairs_file, line_no, text)
        paths.append((image_path(image_root, name1, i, ext), image_path(image_root, name2, j, ext)))
        issame.append(name1 == name2)  # only a 3-field line may name one person twice

    if expected is not None and expected != len(paths):
        raise ValueError(
            f"{pairs_file}: the header promises {expected} pairs but the file has {len(paths)} "
            f"(truncated or wrong file?)"
        )
    _check_images(pairs_file, image_root, [n for n, _ in lines], paths)
    return paths, np.array(issame, dtype=bool)


def _pairs_header(
    pairs_file: Path, lines: list[tuple[int, str]]
) -> tuple[int | None, list[tuple[int, str]]]:
    """``(pairs the header promises or None, the lines after it)``: a first line of integers
    only is the header, ``F N`` or ``N``."""
    first_tokens = lines[0][1].split() if lines else []
    if not first_tokens or any(_int_or_none(t) is None for t in first_tokens):
        return None, lines
    header_no, header = lines[0]
    counts = [int(t) for t in first_tokens]
    if len(counts) not in (1, 2) or min(counts) < 1:
        raise ValueError(
            f"{pairs_file}:{header_no}: expected a header 'n_folds pairs_per_fold' or "
            f"'pairs_per_kind', got {header!r}"
        )
    return 2 * int(np.prod(counts)), lines[1:]


def _pair_line(pairs_file: Path, line_no: int, text: str) -> tuple[str, int, str, int]:
    """``(name1, i, name2, j)`` of one pair line, ``name1 == name2`` for ``name i j``."""
    tokens = text.split()
    if len(tokens) == 3 and _positive(tokens[1]) and _positive(tokens[2]):
        return tokens[0], int(tokens[1]), tokens[0], int(tokens[2])
    if len(tokens) == 4 and _positive(tokens[1]) and _positive(tokens[3]):
        if tokens[0] == tokens[2]:
            raise ValueError(
                f"{pairs_file}:{line_no}: a 4-field line is a different-person pair but names "
                f"{tokens[0]!r} twice: {text!r}"
            )
        return tokens[0], int(tokens[1]), tokens[2], int(tokens[3])
    raise ValueError(
        f"{pairs_file}:{line_no}: malformed pair line {text!r}; expected 'name i j' "
        f"(same person) or 'name1 i name2 j' (different people), i and j positive "
        f"integers"
    )


def _check_images(
    pairs_file: Path, image_root: Path, line_of: list[int], paths: list[tuple[Path, Path]]
) -> None:
    """Raise FileNotFoundError naming the first few missing images and their pairs lines."""
    if not image_root.is_dir():
        raise FileNotFoundError(f"image root not found (or not a folder): {image_root}")
    missing: dict[Path, int] = {}
    for line_no, pair in zip(line_of, paths, strict=True):
        for p in pair:
            if p not in missing and not p.is_file():
                missing[p] = line_no
    if missing:
        shown = "\n".join(f"  line {n}: {p}" for p, n in list(missing.items())[:_MAX_MISSING_SHOWN])
        more = len(missing) - _MAX_MISSING_SHOWN
        raise FileNotFoundError(
            f"{pairs_file}: {len(missing)} image(s) named by the pairs are missing under "
            f"{image_root}:\n{shown}" + (f"\n  ... and {more} more" if more > 0 else "")
        )


def read_people_folds(people_file: str | Path) -> list[dict[str, int]]:
    """Read an LFW people file into one ``{name: image count}`` dict per fold.

    Two layouts are supported and told apart by the second line:

    * ``peopleDevTrain.txt`` / ``peopleDevTest.txt``: ``count`` then ``count`` lines ``name n``
      (one fold).
    * ``people.txt``: ``n_folds``, then per fold a ``count`` line and ``count`` lines ``name n``.

    Args:
        people_file: the people file.

    Returns:
        A list with one dict per fold, in file order (insertion order kept within each).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is empty, a line is malformed, a count disagrees with the lines that
            follow, or a name is listed twice (messages give the file and line number).
    """
    people_file = Path(people_file)
    lines = _lines(people_file, "people")
    if not lines:
        raise ValueError(f"{people_file}: is empty")

    first = _count_line(people_file, lines[0])
    multi_fold = len(lines) > 1 and len(lines[1][1].split()) == 1
    n_blocks = first if multi_fold else 1
    k = 1
    folds: list[dict[str, int]] = []
    seen: dict[str, int] = {}  # name -> the line that listed it, across folds
    for _ in range(n_blocks):
        if multi_fold:
            if k >= len(lines):
                raise ValueError(
                    f"{people_file}: the header promises {n_blocks} folds, the file has "
                    f"{len(folds)}"
                )
            n_people, k = _count_line(people_file, lines[k]), k + 1
        else:
            n_people = first
        fold = _people_block(people_file, lines[k : k + n_people], n_people, seen)
        folds.append(fold)
        k += n_people
    if k < len(lines):
        line_no, text = lines[k]
        raise ValueError(
            f"{people_file}:{line_no}: unexpected line {text!r} after the promised "
            f"{sum(map(len, folds))} people (wrong count in a header?)"
        )
    return folds


def _count_line(people_file: Path, line: tuple[int, str]) -> int:
    """The non-negative integer alone on a header or fold-count line."""
    line_no, text = line
    tokens = text.split()
    if len(tokens) != 1 or _int_or_none(tokens[0]) is None or int(tokens[0]) < 0:
        raise ValueError(f"{people_file}:{line_no}: expected a count, got {text!r}")
    return int(tokens[0])


def _people_block(
    people_file: Path, lines: list[tuple[int, str]], n_people: int, seen: dict[str, int]
) -> dict[str, int]:
    """One fold's ``{name: count}`` from its ``name n`` lines; records each name in ``seen``."""
    fold: dict[str, int] = {}
    for line_no, text in lines:
        tokens = text.split()
        if len(tokens) != 2 or not _positive(tokens[1]):
            raise ValueError(
                f"{people_file}:{line_no}: malformed people line {text!r}; expected "
                f"'name n_images' with n_images a positive integer"
            )
        if tokens[0] in seen:
            raise ValueError(
                f"{people_file}:{line_no}: {tokens[0]!r} is already listed on line "
                f"{seen[tokens[0]]}"
            )
        seen[tokens[0]] = line_no
        fold[tokens[0]] = int(tokens[1])
    if len(fold) < n_people:
        raise ValueError(
            f"{people_file}: ended early: a count line promised {n_people} people, "
            f"found {len(fold)}"
        )
    return fold


def read_people(people_file: str | Path) -> dict[str, int]:
    """Read an LFW people file into ``{name: image count}`` (all folds merged, file order).

    See :func:`read_people_folds` for the supported layouts and errors.
    """
    merged: dict[str, int] = {}
    for fold in read_people_folds(people_file):
        merged.update(fold)
    return merged
