"""What a ``data=...`` config instantiates: the training set, its loader and verification sets."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from facerec.data.decode import read_image
from facerec.data.folder import FaceFolder, FolderScan, scan_folder
from facerec.data.pairs import read_pairs, read_people
from facerec.data.sampler import ResumableSampler
from facerec.data.scan import default_cache, scan_dataset
from facerec.data.transforms import augmentation, geometry, to_tensor
from facerec.data.unreadable import UNREADABLE, blank_image, read_or_blank

log = logging.getLogger(__name__)


class ImageList(Dataset):
    """Images without labels, geometry only: uint8 ``(3, H, W)`` per item (evaluation, caching)."""

    def __init__(self, paths: list[Path], image_size: int, center_crop: int | None) -> None:
        self.paths = paths
        self.image_size = image_size
        self.geometry = geometry(image_size, center_crop)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_tensor(self.geometry(image=read_image(self.paths[index]))["image"])


class TolerantImages(Dataset):
    """``(image, True)``, or a blank image and False for an unreadable file (logged)."""

    def __init__(self, images: ImageList) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, bool]:
        size = self.images.image_size
        return read_or_blank(lambda: self.images[index], lambda: blank_image(size))


@dataclass(frozen=True)
class Pairs:
    """A loaded verification list: each distinct image once, pairs as indices into it.

    Attributes:
        images: the M distinct images, as keys the set's ``dataset()`` takes: file paths for
            :class:`PairsSet`, positions in the pack for :class:`facerec.data.binpack.BinSet`.
        index: ``(N, 2)`` int64 positions in ``images`` of each pair.
        issame: ``(N,)`` bool, True for same-identity pairs.
    """

    images: list[Path] | list[int]
    index: np.ndarray
    issame: np.ndarray


class PairsSet:
    """A verification set: an LFW-format pairs file over an image folder.

    Args:
        pairs_file: ``pairs.txt``-style list (see :func:`facerec.data.pairs.read_pairs`).
        image_root: folder holding ``<name>/<name>_<NNNN>.jpg``.
        center_crop: side of the centre crop taken before resizing (None: no crop).
        image_size: side of the square images given to the model.
    """

    def __init__(
        self,
        pairs_file: str,
        image_root: str,
        center_crop: int | None = None,
        image_size: int = 112,
    ) -> None:
        self.pairs_file = Path(pairs_file)
        self.image_root = Path(image_root)
        self.center_crop = center_crop
        self.image_size = image_size

    @property
    def name(self) -> str:
        """The pairs file's name (progress bars, messages)."""
        return self.pairs_file.name

    def load(self) -> Pairs:
        """Parse the pairs file; every image is listed once however many pairs use it."""
        pairs, issame = read_pairs(self.pairs_file, self.image_root)
        position: dict[Path, int] = {}
        index = np.array(
            [[position.setdefault(p, len(position)) for p in pair] for pair in pairs],
            dtype=np.int64,
        )
        return Pairs(list(position), index, np.asarray(issame, dtype=bool))

    def dataset(self, images: list[Path]) -> Dataset:
        return ImageList(images, self.image_size, self.center_crop)


class DataModule:
    """What the trainer uses of a ``data=...`` config; subclasses say where the samples come from.

    The trainer calls ``setup()`` (returns a scan with ``classes``, ``paths`` (one entry per
    sample) and ``summary()``), ``train_loader(...)`` and reads ``batch_size``, ``num_workers``
    and ``val``. A subclass implements ``setup()`` and ``train_dataset()``; the loader
    construction (sharding, resumable sampler, full batches) is shared here.

    Args:
        batch_size: images per step on each process.
        num_workers: DataLoader worker processes per training process.
        val: verification sets by name.
    """

    def __init__(
        self, batch_size: int, num_workers: int, val: Mapping[str, PairsSet] | None
    ) -> None:
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val = dict(val or {})
        self.scan = None

    @property
    def source(self) -> Path:
        """Where the training samples are read from (named in messages)."""
        raise NotImplementedError

    @property
    def loader_workers(self) -> int:
        """Worker processes the training loader uses (``num_workers`` unless nothing to do)."""
        return self.num_workers

    def setup(self):
        """Index the training samples (fast: no image is decoded) and report what was found."""
        raise NotImplementedError

    def train_dataset(self, scan, show_progress: bool) -> Dataset:
        """The training set for ``scan``: items ``(index, seed) -> (uint8 (3,H,W), label)``."""
        raise NotImplementedError

    @property
    def collate_fn(self) -> Callable | None:
        """How the loader batches items (None: PyTorch's default stacking)."""
        return None

    @property
    def classes(self) -> list[str]:
        if self.scan is None:
            raise RuntimeError("call setup() first")
        return self.scan.classes

    def train_loader(
        self, rank: int = 0, world_size: int = 1, seed: int = 0, show_progress: bool = True,
        sampler: Callable[..., Sampler] | None = None,
    ) -> DataLoader:  # fmt: skip
        """Shuffled, sharded loader of ``(images uint8 (B,3,H,W), labels (B,))``, full batches only.

        Args:
            sampler: ``sampler(dataset, batch_size=, num_replicas=, rank=, seed=)`` (the
                ``sampler=...`` config group); default the uniform :class:`ResumableSampler`.
                Either way call ``loader.sampler.set_epoch(epoch, start)``.
        """
        scan = self.scan or self.setup()
        if len(scan.paths) < self.batch_size * world_size:
            raise ValueError(
                f"{self.source}: {len(scan.paths)} images cannot fill one batch of"
                f" {self.batch_size} on each of {world_size} process(es); lower data.batch_size"
            )
        dataset = self.train_dataset(scan, show_progress)
        make_sampler = sampler or ResumableSampler.build
        sampler = make_sampler(dataset, batch_size=self.batch_size, num_replicas=world_size,
                               rank=rank, seed=seed)  # fmt: skip
        workers = self.loader_workers
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=workers,
            collate_fn=self.collate_fn,
            pin_memory=torch.cuda.is_available(),
            drop_last=True,  # equal batches on all ranks; BatchNorm needs more than one sample
            persistent_workers=workers > 0,
        )


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
        align: None (centre crop), or :class:`facerec.align.AlignOptions` fields: ``setup()``
            then detects and aligns the training images and the verification sets' images in
            ``image_dir`` once (see :mod:`facerec.align.dataset`) and reads the aligned copies.
        align_cache: folder of the aligned copies (None: ``<image_dir>/../aligned``).
        align_device: where the face detector runs.
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
        align: Mapping | None = None,
        align_cache: str | None = None,
        align_device: str = "cpu",
    ) -> None:
        super().__init__(batch_size, num_workers, val)
        self.align = dict(align) if align is not None else None
        self.align_cache = align_cache
        self.align_device = align_device
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
        if self.align is not None:
            scan = self._aligned(scan)
        self.scan = scan
        log.info("training data %s: %s", self.image_root, self.scan.summary())
        return self.scan

    def _aligned(self, scan: FolderScan) -> FolderScan:
        """Align once (cached), then read the aligned copies; images without a crop leave."""
        from facerec.align.dataset import align_training_data

        options = {"size": self.image_size, **self.align}
        root, summary = align_training_data(self.image_root, scan.paths, self.val, options,
                                            self.align_cache, self.align_device)  # fmt: skip
        missing = {Path(p) for p in summary.missing}
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
