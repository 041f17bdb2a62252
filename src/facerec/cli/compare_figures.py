"""The figures of ``facerec compare``: each arm's ROC (TAR averaged over its seeds at each FAR)
and its accuracy against training images (from every evaluation the runs made)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from facerec.eval.overlay import Line, lines_image
from facerec.eval.roc import roc_curve
from facerec.training.study import Arm

__all__ = ["accuracy_lines", "roc_lines", "write_figures"]

FAR_GRID = np.logspace(-4, 0, 200)  # the ROC's x axis, as roc_image draws it


def roc_lines(arms: Sequence[Arm], name: str) -> list[Line]:
    """Per arm, the mean over its seeds of TAR at each FAR of ``FAR_GRID`` (final evaluations)."""
    lines = []
    for arm in arms:
        finals = [f for f in (run.final(name) for run in arm.runs) if f is not None]
        tars = []
        for final in finals:
            fpr, tpr, _ = roc_curve(-np.asarray(final["distances"]), np.asarray(final["issame"]))
            tars.append(np.interp(FAR_GRID, fpr, tpr))
        if tars:
            lines.append(Line(arm.label, FAR_GRID, np.mean(tars, axis=0)))
    return lines


def accuracy_lines(arms: Sequence[Arm], name: str) -> list[Line]:
    """Per arm, the mean accuracy over its seeds at each number of training images evaluated."""
    lines = []
    for arm in arms:
        by_images: dict[int, list[float]] = {}
        for run in arm.runs:
            for record in run.evaluations.get(name, []):
                by_images.setdefault(record["images"], []).append(record["summary"]["accuracy"])
        if by_images:
            images = sorted(by_images)
            lines.append(Line(arm.label, images, [np.mean(by_images[n]) for n in images]))
    return lines


def span(lines: Sequence[Line], axis: int, pad: float) -> tuple[float, float]:
    """The data's range on one axis, widened by ``pad`` of it (never empty)."""
    values = np.concatenate([np.asarray(line[axis + 1], dtype=np.float64) for line in lines])
    lo, hi = float(values.min()), float(values.max())
    margin = max(pad * (hi - lo), 1e-3 if axis else 1.0)
    return lo - margin, hi + margin


def write_figures(arms: Sequence[Arm], name: str, folder: Path) -> dict[str, Path]:
    """``<folder>/<name>_roc.png`` and ``<folder>/<name>_accuracy.png``; returns those written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    roc = roc_lines(arms, name)
    if roc:
        written["roc"] = folder / f"{name}_roc.png"
        image = lines_image(roc, (1e-4, 1.0), (0.0, 1.0), xlog=True, title=f"ROC, {name}",
                            xlabel="FAR (log scale)", ylabel="TAR")  # fmt: skip
        cv2.imwrite(str(written["roc"]), image[..., ::-1])
    accuracy = accuracy_lines(arms, name)
    if accuracy:
        written["accuracy"] = folder / f"{name}_accuracy.png"
        lo, hi = span(accuracy, 1, 0.1)
        image = lines_image(accuracy, span(accuracy, 0, 0.05), (max(0.0, lo), min(1.0, hi)),
                            title=f"accuracy, {name} (mean over seeds)",
                            xlabel="training images", ylabel="accuracy")  # fmt: skip
        cv2.imwrite(str(written["accuracy"]), image[..., ::-1])
    return written
