#!/usr/bin/env python
"""Hard photos made from LFW, with known landmarks, and how well the aligner finds their faces.

    # 1. build the sets: 200 LFW images, each degraded 9 ways (never into the repository)
    python scripts/hard_faces.py make --lfw ../shared/data/lfw --out /tmp/hard --n 200
    # 2. measure: the plain detection ("--search ''") against the default search, same run
    python scripts/hard_faces.py measure /tmp/hard --search '' --search pad,enhance,small,rotate

The true landmarks of each degraded copy are the aligner's landmarks on the original LFW image
(MTCNN, the largest face) carried through the degradation's geometry, so they are exact for
the geometry and as good as MTCNN on a clean photo. Sets (``DEGRADATIONS``):

- ``original``: LFW as it is (250x250, the face in the middle ~40%).
- ``tight``: the face box with each side moved out or in by 0-10% of its size (a pre-cropped
  dataset: the face fills the frame and touches the border).
- ``dark``: gamma 2-4 (a photo in bad light) plus Gaussian noise (sigma 2-5).
- ``low_contrast``: contrast x0.2-0.5 about the mean, plus noise.
- ``small``: shrunk 4-8x and pasted at a random place of a 1000x1000 textured canvas.
- ``rot15`` / ``rot30`` / ``rot60``: turned by +-15, +-30, +-60 degrees (sign at random) on a
  canvas large enough to keep every pixel.
- ``grey``: one channel.

Each set is a folder of JPEGs (quality 95) and ``landmarks.csv`` in the format of
``facerec align --landmarks`` (``image,x1,y1,...,x5,y5``). ``measure`` prints per set and per
search: the fraction of images with a face found, the landmark error (mean distance of the 5
points from the truth, in pixels of the 112x112 aligned frame: median and 90th percentile over
the images found) and the time per image; and the time ratio against the first ``--search``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from facerec.align.detect import Face, FaceDetector, choose_face
from facerec.align.image import find_faces
from facerec.align.landmarks import read_landmarks
from facerec.align.options import AlignOptions
from facerec.align.transform import template, umeyama
from facerec.data.decode import read_image

Degradation = Callable[[np.ndarray, Face, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def _affine(image: np.ndarray, face: Face, matrix: np.ndarray, size: tuple[int, int]):
    out = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_AREA, borderValue=(0, 0, 0))
    return out, face.landmarks @ matrix[:, :2].T + matrix[:, 2]


def tight(image: np.ndarray, face: Face, rng: np.random.Generator):
    """The face box, each side moved by -10..+10% of the box's size."""
    x1, y1, x2, y2 = face.box
    w, h = x2 - x1, y2 - y1
    dx1, dx2 = rng.uniform(-0.1, 0.1, 2) * w
    dy1, dy2 = rng.uniform(-0.1, 0.1, 2) * h
    left, top = round(x1 - dx1), round(y1 - dy1)
    right, bottom = round(x2 + dx2), round(y2 + dy2)
    matrix = np.array([[1.0, 0.0, -left], [0.0, 1.0, -top]])
    return _affine(image, face, matrix, (right - left, bottom - top))


def _noise(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    noisy = image.astype(np.float32) + rng.normal(0, sigma, image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def dark(image: np.ndarray, face: Face, rng: np.random.Generator):
    """Gamma 2-4 and noise: shadows go to black, the face to a dim grey."""
    gamma = rng.uniform(2, 4)
    darker = 255.0 * (image / 255.0) ** gamma
    return _noise(darker.astype(np.uint8), rng, rng.uniform(2, 5)), face.landmarks


def low_contrast(image: np.ndarray, face: Face, rng: np.random.Generator):
    """Contrast x0.2-0.5 about the image mean, and noise."""
    mean = image.mean()
    flat = mean + (image - mean) * rng.uniform(0.2, 0.5)
    return _noise(flat.astype(np.uint8), rng, rng.uniform(1, 3)), face.landmarks


def small(image: np.ndarray, face: Face, rng: np.random.Generator):
    """Shrunk 4-8x onto a 1000x1000 canvas of smooth random texture, at a random place."""
    factor = 1.0 / rng.uniform(4, 8)
    canvas = cv2.resize(rng.uniform(40, 215, (8, 8, 3)).astype(np.uint8), (1000, 1000),
                        interpolation=cv2.INTER_CUBIC)  # fmt: skip
    side = round(image.shape[1] * factor), round(image.shape[0] * factor)
    tx, ty = rng.uniform(0, 1000 - side[0]), rng.uniform(0, 1000 - side[1])
    matrix = np.array([[factor, 0.0, tx], [0.0, factor, ty]])
    out = cv2.warpAffine(image, matrix, (1000, 1000), dst=canvas, flags=cv2.INTER_AREA,
                         borderMode=cv2.BORDER_TRANSPARENT)  # fmt: skip
    return out, face.landmarks @ matrix[:, :2].T + matrix[:, 2]


def rotation(degrees: float) -> Degradation:
    """Turned by +-``degrees`` about the centre onto a canvas that keeps every pixel."""

    def rotate(image: np.ndarray, face: Face, rng: np.random.Generator):
        angle = degrees * rng.choice([-1.0, 1.0])
        h, w = image.shape[:2]
        side = int(np.ceil(np.hypot(h, w)))
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        matrix[:, 2] += ((side - w) / 2, (side - h) / 2)
        out = cv2.warpAffine(image, matrix, (side, side), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        return out, face.landmarks @ matrix[:, :2].T + matrix[:, 2]

    return rotate


def grey(image: np.ndarray, face: Face, rng: np.random.Generator):
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), face.landmarks


def tight_dark(image: np.ndarray, face: Face, rng: np.random.Generator):
    """A tight crop, in grey, in bad light: the pre-cropped datasets of the issue."""
    image, points = tight(image, face, rng)
    image, _ = dark(image, face, rng)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), points


def background(image: np.ndarray, face: Face, rng: np.random.Generator):
    """No face: the largest corner of the image beside the face box, for the face-crop score
    (its landmarks are the face's, outside the image: never found, never scored)."""
    x1, y1, x2, _ = face.box.round().astype(int)
    h, w = image.shape[:2]
    corners = [(0, 0, max(x1, 8), h), (min(x2, w - 8), 0, w, h), (0, 0, w, max(y1, 8))]
    left, top, right, bottom = max(corners, key=lambda c: (c[2] - c[0]) * (c[3] - c[1]))
    return image[top:bottom, left:right].copy(), face.landmarks - (left, top)


DEGRADATIONS: dict[str, Degradation] = {
    "original": lambda image, face, rng: (image, face.landmarks),
    "tight": tight,
    "dark": dark,
    "low_contrast": low_contrast,
    "small": small,
    "rot15": rotation(15),
    "rot30": rotation(30),
    "rot60": rotation(60),
    "grey": grey,
    "tight_dark": tight_dark,
    "background": background,
}
# Sets without a face to find: left out of the detection table, scored as non-crops.
NO_FACE_SETS = ("background",)


def truth(image: np.ndarray, detector: FaceDetector) -> Face | None:
    """The aligner's face on a clean image (the plain detection, the largest face)."""
    faces = detector.detect([image])[0]
    return choose_face(faces, image.shape) if faces else None


def write_jpeg(path: Path, image: np.ndarray) -> None:
    """An RGB ``(H, W, 3)`` or grey ``(H, W)`` uint8 image as a JPEG of quality 95."""
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f"{path}: could not be written")


def write_set(folder: Path, rows: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    """``folder/<name>`` JPEGs and ``folder/landmarks.csv`` for ``(name, image, (5, 2))``."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "landmarks.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["image", *(f"{a}{i}" for i in range(1, 6) for a in "xy")])
        for name, image, points in rows:
            write_jpeg(folder / name, image)
            out.writerow([name, *(f"{v:.2f}" for v in points.reshape(-1))])


def make_sets(sources: list[Path], out: Path, detector: FaceDetector, seed: int = 0,
              sets: list[str] | None = None) -> int:  # fmt: skip
    """Degrade each source image every way of ``sets`` (default: all) into ``out/<set>/``.

    Returns:
        How many sources had a face to carry over (the others are left out of every set).
    """
    rng = np.random.default_rng(seed)
    names = sets or list(DEGRADATIONS)
    rows: dict[str, list] = {name: [] for name in names}
    kept = 0
    for i, path in enumerate(sources):
        image = read_image(path)
        face = truth(image, detector)
        if face is None:
            continue
        kept += 1
        for name in names:
            degraded, points = DEGRADATIONS[name](image, face, rng)
            rows[name].append((f"{i:05d}_{path.stem}.jpg", degraded, points))
    for name in names:
        write_set(out / name, rows[name])
    return kept


def frame_error(found: np.ndarray, true: np.ndarray) -> float:
    """Mean distance of the 5 points from the truth, in pixels of the 112x112 frame the true
    landmarks align to."""
    matrix = umeyama(true, template())
    moved = lambda p: p @ matrix[:, :2].T + matrix[:, 2]  # noqa: E731
    return float(np.linalg.norm(moved(found) - moved(true), axis=1).mean())


def measure_set(folder: Path, detector: FaceDetector, options: AlignOptions, limit: int = 0
                ) -> dict[str, float | str]:  # fmt: skip
    """Found fraction, the fraction found where the face is (landmarks within
    :data:`OTHER_FACE` px), landmark error (median, 90th percentile over the found), ms per
    image and how the faces were found, of one set (its first ``limit`` images; 0: all)."""
    points = read_landmarks(folder / "landmarks.csv")
    points = dict(list(points.items())[: limit or None])
    errors, seconds, ways = [], 0.0, Counter()
    for name, true in points.items():
        image = read_image(folder / name)
        start = time.perf_counter()
        faces, scale, how = find_faces(image, detector, options)
        seconds += time.perf_counter() - start
        ways[how or "missed"] += 1
        if faces:  # the chosen face first
            errors.append(frame_error(faces[0].landmarks / scale, true))
    n = max(len(points), 1)
    right = sum(e < OTHER_FACE for e in errors)
    return {"n": len(points), "found": len(errors) / n, "right": right / n,
            "median": float(np.median(errors)) if errors else float("nan"),
            "p90": float(np.percentile(errors, 90)) if errors else float("nan"),
            "ms": 1000 * seconds / n,
            "how": " ".join(f"{k}:{v}" for k, v in ways.most_common())}  # fmt: skip


def measure(root: Path, searches: list[str], detector: FaceDetector, limit: int = 0,
            sets: list[str] | None = None) -> None:  # fmt: skip
    """Print one table row per set and search; time ratios against the first search."""
    sets = [n for n in sets or DEGRADATIONS if (root / n / "landmarks.csv").is_file()]
    sets = [n for n in sets if n not in NO_FACE_SETS]
    print(f"{'set':<13} {'search':<26} {'n':>4} {'found':>7} {'right':>7} {'median px':>9}"
          f" {'p90 px':>7}"
          f" {'ms/img':>7} {'x time':>6}  found by")  # fmt: skip
    for name in sets:
        base = None
        for search in searches:
            steps = tuple(s for s in search.split(",") if s)
            row = measure_set(root / name, detector, AlignOptions(search=steps), limit)
            base = base or row["ms"]
            print(f"{name:<13} {search or '(none)':<26} {row['n']:>4} {row['found']:>7.1%}"
                  f" {row['right']:>7.1%} {row['median']:>9.2f} {row['p90']:>7.2f}"
                  f" {row['ms']:>7.0f}"
                  f" {row['ms'] / base:>6.2f}  {row['how']}")  # fmt: skip


def crop_table(root: Path, detector: FaceDetector, limit: int = 0,
               thresholds: tuple[float, ...] = (0.5, 0.8, 0.9, 0.97)) -> None:  # fmt: skip
    """Per set: how many whole images the face-crop score takes for face crops at each
    threshold (``on_missing=auto`` resizes those whole instead of centre-cropping them)."""
    columns = " ".join(f"{'>=' + str(t):>7}" for t in thresholds)
    print(f"{'set':<13} {'n':>4} {'median score':>12} {columns}")
    for name in DEGRADATIONS:
        if not (root / name / "landmarks.csv").is_file():
            continue
        files = list(read_landmarks(root / name / "landmarks.csv"))[: limit or None]
        scores = detector.crop_scores([read_image(root / name / f) for f in files])
        shares = " ".join(f"{(scores >= t).mean():>7.1%}" for t in thresholds)
        print(f"{name:<13} {len(files):>4} {np.median(scores):>12.3f} {shares}")


BEFORE = AlignOptions(search=(), on_missing="center")  # the aligner before the search
# An error above this (px, 112 frame) is another face of the photo, not this one misplaced.
OTHER_FACE = 20.0


def _tile(image: np.ndarray, label: str, side: int = 112) -> np.ndarray:
    """``image`` fitted into a ``side`` square (grey margins) with ``label`` under it."""
    scale = side / max(image.shape[:2])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    tile = np.full((side + 16, side, 3), 235, np.uint8)
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    top, left = (side - size[1]) // 2, (side - size[0]) // 2
    tile[top : top + size[1], left : left + size[0]] = small
    cv2.putText(tile, label, (2, side + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    return tile


def _worst(folder: Path, detector: FaceDetector, limit: int) -> tuple[str, float]:
    """The image of the set's first ``limit`` that the old aligner got worst (a miss first;
    another face of a group photo does not count)."""
    worst, error = "", -1.0
    for name, true in list(read_landmarks(folder / "landmarks.csv").items())[:limit]:
        image = read_image(folder / name)
        faces, scale, _ = find_faces(image, detector, BEFORE)
        face = faces[0] if faces else None
        e = frame_error(face.landmarks / scale, true) if face else float("inf")
        if OTHER_FACE < e < float("inf"):
            continue  # another person of a group photo ("largest" flipped), not a misplacement
        if e > error:
            worst, error = name, e
    return worst, error


def figure(root: Path, detector: FaceDetector, out: Path, limit: int = 20) -> None:
    """One row per set: the photo, the crop before (plain detection, else the 0.6 centre crop),
    the crop now; the photo is the one of the set's first ``limit`` the old aligner did worst."""
    from facerec.align.image import align_image

    rows = []
    for name in DEGRADATIONS:
        if name in NO_FACE_SETS or not (root / name / "landmarks.csv").is_file():
            continue
        file, error = _worst(root / name, detector, limit)
        image = read_image(root / name / file)
        before = align_image(image, detector, BEFORE)[0]
        after = align_image(image, detector, AlignOptions())[0]
        was = "missed" if error == float("inf") else f"{error:.1f} px off"
        rows.append(np.hstack([_tile(image, name), _tile(before, f"before: {was}"),
                               _tile(after, "now")]))  # fmt: skip
    grid = np.vstack(rows)
    cv2.imwrite(str(out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"{out}: {len(rows)} rows")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make", help="build the sets")
    make.add_argument("--lfw", type=Path, required=True, help="LFW root (lfw-deepfunneled/)")
    make.add_argument("--out", type=Path, required=True, help="folder for the sets")
    make.add_argument("--n", type=int, default=200, help="LFW images sampled (200)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--sets", default="", help=f"comma-separated, of {list(DEGRADATIONS)}")
    run = sub.add_parser("measure", help="measure the aligner on the sets")
    run.add_argument("root", type=Path, help="the --out of make")
    run.add_argument(
        "--search",
        action="append",
        default=None,
        help="comma-separated search steps; repeat to compare (first = baseline)",
    )
    run.add_argument("--limit", type=int, default=0, help="first N images of each set (0: all)")
    run.add_argument("--sets", default="", help="comma-separated (default: all)")
    crops = sub.add_parser("crops", help="the face-crop score on each set")
    crops.add_argument("root", type=Path, help="the --out of make")
    crops.add_argument("--limit", type=int, default=0, help="first N images of each set (0: all)")
    fig = sub.add_parser("figure", help="before/after crops, one row per set")
    fig.add_argument("root", type=Path, help="the --out of make")
    fig.add_argument("out", type=Path, help="image to write (.jpg)")
    args = parser.parse_args(argv)
    detector = FaceDetector("cpu")
    if args.command == "make":
        files = sorted((args.lfw / "lfw-deepfunneled").glob("*/*.jpg"))
        rng = np.random.default_rng(args.seed)
        sources = [files[i] for i in sorted(rng.choice(len(files), args.n, replace=False))]
        sets = [s for s in args.sets.split(",") if s] or None
        kept = make_sets(sources, args.out, detector, args.seed, sets)
        print(f"{args.out}: {kept} of {len(sources)} images had a face to carry over")
        return 0
    if args.command == "figure":
        figure(args.root, detector, args.out)
        return 0
    if args.command == "crops":
        crop_table(args.root, detector, args.limit)
        return 0
    searches = args.search or ["", ",".join(AlignOptions().search)]
    measure(args.root, searches, detector, args.limit, [s for s in args.sets.split(",") if s])
    return 0


if __name__ == "__main__":
    sys.exit(main())
