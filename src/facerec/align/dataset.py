"""Aligned training and verification images for a data module, made once and cached.

:class:`facerec.data.FaceDataModule` calls :func:`align_training_data` from ``setup()`` when
its config has ``align``: the training images it scanned and the images of its verification
sets are aligned into ``<cache>/<folder>-<options key>/`` (one per source folder; same layout
and file names, so pairs files resolve unchanged), and the module reads from there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from facerec.align.folder import align_folder
from facerec.align.manifest import MANIFEST
from facerec.align.options import AlignOptions
from facerec.align.outcomes import Summary

__all__ = ["align_training_data", "aligned_root"]

log = logging.getLogger("facerec.align")


def aligned_root(image_root: Path, options: AlignOptions, cache: str | Path | None) -> Path:
    """Where the aligned copy of ``image_root`` lives: ``<cache>/<name>-<key>``; ``cache``
    None means beside the data (``<image_root>/../aligned``)."""
    base = Path(cache) if cache else image_root.parent / "aligned"
    return base.expanduser().resolve() / f"{image_root.name}-{options.key}"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".facerec-write-test"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


def align_training_data(
    image_root: Path,
    paths: Sequence[Path],
    val: Mapping[str, Any],
    options: Mapping[str, Any] | AlignOptions,
    cache: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[Path, Summary]:
    """Align ``paths`` and the verification sets' images under ``image_root``; re-point the sets.

    Args:
        image_root: the raw identity folder.
        paths: training images under it.
        val: verification sets; each with an ``image_root`` (a :class:`facerec.data.PairsSet`)
            gets its images aligned too and is switched to the aligned folder with no centre
            crop: with the training images when its folder is ``image_root``, else into the
            cached copy of its own folder.
        options: :class:`AlignOptions` or its fields.
        cache: folder for aligned copies (None: beside the data).
        device: where the detector runs.
        progress: tqdm bar.

    Returns:
        The aligned folder and what the alignment did.
    """
    from facerec.align.detect import FaceDetector

    if not isinstance(options, AlignOptions):
        options = AlignOptions.from_dict(dict(options))
    image_root = Path(image_root).resolve()
    dst = aligned_root(image_root, options, cache)
    if not (dst / MANIFEST).is_file() and not _writable(dst):
        # A read-only data folder (a shared or mounted LFW): the user's cache instead.
        fallback = aligned_root(image_root, options, Path.home() / ".cache" / "facerec" / "align")
        log.warning("align: %s is not writable; aligned copies go to %s", dst, fallback)
        dst = fallback
    files = {Path(p).resolve() for p in paths}
    aligned_sets, elsewhere = [], {}
    for name, pairs_set in val.items():
        if not hasattr(pairs_set, "image_root"):
            continue  # a .bin pack: aligned already
        if Path(pairs_set.image_root).resolve() == image_root:
            files.update(Path(p).resolve() for p in pairs_set.load().images)
            aligned_sets.append(name)
        else:
            elsewhere[name] = pairs_set
    # A set in another folder (a degraded copy, another benchmark) is aligned into its own
    # cached copy, as `facerec evaluate` aligns it: a model of aligned faces is verified on
    # aligned faces, never on a centre crop.
    for name, pairs_set in elsewhere.items():
        align_training_data(pairs_set.image_root, [], {name: pairs_set}, options, cache, device,
                            progress)  # fmt: skip
    log.info("align: %d images of %s (training + %s) -> %s", len(files), image_root,
             ", ".join(aligned_sets) or "no verification set", dst)  # fmt: skip
    detector = FaceDetector(device, min_face=options.min_face)
    summary = align_folder(image_root, dst, options, sorted(files), detector, progress=progress)
    for line in summary.lines():
        log.info("align: %s", line)
    for name in aligned_sets:
        val[name].image_root = dst
        val[name].center_crop = None
        val[name].image_size = options.size
    return dst, summary
