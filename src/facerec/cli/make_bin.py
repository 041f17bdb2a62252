#!/usr/bin/env python
"""Turn an LFW-format pairs list over an image folder into an insightface ``.bin`` pack.

    # LFW View 2 as insightface ships it: 6,000 pairs of 112x112 crops
    python scripts/make_bin.py data/lfw/pairs.txt data/lfw/lfw-deepfunneled --out lfw.bin \\
        --center-crop 150 --size 112
    # the files' own bytes, untouched (as insightface's lfw2pack.py)
    python scripts/make_bin.py pairsDevTest.txt data/lfw/lfw-deepfunneled --out dev.bin --size 0

The pack is a pickle of ``(bins, issame_list)``: two encoded images per pair, in the pairs
file's order, and one bool per pair (docs/evaluation.md). By default each image is centre-cropped
(``--center-crop``, none unless given), resized to ``--size`` (112) and stored as JPEG
(``--format png`` for lossless). Use it with ``scripts/evaluate.py CHECKPOINT --bin PACK.bin``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Write an insightface verification pack (.bin) from a pairs list.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[1],
    )
    parser.add_argument("pairs", type=Path, help="LFW-format pairs file (pairs.txt style)")
    parser.add_argument("image_root", type=Path, help="folder holding <name>/<name>_NNNN.jpg")
    parser.add_argument("--out", type=Path, required=True, help="the .bin file to write")
    parser.add_argument(
        "--center-crop", type=int, default=None, metavar="N", help="centre crop before resizing"
    )
    parser.add_argument(
        "--size",
        type=int,
        default=112,
        help="side of the stored images (0: keep each file's bytes as they are)",
    )
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality")
    return parser.parse_args(argv)


def make(args: argparse.Namespace) -> int:
    from facerec.data.binpack_writer import pack_pairs

    if args.center_crop and not args.size:
        raise ValueError("--center-crop needs --size (the side to resize the crop to)")
    pack = pack_pairs(
        args.pairs,
        args.image_root,
        args.out,
        center_crop=args.center_crop or None,
        size=args.size or None,
        ext=f".{args.format}",
        quality=args.quality,
    )
    n_same = int(pack.issame.sum())
    size = f"{args.size}x{args.size} {args.format}" if args.size else "original bytes"
    print(
        f"{args.out}: {len(pack)} pairs ({n_same} same, {len(pack) - n_same} different), "
        f"{len(pack.images)} images ({size}), {args.out.stat().st_size / 2**20:.1f} MiB"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from facerec.cli.errors import run_tool  # after parsing: --help stays instant

    return run_tool(lambda: make(args), "make_bin.py")


if __name__ == "__main__":
    sys.exit(main())
