"""The "unknown" threshold of a gallery, from a false-accept rate measured on strangers.

``facerec gallery calibrate`` embeds a labelled set of people who are *not* enrolled (identity
folders, or the images of an LFW-format pairs file) and keeps their embeddings in the gallery.
Each stranger photo searched against the gallery gives its best score; the threshold for a
false-accept rate ``far`` is the lowest cosine that at most a fraction ``far`` of them reach
(:func:`facerec.eval.identification.threshold_at_rate`): ``far`` is the rate at which a
stranger's photo is named as somebody (FPIR, the open-set FAR). It is recomputed against the
gallery as it is now, so adding or removing people keeps it right, and strangers whose name has
since been enrolled are left out.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from facerec.eval.identification import threshold_at_rate
from facerec.inference.enrol import Report, embed_photos, identity_folders
from facerec.inference.gallery import Gallery
from facerec.inference.search import ExactIndex

__all__ = ["calibrate", "labelled_photos", "stranger_scores", "threshold_for"]


def labelled_photos(source: str, report: Report) -> tuple[dict[str, list[Path]], str]:
    """``({name: photos}, kind)`` of a calibration set: a folder of identity folders
    (``"folders"``), or ``PAIRS:IMAGE_ROOT`` (an LFW-format pairs file; ``"pairs"``), whose
    images are named by their folder."""
    pairs, sep, root = source.partition(":")
    if not sep or Path(source).is_dir():
        return identity_folders(source, report), "folders"
    from facerec.data.pairs import read_pairs

    paths, _ = read_pairs(pairs, root)
    people: dict[str, set[Path]] = {}
    for path in (p for pair in paths for p in pair):
        people.setdefault(path.parent.name, set()).add(path.resolve())
    return {name: sorted(files) for name, files in sorted(people.items())}, "pairs"


def calibrate(gallery: Gallery, embedder, source: str, far: float, progress: bool = True):
    """``gallery`` with the calibration set ``source`` embedded and ``far`` as its default.

    Returns:
        ``(Gallery, Report, threshold)``.

    Raises:
        ValueError: ``far`` outside (0, 1), or too few strangers to measure it.
    """
    if not 0.0 < far < 1.0:
        raise ValueError(f"--far {far!r}: a false-accept rate lies in (0, 1), e.g. 1e-3")
    report = Report()
    people, kind = labelled_photos(source, report)
    paths = [p for files in people.values() for p in files]
    if far * len(paths) < 1:  # before the work: this set cannot measure that rate
        raise ValueError(f"--far {far:g} needs at least {int(np.ceil(1 / far))} photos of "
                         f"people not enrolled; {source} has {len(paths)}")  # fmt: skip
    owner = {p: name for name, files in people.items() for p in files}
    records, emb = embed_photos(embedder, paths, report, progress)
    record = {"kind": kind, "source": source, "far": far,
              "names": [owner[Path(r.file)] for r in records]}  # fmt: skip
    calibrated = replace(gallery, calibration=record, calibration_embeddings=emb)
    return calibrated, report, threshold_for(calibrated, far)[0]


def stranger_scores(gallery: Gallery, index=None) -> np.ndarray:
    """Each calibration photo's best cosine against the gallery, float64 ``(M,)``, leaving
    out photos of people enrolled since.

    Args:
        index: the search the answers will come from (default: exact over the templates), so
            that the threshold is calibrated on the same search that it decides.
    """
    if gallery.calibration is None:
        raise ValueError("the gallery has no calibration set: run `facerec gallery calibrate`")
    enrolled = set(gallery.names)
    keep = [i for i, n in enumerate(gallery.calibration["names"]) if n not in enrolled]
    strangers = gallery.calibration_embeddings[keep].astype(np.float32)
    if not gallery.names or len(strangers) == 0:
        return np.zeros(0)
    index = ExactIndex(gallery.templates()) if index is None else index
    return index.search(strangers, 1)[0][:, 0].astype(np.float64)


def threshold_for(gallery: Gallery, far: float | None = None, index=None) -> tuple[float, int]:
    """``(threshold, strangers)``: the cosine threshold at false-accept rate ``far`` (default:
    the one calibrated) and how many stranger photos measured it (``index``: as
    :func:`stranger_scores`).

    Raises:
        ValueError: no calibration, ``far`` outside (0, 1), or below ``1 / strangers`` (a rate
            that few photos cannot measure).
    """
    scores = stranger_scores(gallery, index)
    far = gallery.calibration["far"] if far is None else far
    if not 0.0 < far < 1.0:
        raise ValueError(f"--far {far!r}: a false-accept rate lies in (0, 1), e.g. 1e-3")
    if far * len(scores) < 1:
        raise ValueError(
            f"--far {far:g} needs at least {int(np.ceil(1 / far))} stranger photos; the "
            f"calibration set ({gallery.calibration['source']}) gives {len(scores)}: calibrate "
            "on more people, or ask for a higher rate"
        )
    return threshold_at_rate(scores, far), len(scores)
