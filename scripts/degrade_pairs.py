#!/usr/bin/env python
"""Degraded copies of a verification set: the same pairs file verifies on each copy.

    # the light kinds of issue 28 for LFW's pairsDevTest (~1,700 images, about a minute each)
    python scripts/degrade_pairs.py ../shared/data/lfw/pairsDevTest.txt \\
        ../shared/data/lfw/lfw-deepfunneled /tmp/degraded --kinds dark,low_contrast,noise,grey,light
    # then, beside the clean set (alignment as the model was trained):
    facerec evaluate best.pt --sets lfw_devtest=PAIRS:ROOT dark=PAIRS:/tmp/degraded/dark ...
    # or during training: extra_val=lfw_light paths.degraded_dir=/tmp/degraded

For each kind, ``OUT/<kind>/`` holds, in the layout of the image root
(``<person>/<person>_NNNN.jpg``), a degraded copy of every image the pairs file names and
nothing else. The degradations are those of ``scripts/hard_faces.py`` (imported, not copied):

- ``dark``: gamma 2-4 plus Gaussian noise (sigma 2-5).
- ``low_contrast``: contrast x0.2-0.5 about the mean, plus noise (sigma 1-3).
- ``noise``: sensor noise: shot noise (variance 0.5-2 x the pixel value, Poisson-like) plus read
  noise (sigma 2-6).
- ``grey``: one channel.
- ``light``: one of the four above, drawn per image.
- ``tight``, ``small``, ``rot30``: the geometric copies of issue 27 (the face box cut at
  +-10%, shrunk 4-8x onto a 1000x1000 canvas, turned by +-30 degrees). ``tight`` needs the face
  box: MTCNN on the clean image; where it finds none, the middle 45% of the image is taken
  (LFW's faces sit there) and counted.

Deterministic: each image's random draws come from ``(seed, kind, relative path)`` only, so a
kind's copy of an image is the same whatever other kinds or images are made. JPEG quality 95.
An unreadable source gets one line and is counted (exit status 1: the copy is incomplete).
"""

from __future__ import annotations

import argparse
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hard_faces  # the sibling script: the degradations live there

from facerec.align.detect import Face
from facerec.data.decode import read_image
from facerec.data.pairs import read_pairs

Kind = Callable[[np.ndarray, Face, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def sensor_noise(image: np.ndarray, face: Face, rng: np.random.Generator):
    """Shot noise (variance ``a`` x the value, ``a`` in 0.5-2, as a Poisson count scaled to
    the 0-255 range) plus read noise (sigma 2-6): a small sensor at high ISO."""
    value = image.astype(np.float32)
    sigma = np.sqrt(rng.uniform(0.5, 2.0) * value + rng.uniform(2, 6) ** 2)
    noisy = value + rng.standard_normal(image.shape) * sigma
    return np.clip(noisy, 0, 255).astype(np.uint8), face.landmarks


LIGHT: dict[str, Kind] = {
    "dark": hard_faces.dark,
    "low_contrast": hard_faces.low_contrast,
    "noise": sensor_noise,
    "grey": hard_faces.grey,
}


def light(image: np.ndarray, face: Face, rng: np.random.Generator):
    """One light kind, drawn per image."""
    return LIGHT[rng.choice(list(LIGHT))](image, face, rng)


KINDS: dict[str, Kind] = {
    **LIGHT,
    "light": light,
    "tight": hard_faces.tight,
    "small": hard_faces.small,
    "rot30": hard_faces.rotation(30),
}
NEEDS_FACE = ("tight",)  # the others use the face only for the landmarks, dropped here


def nominal_face(image: np.ndarray) -> Face:
    """The middle 45% of the image as a face box (LFW centres its faces)."""
    h, w = image.shape[:2]
    half = 0.225 * min(h, w)
    box = np.array([w / 2 - half, h / 2 - half, w / 2 + half, h / 2 + half])
    return Face(box, 0.0, np.tile(box[:2] + half, (5, 1)))


def image_rng(seed: int, kind: str, name: str) -> np.random.Generator:
    """The draws of one kind for one image: from the seed, kind and relative path only."""
    return np.random.default_rng([seed, zlib.crc32(f"{kind}/{name}".encode())])


def pair_images(pairs_file: Path, image_root: Path) -> list[str]:
    """The relative paths of the images the pairs file names, each once, sorted."""
    pairs, _ = read_pairs(pairs_file, image_root)
    return sorted({p.relative_to(image_root).as_posix() for pair in pairs for p in pair})


def degrade(image_root: Path, names: list[str], out: Path, kinds: list[str], seed: int = 0,
            detector=None, progress: bool = True) -> dict[str, int]:  # fmt: skip
    """Write ``out/<kind>/<name>`` for each name and kind.

    Args:
        detector: a :class:`facerec.align.detect.FaceDetector`, needed for ``tight`` only.

    Returns:
        Counts: ``written`` images, ``unreadable`` sources, ``nominal`` (no face found:
        the middle box was used).
    """
    counts = {"written": 0, "unreadable": 0, "nominal": 0}
    for name in tqdm(names, desc="degrade", unit="img", disable=not progress):
        try:
            image = read_image(image_root / name)
        except OSError as error:
            print(f"{image_root / name}: unreadable, left out ({error})", file=sys.stderr)
            counts["unreadable"] += 1
            continue
        face = nominal_face(image)
        if detector is not None and any(k in NEEDS_FACE for k in kinds):
            found = hard_faces.truth(image, detector)
            counts["nominal"] += found is None
            face = found or face
        for kind in kinds:
            copy, _ = KINDS[kind](image, face, image_rng(seed, kind, name))
            (out / kind / name).parent.mkdir(parents=True, exist_ok=True)
            hard_faces.write_jpeg(out / kind / name, copy)
            counts["written"] += 1
    return counts


def check_out(out: Path, image_root: Path) -> None:
    """Refuse an output folder inside (or holding) the sources: they would be overwritten."""
    out, root = out.resolve(), image_root.resolve()
    if out == root or root in out.parents or out in root.parents:
        raise ValueError(f"{out}: the output folder must be outside the image root {root}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])  # fmt: skip
    parser.add_argument("pairs", type=Path, help="LFW-format pairs file")
    parser.add_argument("image_root", type=Path, help="folder of <person>/<person>_NNNN.jpg")
    parser.add_argument("out", type=Path, help="one sub-folder per kind is written here")
    parser.add_argument(
        "--kinds", default=",".join(LIGHT), help=f"comma-separated, of {list(KINDS)}"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in KINDS]
    try:
        if unknown or not kinds:
            raise ValueError(f"--kinds {args.kinds!r}: choose from {', '.join(KINDS)}")
        check_out(args.out, args.image_root)
        names = pair_images(args.pairs, args.image_root)
    except (OSError, ValueError) as error:
        print(f"degrade_pairs: {error}", file=sys.stderr)
        return 2
    detector = None
    if any(k in NEEDS_FACE for k in kinds):
        from facerec.align.detect import FaceDetector

        detector = FaceDetector("cpu")
    counts = degrade(args.image_root, names, args.out, kinds, args.seed, detector)
    print(f"{args.out}: {len(names)} images x {len(kinds)} kinds ({', '.join(kinds)}):"
          f" {counts['written']} written, {counts['unreadable']} unreadable,"
          f" {counts['nominal']} without a detected face (middle box)")  # fmt: skip
    return 1 if counts["unreadable"] else 0


if __name__ == "__main__":
    sys.exit(main())
