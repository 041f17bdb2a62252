"""A full check of a folder dataset: every image decoded once, problems listed by path.

:func:`facerec.data.folder.scan_folder` only lists files (fast, at every start-up); this module
decodes them, which finds truncated and corrupt files before they cost a training run. Results
are cached by (path, size, mtime), so a second scan of an unchanged dataset decodes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from facerec.data.decode import check_header, read_file
from facerec.data.folder import IMAGE_EXTENSIONS
from facerec.files.jsonfile import read_json

log = logging.getLogger(__name__)

# Modes that decode fine but are not RGB: converted at load time, reported for information.
CONVERTED_MODES = {"L": "greyscale", "LA": "greyscale", "CMYK": "CMYK", "P": "palette",
                   "RGBA": "RGBA", "I;16": "16-bit greyscale", "I": "32-bit greyscale"}  # fmt: skip


def check_image(path: str) -> str:
    """``ok``, ``converted:<what>`` or ``unreadable:<why>`` for one file (decodes it fully).

    The header goes through training's guard first (:func:`facerec.data.decode.read_image`'s
    pixel budget), then Pillow decodes it: stricter than OpenCV about truncated JPEGs, and it
    names the image mode.
    """
    try:
        check_header(read_file(path), f"image {path}")
        with Image.open(path) as image:
            image.load()  # a truncated JPEG raises here, not at open()
            mode = image.mode
            kind = image.format
    except Exception as error:  # PIL raises many types for bad files; all mean "unreadable"
        return f"unreadable:{type(error).__name__}: {error}"
    if mode in CONVERTED_MODES:
        return f"converted:{CONVERTED_MODES[mode]}"
    if kind == "PNG":
        return "converted:PNG"
    return "ok"


@dataclass
class ScanReport:
    """What a full scan found; ``problems`` maps a path to what is wrong with it."""

    identities: int = 0
    images: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)
    converted: dict[str, str] = field(default_factory=dict)
    not_images: list[str] = field(default_factory=list)
    empty_identities: list[str] = field(default_factory=list)
    below_min: dict[str, int] = field(default_factory=dict)

    def lines(self, limit: int = 20) -> list[str]:
        out = [f"{self.identities} identities, {self.images} image files"]
        sections = [
            ("unreadable or truncated images (skipped in training)", self.unreadable),
            ("images converted to RGB at load time", self.converted),
            ("files that are not images (ignored)", {p: "" for p in self.not_images}),
            ("empty identity folders (ignored)", {p: "" for p in self.empty_identities}),
            ("identities below the minimum image count", {k: f"{v} images" for k, v in
                                                          self.below_min.items()}),
        ]  # fmt: skip
        for title, items in sections:
            if not items:
                continue
            out.append(f"{len(items)} {title}:")
            for path, why in list(items.items())[:limit]:
                out.append(f"  {path}" + (f"  ({why})" if why else ""))
            if len(items) > limit:
                out.append(f"  ... and {len(items) - limit} more")
        kinds = Counter(v for v in self.converted.values())
        if kinds:
            out.append("converted: " + ", ".join(f"{n} {k}" for k, n in kinds.items()))
        return out


def default_cache(root: Path) -> Path:
    """Where a scan of ``root`` is cached: beside it if writable, else in ~/.cache/facerec."""
    if os.access(root, os.W_OK):
        return root / ".facerec_scan.json"
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "facerec" / f"scan-{digest}.json"


def _stamp(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _read_cache(cache_file: str | Path | None) -> dict[str, list[str]]:
    """Each file's ``[stamp, status]`` from an earlier scan; empty without a readable cache."""
    if cache_file and Path(cache_file).is_file():
        try:  # a cache lists every file of the dataset: millions of lines are legitimate
            return read_json(cache_file, "scan cache", max_bytes=2**31)
        except ValueError as error:
            log.warning("ignoring the scan cache: %s", error)
    return {}


def scan_dataset(
    root: str | Path,
    min_images: int = 1,
    workers: int = 2,
    cache_file: str | Path | None = None,
    show_progress: bool = True,
) -> ScanReport:
    """Decode every image under ``root/<identity>/`` and report problems by path.

    Args:
        root: dataset folder.
        min_images: identities with fewer readable images are listed in ``below_min``.
        workers: decoding processes.
        cache_file: JSON file remembering each file's result by size and mtime.
        show_progress: tqdm bar.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    cache = _read_cache(cache_file)
    report = ScanReport()
    images: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.is_file())
        report.not_images += [str(p) for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
        images[folder.name] = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not images[folder.name]:
            report.empty_identities.append(str(folder))
    paths = [p for group in images.values() for p in group]
    stamps = {str(p): _stamp(p) for p in paths}
    todo = [p for p in map(str, paths) if cache.get(p, [None])[0] != stamps[p]]
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(check_image, todo, chunksize=64)
        for path, status in tqdm(zip(todo, results, strict=True), total=len(todo), desc="scan",
                                 unit="img", disable=not show_progress):  # fmt: skip
            cache[path] = [stamps[path], status]
    for name, group in images.items():
        readable = 0
        for path in map(str, group):
            status = cache[path][1]
            kind, _, detail = status.partition(":")
            if kind == "unreadable":
                report.unreadable[path] = detail
            else:
                readable += 1
                if kind == "converted":
                    report.converted[path] = detail
        if 0 < readable < min_images:
            report.below_min[name] = readable
    report.identities = sum(1 for group in images.values() if group)
    report.images = len(paths)
    if cache_file:
        Path(cache_file).parent.mkdir(parents=True, exist_ok=True)
        Path(cache_file).write_text(json.dumps(cache))
    return report
