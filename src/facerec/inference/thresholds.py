"""The same-person threshold of a model: chosen by ``facerec evaluate``, kept beside the model.

A threshold file is a claim, checked before use (:func:`load_threshold`): a squared distance of
flip-fused unit embeddings, same person below it, refused at :data:`MAX_THRESHOLD` or more.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from facerec.files.jsonfile import read_json
from facerec.inference.folder import THRESHOLD, is_pretrained
from facerec.inference.rules import Rule

__all__ = ["MAX_IMPOSTOR_ACCEPT", "MAX_THRESHOLD", "check_threshold", "impostor_accept_rate",
           "load_threshold", "save_threshold", "threshold_claim", "threshold_path"]  # fmt: skip


def threshold_path(checkpoint_path: str | Path) -> Path:
    """Where ``facerec evaluate`` leaves its threshold: ``<checkpoint>.threshold.json``, or
    ``threshold.json`` inside an exported model folder (it travels with the model)."""
    path = Path(checkpoint_path)
    if is_pretrained(path):
        return path / THRESHOLD
    return path.with_name(path.name + ".threshold.json")


def save_threshold(
    checkpoint_path: str | Path, set_name: str, summary: Mapping[str, float], step: int | None
) -> Path:
    """Record a verification set's chosen threshold next to the checkpoint.

    Args:
        checkpoint_path: the evaluated checkpoint.
        set_name: the set the threshold was chosen on.
        summary: ``VerificationResult.summary()`` of that set.
        step: the checkpoint's training step (a later ``last.pt`` is a different model).

    Returns:
        The JSON file written.
    """
    path = threshold_path(checkpoint_path)
    record = {
        "threshold": float(summary["threshold"]),
        "set": set_name,
        "accuracy": float(summary["accuracy"]),
        "step": step,
        "metric": "squared L2 distance of flip-fused, L2-normalised embeddings; same if < "
        "threshold",
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


# Squared distances of unit vectors: 2 - 2 cos. At 2.0 a pair is "same" whenever cos > 0, so
# every pair of orthogonal embeddings is accepted: a trained face model puts most impostor
# pairs near cos 0, so a threshold at or past 2 accepts about half or more of them. No trained
# model's best threshold lies there (LFW: 1.2 to 1.6); a file that claims one is refused.
MAX_THRESHOLD = 2.0
# A reference set given to verify: a threshold accepting more of its impostor pairs is refused.
MAX_IMPOSTOR_ACCEPT = 0.5
_CLAIMS = {
    "set": Rule("str", nullable=True),
    "accuracy": Rule("float", 0.0, 1.0, nullable=True),
    "step": Rule("int", 0, 2**62, nullable=True),
}


def load_threshold(checkpoint_path: str | Path) -> dict[str, Any] | None:
    """The record :func:`save_threshold` wrote for this model, or None if there is none.

    A threshold file is a claim, checked before use: the threshold must lie in
    ``(0, MAX_THRESHOLD)`` (see :data:`MAX_THRESHOLD`); ``set``, ``accuracy`` and ``step`` must
    be a name, a number in [0, 1] and a step, or absent. What it says of accuracy is the file's
    claim, quoted as such (:func:`threshold_claim`).

    Raises:
        ValueError: one line naming the file: not such a record, or a threshold refused.
    """
    path = threshold_path(checkpoint_path)
    if not path.is_file():
        return None
    try:
        record = read_json(path, "threshold file", max_bytes=2**20)
        threshold = float(record["threshold"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a threshold record ({error}); re-run evaluate") from None
    for key, rule in _CLAIMS.items():
        rule.read(record.get(key), key, path)
    if not 0.0 < threshold < MAX_THRESHOLD:
        raise ValueError(
            f"{path} refused: threshold {threshold!r} is outside (0, {MAX_THRESHOLD:g}): at "
            f"{MAX_THRESHOLD:g} or more (cosine <= 0) it calls most pairs of different people the"
            " same person; re-run evaluate"
        )
    record["file"] = str(path)
    return record


def threshold_claim(record: Mapping[str, Any]) -> str:
    """Where a threshold file says its threshold came from, worded as the file's claim."""
    accuracy = record.get("accuracy")
    said = f", accuracy {accuracy:.4f} there" if isinstance(accuracy, (int, float)) else ""
    return (
        f"{record['file']}, which claims it was chosen on {str(record.get('set'))[:60]!r} at "
        f"step {record.get('step')}{said} (the file's claim, not checked here)"
    )


def impostor_accept_rate(threshold: float, distances: np.ndarray, issame: np.ndarray) -> float:
    """The fraction of a reference set's different-person pairs called "same" at ``threshold``.

    Args:
        distances: ``(N,)`` squared distances of the pairs.
        issame: ``(N,)`` bool, True for same-person pairs.
    """
    impostors = np.asarray(distances)[~np.asarray(issame, dtype=bool)]
    if len(impostors) == 0:
        raise ValueError("the reference set has no different-person pairs")
    return float((impostors < threshold).mean())


def check_threshold(threshold: float, source: str, rate: float | None, reference: str) -> None:
    """Refuse a threshold that accepts most impostor pairs of a reference set.

    Args:
        threshold: the squared-distance threshold.
        source: where it came from (named in the message).
        rate: :func:`impostor_accept_rate` on the reference set (None: no reference).
        reference: the reference set's description.

    Raises:
        ValueError: ``rate`` > :data:`MAX_IMPOSTOR_ACCEPT`, one line.
    """
    if rate is not None and rate > MAX_IMPOSTOR_ACCEPT:
        raise ValueError(
            f"threshold {threshold:.4f} (from {source}) refused: it calls {rate:.1%} of the "
            f"different-person pairs of {reference} the same person (more than "
            f"{MAX_IMPOSTOR_ACCEPT:.0%})"
        )
