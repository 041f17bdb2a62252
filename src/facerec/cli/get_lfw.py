#!/usr/bin/env python
"""Put LFW (deep-funneled images + the official protocol files) in one folder.

    python scripts/get_lfw.py --to data/lfw                    # download (needs internet)
    python scripts/get_lfw.py --to data/lfw --from /data/lfw   # use a copy already on disk

The folder ends up holding ``lfw-deepfunneled/<Name>/<Name>_NNNN.jpg`` and ``pairs.txt``,
``pairsDevTrain.txt``, ``pairsDevTest.txt``, ``people.txt``, ``peopleDevTrain.txt``,
``peopleDevTest.txt``. ``--from`` links the files (``--copy`` copies them) instead of
downloading; either way the result is checked (image count, pairs.txt md5).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

PROTOCOL_FILES = (
    "pairs.txt",
    "pairsDevTrain.txt",
    "pairsDevTest.txt",
    "people.txt",
    "peopleDevTrain.txt",
    "peopleDevTest.txt",
)
IMAGES = "lfw-deepfunneled"
N_IMAGES = 13233
PAIRS_MD5 = "9f1ba174e4e1c508ff7cdf10ac338a7d"
# The official site first, then the repository behind it (same files).
MIRRORS = (
    "http://vis-www.cs.umass.edu/lfw/",
    "https://raw.githubusercontent.com/umass-vis-lfw/umass-vis-lfw.github.io/main/",
)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def check(folder: Path) -> None:
    """Raise SystemExit naming what is missing or wrong in ``folder``."""
    missing = [name for name in (*PROTOCOL_FILES, IMAGES) if not (folder / name).exists()]
    if missing:
        sys.exit(f"get_lfw: {folder} lacks {', '.join(missing)}")
    count = sum(1 for _ in (folder / IMAGES).glob("*/*.jpg"))
    if count != N_IMAGES:
        sys.exit(f"get_lfw: {folder / IMAGES} holds {count} images, expected {N_IMAGES}")
    if md5(folder / "pairs.txt") != PAIRS_MD5:
        sys.exit(f"get_lfw: {folder / 'pairs.txt'} is not the official file (md5 differs)")


def from_local(source: Path, target: Path, copy: bool) -> None:
    check(source)
    target.mkdir(parents=True, exist_ok=True)
    for name in (*PROTOCOL_FILES, IMAGES):
        src, dst = source.resolve() / name, target / name
        if dst.exists() or dst.is_symlink():
            continue
        if not copy:
            dst.symlink_to(src)
        elif src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)


def fetch(name: str, dest: Path) -> None:
    errors = []
    for mirror in MIRRORS:
        try:
            print(f"downloading {mirror}{name}", flush=True)
            with (
                urllib.request.urlopen(mirror + name, timeout=60) as response,
                open(dest, "wb") as f,
            ):
                shutil.copyfileobj(response, f)
            return
        except OSError as error:
            errors.append(f"{mirror}{name}: {error}")
    sys.exit("get_lfw: download failed:\n  " + "\n  ".join(errors) + "\nuse --from DIR")


def download(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in PROTOCOL_FILES:
        if not (target / name).exists():
            fetch(name, target / name)
    if not (target / IMAGES).exists():
        with tempfile.TemporaryDirectory(dir=target) as tmp:
            archive = Path(tmp) / f"{IMAGES}.tgz"
            fetch(f"{IMAGES}.tgz", archive)
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            (Path(tmp) / IMAGES).rename(target / IMAGES)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--to", type=Path, default=Path("data/lfw"), help="destination folder")
    parser.add_argument("--from", dest="source", type=Path, help="an LFW copy already on disk")
    parser.add_argument("--copy", action="store_true", help="with --from: copy instead of link")
    args = parser.parse_args(argv)
    if args.source:
        from_local(args.source, args.to, args.copy)
    else:
        download(args.to)
    check(args.to)
    print(f"LFW ready in {args.to}")


if __name__ == "__main__":
    main()
