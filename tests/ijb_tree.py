"""A synthetic IJB-C tree in insightface's layout, built from real LFW photos (tests only).

Four people of LFW, three photos each, landmarks and scores from facerec's aligner (MTCNN),
cached under ``$FACEREC_ALIGN_CACHE`` when it is set. Each person has three templates:

* ``100p + 1`` (gallery; G1 for people 0-1, G2 for 2-3): photos 1 and 2 as one media (a video);
* ``100p + 2`` (probe): photo 3 twice, as two medias;
* ``100p + 3`` (probe): photo 1 three times, one media (equals photo 1's feature);

and template 9902 (probe, subject 99: in neither gallery) is photo 2 of person 3 (no
probe template of person 3 is that photo alone: no exact score ties). Every face
row has its own file under ``loose_crop`` (copies), as in IJB. Pairs: all template pairs of
the twelve person templates, same person = 1.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np

PEOPLE = ("George_W_Bush", "Colin_Powell", "Tony_Blair", "Donald_Rumsfeld")
PHOTOS = (1, 2, 3)


def photo(lfw: Path, person: str, k: int) -> Path:
    return lfw / "lfw-deepfunneled" / person / f"{person}_{k:04d}.jpg"


def landmarks(lfw: Path) -> dict[str, tuple[list, float]]:
    """``{relative path: (5x2 landmarks, score)}`` of the photos, from facerec's aligner."""
    cache_dir = os.environ.get("FACEREC_ALIGN_CACHE")
    cache = Path(cache_dir) / "ijb-test-landmarks.json" if cache_dir else None
    if cache is not None and cache.is_file():
        return json.loads(cache.read_text())
    import torch

    from facerec.align.detect import FaceDetector
    from facerec.data.decode import read_image

    paths = [photo(lfw, p, k) for p in PEOPLE for k in PHOTOS]
    found = FaceDetector(torch.device("cpu")).detect([read_image(p) for p in paths])
    out = {str(p.relative_to(lfw)): (f[0].landmarks.tolist(), f[0].score)
           for p, f in zip(paths, found, strict=True)}  # fmt: skip
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(out))
    return out


def face_rows() -> list[tuple[int, int, int, int]]:
    """``(person, photo, template, media)`` per face row."""
    rows = []
    for p in range(len(PEOPLE)):
        rows += [(p, 1, 100 * p + 1, 1000 * p + 1), (p, 2, 100 * p + 1, 1000 * p + 1)]
        rows += [(p, 3, 100 * p + 2, 1000 * p + 2), (p, 3, 100 * p + 2, 1000 * p + 3)]
        rows += [(p, 1, 100 * p + 3, 1000 * p + 4)] * 3
    return [*rows, (3, 2, 9902, 9999)]


SUBJECT = {100 * p + t: p for p in range(len(PEOPLE)) for t in (1, 2, 3)} | {9902: 99}


def write_csv(path: Path, rows: list[tuple[int, int, str]]) -> None:
    lines = ["TEMPLATE_ID,SUBJECT_ID,FILENAME", *(f"{t},{s},{n}" for t, s, n in rows)]
    path.write_text("\n".join(lines) + "\n")


def build(lfw: Path, root: Path) -> Path:
    """Write the tree under ``root/IJBC``; returns ``root``."""
    marks = landmarks(lfw)
    base = root / "IJBC"
    (base / "loose_crop").mkdir(parents=True)
    (base / "meta").mkdir()
    tid_mid, pts, by_template = [], [], {}
    for n, (p, k, template, media) in enumerate(face_rows(), 1):
        name = f"{n}.jpg"
        shutil.copyfile(photo(lfw, PEOPLE[p], k), base / "loose_crop" / name)
        points, score = marks[str(photo(lfw, PEOPLE[p], k).relative_to(lfw))]
        score *= 0.5 + 0.5 * (n % 2)  # varied detector scores: D1 matters
        tid_mid.append(f"{name} {template} {media}")
        pts.append(" ".join([name, *(f"{v:.3f}" for v in np.ravel(points)), f"{score:.6f}"]))
        by_template.setdefault(template, []).append(name)
    meta = base / "meta"
    (meta / "ijbc_face_tid_mid.txt").write_text("\n".join(tid_mid) + "\n")
    (meta / "ijbc_name_5pts_score.txt").write_text("\n".join(pts) + "\n")
    people = [t for t in sorted(SUBJECT) if t != 9902]
    pairs = [f"{a} {b} {int(SUBJECT[a] == SUBJECT[b])}"
             for a, b in itertools.combinations(people, 2)]  # fmt: skip
    (meta / "ijbc_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
    for gallery, who in (("G1", (0, 1)), ("G2", (2, 3))):
        rows = [(100 * p + 1, p, n) for p in who for n in by_template[100 * p + 1]]
        write_csv(meta / f"ijbc_1N_gallery_{gallery}.csv", rows)
    probes = [t for t in sorted(SUBJECT) if t % 100 != 1]
    rows = [(t, SUBJECT[t], n) for t in probes for n in by_template[t]]
    write_csv(meta / "ijbc_1N_probe_mixed.csv", rows)
    return root
