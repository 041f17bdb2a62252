"""Alignment plugged into a data module: the ``prepare`` step of :class:`FaceDataModule`.

``facerec.data`` knows nothing of alignment; this module (above it) builds the plain object
the data module calls. The LFW data configs name :func:`face_data_module` as their
``_target_``, so ``data.align`` stays what it was on the command line and in a saved config (a
mapping of :class:`facerec.align.AlignOptions` fields, or null), and the checkpoint readers
keep reading it as data.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facerec.align.dataset import align_training_data
from facerec.data.folder_module import FaceDataModule
from facerec.data.module import PairsSet

__all__ = ["FolderAligner", "face_data_module"]


@dataclass(frozen=True)
class FolderAligner:
    """A :class:`facerec.data.folder_module.PrepareFolder` that detects and aligns faces.

    The training images and the verification sets' images in the same folder are aligned once
    into ``<cache>/<folder>-<options key>/`` (see :func:`facerec.align.dataset.align_training_data`,
    which also re-points those sets); an image without a crop is missing.

    Attributes:
        options: :class:`facerec.align.AlignOptions` fields; ``size`` defaults to the data
            module's image size.
        cache: folder of the aligned copies (None: ``<image_dir>/../aligned``).
        device: where the face detector runs.
    """

    options: Mapping[str, Any]
    cache: str | None = None
    device: str = "cpu"

    def __call__(
        self, image_root: Path, paths: Sequence[Path], val: Mapping[str, PairsSet], image_size: int
    ) -> tuple[Path, Collection[Path]]:
        options = {"size": image_size, **self.options}
        root, summary = align_training_data(image_root, paths, val, options, self.cache,
                                            self.device)  # fmt: skip
        return root, {Path(p) for p in summary.missing}


def face_data_module(
    align: Mapping[str, Any] | None = None,
    align_cache: str | None = None,
    align_device: str = "cpu",
    **data: Any,
) -> FaceDataModule:
    """A :class:`FaceDataModule` from ``data`` (its arguments), aligned when ``align`` is set.

    Args:
        align: None (the images as they are, e.g. centre-cropped), or
            :class:`facerec.align.AlignOptions` fields: ``setup()`` then aligns the training
            and verification images once and reads the aligned copies.
        align_cache: folder of the aligned copies (None: ``<image_dir>/../aligned``).
        align_device: where the face detector runs.
        **data: :class:`FaceDataModule`'s arguments.
    """
    prepare = None if align is None else FolderAligner(dict(align), align_cache, align_device)
    return FaceDataModule(**data, prepare=prepare)
