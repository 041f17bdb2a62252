"""CASIA-WebFace-style folder datasets: ``root/<identity>/<image>``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from facerec.data.decode import read_image
from facerec.data.transforms import seed_augmentation, to_tensor
from facerec.data.unreadable import UNREADABLE, blank_image, read_or_blank

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class FolderScan:
    """What a scan of a folder dataset found.

    Attributes:
        classes: identity names, sorted; class index = position in this list.
        paths: image paths, grouped by class.
        labels: class index of each path.
        empty: identity folders that hold no image.
        below_min: identities dropped for having fewer than ``min_images`` images.
        not_listed: identities present on disk but not in the people file.
    """

    classes: list[str]
    paths: list[Path]
    labels: np.ndarray
    empty: list[str]
    below_min: list[str]
    not_listed: int

    def summary(self) -> str:
        return (
            f"{len(self.classes)} identities, {len(self.paths)} images"
            f" ({len(self.empty)} empty identity folders, {len(self.below_min)} identities"
            f" below the minimum image count, {self.not_listed} not in the people list skipped)"
        )


def scan_folder(
    root: str | Path, people: set[str] | None = None, min_images: int = 1
) -> FolderScan:
    """List ``root/<identity>/<image>`` files.

    Args:
        root: dataset folder; each sub-folder is one identity.
        people: if given, only these identity names are used.
        min_images: identities with fewer images are dropped (and counted).

    Raises:
        FileNotFoundError: ``root`` does not exist or is not a folder.
        ValueError: no identity with at least ``min_images`` images was found.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    classes, paths, labels, empty, below = [], [], [], [], []
    not_listed = 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if people is not None and folder.name not in people:
            not_listed += 1
            continue
        images = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not images:
            empty.append(folder.name)
        elif len(images) < min_images:
            below.append(folder.name)
        else:
            labels += [len(classes)] * len(images)
            classes.append(folder.name)
            paths += images
    if not classes:
        raise ValueError(
            f"no identity folder with at least {min_images} image(s) in {root}"
            f" (expected root/<identity>/<image>.jpg; {len(empty)} empty folders)"
        )
    scan = FolderScan(classes, paths, np.asarray(labels, dtype=np.int64), empty, below, not_listed)
    if empty:
        log.warning("%s: %d empty identity folders skipped, e.g. %s", root, len(empty), empty[:3])
    return scan


class FaceFolder(Dataset):
    """Training images with their identity labels.

    Items are ``(image uint8 (3, H, W), label int)``. Either decodes from disk on every
    access (``geometry`` then ``augment``), or, when ``cache`` is given, reads the
    already-decoded geometry output from that uint8 array ``(N, H, W, 3)``.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: np.ndarray,
        geometry: A.Compose,
        augment: A.Compose,
        cache: np.ndarray | None = None,
    ) -> None:
        self.paths = list(paths)
        self.labels = labels
        self.geometry = geometry
        self.augment = augment
        self.cache = cache
        # Side of the images geometry() makes (its last step is the resize).
        self.geometry_size = (
            int(geometry.transforms[-1].height) if len(geometry.transforms) else 112
        )

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> np.ndarray:
        """Decoded, cropped and resized image ``index``: uint8 ``(H, W, 3)``."""
        if self.cache is not None:
            return self.cache[index]
        return self.geometry(image=read_image(self.paths[index]))["image"]

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """``item``: an index, or ``(index, seed)`` to fix this sample's augmentation."""
        index, seed = item if isinstance(item, tuple) else (item, None)
        if seed is not None:
            seed_augmentation(self.augment, seed)
        label = int(self.labels[index])
        image, ok = read_or_blank(lambda: self.load(index), lambda: None)
        if not ok or label == UNREADABLE:  # UNREADABLE: found so while preloading
            size = self.cache.shape[1] if self.cache is not None else self.geometry_size
            return blank_image(size), UNREADABLE
        return to_tensor(self.augment(image=image)["image"]), label
