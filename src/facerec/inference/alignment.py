"""Raw photos aligned as a model was trained: detect (MTCNN), warp onto the ArcFace template.

Detection is the ``align`` extra's (:mod:`facerec.align`, imported only when a model asks for
alignment); the choice (``auto``/``on``/``off``) and where the aligned copies are cached are
the tools' (the user's), never the model file's.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from facerec.distributed import resolve_device
from facerec.inference.images import Source, preprocessing

__all__ = ["align_paths", "align_sets", "default_align_cache", "resolve_alignment"]


def resolve_alignment(source: Source, choice: str = "auto", prog: str = "facerec"):
    """The :class:`facerec.align.AlignOptions` to align raw photos with, or None (crop).

    Args:
        source: the model's spec or config (:func:`load`).
        choice: ``"auto"`` (as the model was trained), ``"on"`` or ``"off"``.
        prog: the tool's name for the warning.

    A choice that differs from the training preparation works but prints one warning on
    stderr: embeddings of crops unlike the training ones are worse.
    """
    prep = preprocessing(source)
    trained = prep.alignment is not None
    aligned = trained if choice == "auto" else choice == "on"
    if aligned != trained:
        how = ("aligned faces (data.align)" if trained else
               f"centre crops (data.center_crop={prep.center_crop})")  # fmt: skip
        print(f"{prog}: warning: the checkpoint was trained on {how}, but --align {choice}: "
              f"{'aligning' if aligned else 'centre-cropping'} these images instead; "
              "accuracy will suffer", file=sys.stderr)  # fmt: skip
    if not aligned:
        return None
    # A raw photo with no detected face is still embedded (resized whole when it already is a
    # face crop, else centre-cropped; named in a warning): a tool's answer for every image beats
    # one that silently lacks some.
    return dataclasses.replace(prep.align_options(), on_missing="auto")


def default_align_cache() -> Path:
    """Where the tools keep aligned copies: ``$FACEREC_ALIGN_CACHE``, else
    ``~/.cache/facerec/align`` (never a place a model file names)."""
    base = os.environ.get("FACEREC_ALIGN_CACHE") or Path.home() / ".cache" / "facerec" / "align"
    return Path(base).expanduser()


def align_paths(
    paths: Sequence[str | Path],
    options,
    device: str | torch.device = "cpu",
    cache: str | Path | None = None,
    progress: bool = False,
) -> list[Path]:
    """Detect and align image files; the aligned crops' paths, in order.

    Crops are cached in ``cache`` (default ``$FACEREC_ALIGN_CACHE/files-<options key>``, else
    ``~/.cache/facerec/align/files-<options key>``),
    named by a hash of the source path and keyed by its size and mtime, so a second call on
    the same photos detects nothing. ``options`` None returns ``paths`` unchanged. A file that
    yields no crop (unreadable, too small) keeps its own path, and the reader that follows
    names it as it would have anyway.
    """
    import hashlib

    from facerec.align.detect import FaceDetector
    from facerec.align.folder import align_files
    from facerec.align.outcomes import WRITTEN

    paths = [Path(p) for p in paths]
    if options is None:
        return paths
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"image not found: {p}")
    root = Path(cache or default_align_cache() / f"files-{options.key}").expanduser()
    jobs = []
    for p in paths:
        name = hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:20]
        jobs.append((p.resolve(), root / f"{name}{p.suffix.lower() or '.png'}"))
    device = device if isinstance(device, torch.device) else resolve_device(str(device))
    detector = FaceDetector(device, min_face=options.min_face)
    summary = align_files(jobs, options, detector, root, progress=progress)
    outcome = {path: kind for kind in WRITTEN for path in getattr(summary, kind)}
    return [dst if str(src) in outcome else orig
            for orig, (src, dst) in zip(paths, jobs, strict=True)]  # fmt: skip


def align_sets(
    sets: Mapping[str, Any], options, cache: str | Path | None = None, device="cpu"
) -> None:
    """Align the images of each pairs-file set in place (``options`` None: nothing to do).

    Each :class:`facerec.data.PairsSet` is re-pointed at an aligned copy of its images, made
    once under ``cache`` (default :func:`default_align_cache`: the user's choice, never the
    model file's). ``.bin`` packs are aligned already.
    """
    if options is None:
        return
    from facerec.align.dataset import align_training_data

    cache = cache or default_align_cache()
    for name, pairs_set in sets.items():
        if hasattr(pairs_set, "image_root") and hasattr(pairs_set, "load"):
            show = sys.stderr.isatty()
            _, summary = align_training_data(
                pairs_set.image_root, [], {name: pairs_set}, options, cache, str(device), show
            )
            # The counts reach the user even where logging is not set up (the scripts).
            print(f"set {name}: aligned: {summary.lines()[0]}", file=sys.stderr)
