"""Training-data throughput per worker process: stock torchvision route vs facerec's routes.

All routes load the same real LFW images (250x250 JPEGs, face in the middle) into 112x112
training samples with a random horizontal flip, one sample at a time in this one process and
without DataLoader workers, so each figure is what one worker process delivers:

* ``stock``: torchvision ``ImageFolder`` + PIL + ``CenterCrop(150)`` + ``Resize(112)`` +
  ``RandomHorizontalFlip`` + ``ToTensor`` (float32), the usual recipe.
* ``folder``: :class:`facerec.data.FaceFolder` (OpenCV decode + albumentations, uint8 out).
* ``packed``: :class:`facerec.data.PackedDataset` over a pack of the same images, made first in
  a temporary folder (its packing time is reported separately): one memory-map slice and one
  112x112 JPEG decode per sample.

Like DataLoader workers, the process uses one torch thread and no OpenCV thread pool. All image
files are read once before timing (warm page cache for every route), and the routes take turns
in short slices (rotating which goes first) so machine noise hits them alike; the median slice
is reported, and the ratio is the median of the per-round ratios. "workers per 1,000 images/s"
is how many loader processes (CPU cores) a GPU eating 1,000 images/s needs on this CPU.

Usage:
    python scripts/bench_data.py                            # 2000 images, 5 x 2 s per route
    python scripts/bench_data.py --lfw /data/lfw --images 5000 --seconds 5 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2
import numpy as np
import torch
from torchvision import datasets, transforms
from torchvision.io import decode_jpeg

from facerec.data.decode import decode_image
from facerec.data.folder import FaceFolder
from facerec.data.pack_writer import pack_images
from facerec.data.packed import PackedDataset
from facerec.data.transforms import augmentation, geometry


def default_lfw() -> Path:
    return Path(os.environ.get("FACEREC_LFW_ROOT") or "data/lfw")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--lfw", type=Path, default=default_lfw(),
        help="LFW folder holding lfw-deepfunneled/ (default: $FACEREC_LFW_ROOT or\n"
             "data/lfw)",
    )  # fmt: skip
    parser.add_argument("--images", type=int, default=2000, help="images sampled (2000)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per slice (2)")
    parser.add_argument("--repeats", type=int, default=5, help="slices per route (5)")
    parser.add_argument("--center-crop", type=int, default=150, help="centre crop side (150)")
    parser.add_argument("--size", type=int, default=112, help="training image side (112)")
    parser.add_argument("--quality", type=int, default=95, help="pack JPEG quality (95)")
    parser.add_argument("--seed", type=int, default=0, help="which images are sampled")
    return parser.parse_args(argv)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def rate(load: Callable[[int], object], order: list[int], cursor: list[int], seconds: float):
    """Images/s of ``load`` over ``order`` for about ``seconds``, continuing from ``cursor``."""
    done, start = 0, time.perf_counter()
    while True:
        for _ in range(16):  # check the clock every few images, not every one
            load(order[cursor[0] % len(order)])
            cursor[0] += 1
        done += 16
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    image_root = args.lfw / "lfw-deepfunneled"
    if not image_root.is_dir():
        raise SystemExit(f"LFW images not found: {image_root} (set --lfw or FACEREC_LFW_ROOT)")
    torch.set_num_threads(1)  # what a DataLoader worker runs with

    stock = transforms.Compose([
        transforms.CenterCrop(args.center_crop),
        transforms.Resize(args.size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
    ])  # fmt: skip
    folder = datasets.ImageFolder(str(image_root), transform=stock)
    rng = np.random.default_rng(args.seed)
    chosen = rng.choice(len(folder), size=min(args.images, len(folder)), replace=False)
    chosen.sort()  # files in folder order, as a pack stores them
    samples = [folder.samples[i] for i in chosen.tolist()]
    paths = [Path(p) for p, _ in samples]
    labels = np.array([label for _, label in samples], dtype=np.int64)
    print_setup(args, image_root, len(folder), paths)

    with tempfile.TemporaryDirectory(prefix="facerec-bench-") as tmp:
        time_packing(args, image_root, paths, labels, folder.classes, tmp)
        face_folder = FaceFolder(
            paths, labels, geometry(args.size, args.center_crop), augmentation(True)
        )
        packed = PackedDataset(tmp, augmentation(True))
        index_of = chosen.tolist()
        routes: dict[str, Callable[[int], object]] = {
            "stock   ImageFolder+PIL+torchvision": lambda i: folder[index_of[i]],
            "folder  FaceFolder (cv2+albumentations)": lambda i: face_folder[(i, 1000 + i)],
            "packed  PackedDataset (112px JPEG shards)": lambda i: packed[(i, 1000 + i)],
        }
        order = rng.permutation(len(paths)).tolist()
        rates = interleaved(routes, order, args.seconds, args.repeats)
        print(
            f"\nimages/s per process, median of {args.repeats} x {args.seconds:g} s slices "
            f"(interleaved):"
        )
        table(rates, "vs stock", workers=True)
        time_decoders(args, packed, order)


def print_setup(
    args: argparse.Namespace, image_root: Path, n_images: int, paths: list[Path]
) -> None:
    """Print the machine and the sample; read every sampled file once (warms the page cache)."""
    source_bytes = sum(len(p.read_bytes()) for p in paths)
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical cores visible{load}), Python "
          f"{platform.python_version()}, torch {torch.__version__}, 1 torch thread")  # fmt: skip
    print(f"images: {len(paths)} of {n_images} from {image_root} "
          f"({source_bytes / len(paths) / 1e3:.1f} kB each), "
          f"centre crop {args.center_crop} -> {args.size}, random flip")  # fmt: skip


def time_packing(
    args: argparse.Namespace,
    image_root: Path,
    paths: list[Path],
    labels: np.ndarray,
    classes: list[str],
    out: str,
) -> None:
    """Pack ``paths`` (``(N,)`` ``labels``) into ``out`` in this one process; print how fast."""
    start = time.perf_counter()
    info = pack_images(
        paths, labels, classes, out, args.size, args.center_crop, args.quality,
        source=str(image_root),
    )  # fmt: skip
    seconds = time.perf_counter() - start
    shards = list(Path(out).glob("shard-*.dat"))
    pack_bytes = sum(f.stat().st_size for f in shards)
    n = info.num_images
    print(
        f"packing: {n} images in {seconds:.2f} s ({n / seconds:.0f} images/s, 1 process), "
        f"{pack_bytes / 1e6:.1f} MB in {len(shards)} shard(s) "
        f"({pack_bytes / n / 1e3:.1f} kB/image, JPEG q{args.quality})"
    )


def time_decoders(args: argparse.Namespace, packed: PackedDataset, order: list[int]) -> None:
    """The pack's decoder against the alternatives on this CPU (same bytes, decode only)."""
    encoded = [np.array(packed.record(i)[0]) for i in range(len(packed))]
    as_tensors = [torch.from_numpy(b) for b in encoded]
    bgr = cv2.IMREAD_COLOR
    decoders: dict[str, Callable[[int], object]] = {
        "decode_image: header check + cv2.imdecode to RGB": lambda i: decode_image(encoded[i]),
        "cv2.imdecode BGR + cvtColor": lambda i: cv2.cvtColor(
            cv2.imdecode(encoded[i], bgr), cv2.COLOR_BGR2RGB
        ),
        "torchvision.io.decode_jpeg": lambda i: decode_jpeg(as_tensors[i]),
    }
    seconds = args.seconds / 3
    rates = interleaved(decoders, order, seconds, args.repeats)
    print(
        f"\n{args.size}x{args.size} JPEG decode only, images/s, median of {args.repeats} x "
        f"{seconds:.2g} s slices:"
    )
    table(rates, "vs first")


def interleaved(
    routes: dict[str, Callable[[int], object]], order: list[int], seconds: float, repeats: int
) -> dict[str, list[float]]:
    """Images/s of each route per slice; routes take turns, rotating which goes first."""
    cursors = {name: [0] for name in routes}
    for load in routes.values():  # warm-up: imports, first allocations, lazy memmaps
        for i in order[:32]:
            load(i)
    rates: dict[str, list[float]] = {name: [] for name in routes}
    names = list(routes)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            rates[name].append(rate(routes[name], order, cursors[name], seconds))
    return rates


def table(rates: dict[str, list[float]], versus: str, workers: bool = False) -> None:
    """Median, spread and ratio to the first route; loader processes per 1,000 images/s.

    The ratio is the median over rounds of the ratio within a round: slices of one round are
    seconds apart, so a neighbour's job slows both sides of each ratio alike.
    """
    header = f"{'route':44s} {'images/s':>9s} {'(min-max)':>13s} {versus:>9s}"
    print(header + (f" {'workers per 1,000 images/s':>27s}" if workers else ""))
    base = next(iter(rates.values()))
    for name, values in rates.items():
        median = statistics.median(values)
        ratio = statistics.median(v / b for v, b in zip(values, base, strict=True))
        spread = f"({min(values):.0f}-{max(values):.0f})"
        line = f"{name:44s} {median:9.0f} {spread:>13s} {ratio:8.2f}x"
        print(line + (f" {1000 / median:27.2f}" if workers else ""))


if __name__ == "__main__":
    main()
