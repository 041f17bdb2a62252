"""``data=folder`` and ``data=lfw``: training data from an identity folder, optionally prepared
(faces aligned, say) into a copy of the folder first.

Alignment plugs in here as a plain object: :class:`FaceDataModule` takes a ``prepare``
(:class:`PrepareFolder`) and knows nothing of how the copies are made, so ``facerec.data``
never imports ``facerec.align`` (which builds on it). The LFW configs get theirs from
:func:`facerec.align.prepare.face_data_module`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import albumentations as A
import numpy as np
from torch.utils.data import DataLoader
from tqdm import tqdm

from facerec.data.folder import FaceFolder, FolderScan, scan_folder
from facerec.data.module import DataModule, ImageList, PairsSet, TolerantImages
from facerec.data.pairs import read_people
from facerec.data.scan import default_cache, scan_dataset
from facerec.data.transforms import augmentation, geometry
from facerec.data.unreadable import UNREADABLE

__all__ = ["FaceDataModule", "PrepareFolder"]

log = logging.getLogger(__name__)


class PrepareFolder(Protocol):
    """Makes prepared copies (e.g. aligned faces) of an identity folder's images, same layout.

    Called once from :meth:`FaceDataModule.setup` as
    ``prepare(image_root, paths, val, image_size) -> (root, missing)``:

    Args:
        image_root: the raw identity folder.
        paths: the training images under it.
        val: the module's verification sets; those over ``image_root`` are prepared too and
            re-pointed by ``prepare`` at ``root`` with no centre crop.
        image_size: side of the square images the module gives the model.

    Returns:
        ``root``, the folder of the copies (``root / p.relative_to(image_root)`` for each
        source ``p``), and ``missing``, the resolved source paths that got no copy (they
        leave the training set).
    """

    def __call__(
        self, image_root: Path, paths: Sequence[Path], val: Mapping[str, PairsSet], image_size: int
    ) -> tuple[Path, Collection[Path]]: ...


class FaceDataModule(DataModule):
    """Training data: an identity-folder dataset with its transforms and loader.

    Args:
        root: dataset folder (``root/<identity>/<image>``), or the folder that holds
            ``image_dir`` and ``people_file`` (LFW).
        image_dir: sub-folder of ``root`` with the identity folders (None: ``root`` itself).
        people_file: file under ``root`` listing the identities to train on (None: all).
        min_images: identities with fewer images are dropped.
        image_size: side of the square training images.
        center_crop: side of the centre crop taken before resizing (None: none).
        hflip: random horizontal flips.
        augment: further random transforms after the flip (``augment=...``; None: none).
        batch_size: images per step on each process.
        num_workers: DataLoader worker processes per training process.
        preload: decode and crop every image once into RAM (uint8) before training.
        verify_images: decode every image at start-up (cached by size and mtime, see
            :mod:`facerec.data.scan`), report problems by path and leave unreadable files out.
        val: verification sets by name.
        prepare: None (the images as they are), or a :class:`PrepareFolder` that ``setup()``
            calls once; the module then reads the prepared copies with no centre crop (e.g.
            faces aligned by :class:`facerec.align.prepare.FolderAligner`).
    """

    def __init__(
        self,
        root: str,
        image_dir: str | None = None,
        people_file: str | None = None,
        min_images: int = 1,
        image_size: int = 112,
        center_crop: int | None = None,
        hflip: bool = True,
        augment: A.BaseCompose | None = None,
        batch_size: int = 128,
        num_workers: int = 2,
        preload: bool = False,
        verify_images: bool = False,
        val: Mapping[str, PairsSet] | None = None,
        prepare: PrepareFolder | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, val)
        self.prepare = prepare
        self.verify_images = verify_images
        self.root = Path(root)
        self.image_root = self.root / image_dir if image_dir else self.root
        self.people_file = self.root / people_file if people_file else None
        self.min_images = min_images
        self.image_size = image_size
        self.center_crop = center_crop
        self.hflip = hflip
        self.augment = augment
        self.preload = preload
        self.scan: FolderScan | None = None

    @property
    def source(self) -> Path:
        return self.image_root

    @property
    def loader_workers(self) -> int:
        # Decoded images need no worker processes: what is left per sample (a flip, the
        # augment group's jitter on a 112 px image) costs well under 1 ms.
        return 0 if self.preload else self.num_workers

    def setup(self) -> FolderScan:
        """Scan the training folder (fast: no image is decoded) and report what was found."""
        people = set(read_people(self.people_file)) if self.people_file else None
        scan = scan_folder(self.image_root, people, self.min_images)
        if self.verify_images:
            report = scan_dataset(self.image_root, self.min_images, max(1, self.num_workers),
                                  default_cache(self.image_root))  # fmt: skip
            for line in report.lines():
                log.info("scan: %s", line)
            bad = {Path(p) for p in report.unreadable}
            keep = np.array([p not in bad for p in scan.paths], dtype=bool)
            scan = replace(scan, paths=[p for p, k in zip(scan.paths, keep, strict=True) if k],
                           labels=scan.labels[keep])  # fmt: skip
        if self.prepare is not None:
            scan = self._prepared(scan)
        self.scan = scan
        log.info("training data %s: %s", self.image_root, self.scan.summary())
        return self.scan

    def _prepared(self, scan: FolderScan) -> FolderScan:
        """Prepare once (``prepare`` caches), then read the copies; images without one leave."""
        root, missing = self.prepare(self.image_root, scan.paths, self.val, self.image_size)
        missing = {Path(p) for p in missing}
        keep = np.array([p.resolve() not in missing for p in scan.paths], dtype=bool)
        paths = [root / p.relative_to(self.image_root) for p in np.array(scan.paths)[keep]]
        self.image_root, self.center_crop = root, None
        return replace(scan, paths=paths, labels=scan.labels[keep])

    def _decode_all(self, paths: list[Path], show_progress: bool) -> tuple[np.ndarray, np.ndarray]:
        """Decode + crop + resize every image once.

        Returns:
            uint8 ``(N, H, W, 3)`` images and a bool ``(N,)`` mask of the readable ones
            (unreadable files are logged by path and later skipped like in streaming mode).
        """
        cache = np.empty((len(paths), self.image_size, self.image_size, 3), dtype=np.uint8)
        readable = np.ones(len(paths), dtype=bool)
        loader = DataLoader(
            TolerantImages(ImageList(paths, self.image_size, self.center_crop)),
            batch_size=64,
            num_workers=self.num_workers,
        )
        done = 0
        for batch, ok in tqdm(loader, desc="preload", unit="batch", disable=not show_progress):
            cache[done : done + len(batch)] = batch.permute(0, 2, 3, 1).numpy()
            readable[done : done + len(batch)] = ok.numpy()
            done += len(batch)
        if not readable.all():
            bad = [str(p) for p, ok in zip(paths, readable, strict=True) if not ok]
            log.warning("preload: %d unreadable images will be skipped: %s", len(bad), bad[:10])
        return cache, readable

    def train_dataset(self, scan: FolderScan, show_progress: bool) -> FaceFolder:
        cache, labels = None, scan.labels
        if self.preload:
            cache, readable = self._decode_all(scan.paths, show_progress)
            # Marked now, served blank by FaceFolder, dropped and counted by the trainer.
            labels = np.where(readable, scan.labels, UNREADABLE)
        return FaceFolder(
            scan.paths,
            labels,
            geometry(self.image_size, self.center_crop),
            augmentation(self.hflip, self.augment),
            cache,
        )
