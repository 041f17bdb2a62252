"""Pack a folder dataset into pre-cropped 112x112 JPEG shards for ``data=packed``.

Decodes every image once, centre-crops and resizes it, re-encodes it as JPEG and writes the
results into a few large shard files plus an index (see :mod:`facerec.data.packed`). Training
then reads one memory-map slice and decodes one small JPEG per sample.

Usage:
    python scripts/pack_dataset.py /data/casia /data/casia-pack --workers 8
    # LFW's identity-disjoint training split (deep-funneled 250x250, face in the middle):
    python scripts/pack_dataset.py data/lfw/lfw-deepfunneled packs/lfw-devtrain \\
        --people-file data/lfw/peopleDevTrain.txt --center-crop 150
    python train.py data=packed data.root=/data/casia-pack
    # raw photos: detect + align each face (MTCNN, the align extra) into the pack
    python scripts/pack_dataset.py raw/ packs/raw --align --select largest --on-missing skip
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from facerec.cli.align import add_align_options, align_for_pack, options_from_args
from facerec.data.pack_writer import pack_folder
from facerec.data.packed import DEFAULT_SHARD_BYTES
from facerec.data.pairs import read_people


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("root", type=Path, help="dataset folder: root/<identity>/<image>")
    parser.add_argument("out", type=Path, help="pack folder to write (created)")
    parser.add_argument(
        "--people-file", type=Path, help="LFW-format people file: pack only these identities"
    )
    parser.add_argument(
        "--min-images", type=int, default=1, help="drop identities with fewer images (1)"
    )
    parser.add_argument(
        "--center-crop", type=int, help="centre crop side before resizing (default: none)"
    )
    parser.add_argument("--size", type=int, default=112, help="stored image side (112)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality, 1..100 (95)")
    parser.add_argument(
        "--shard-mb", type=float, default=DEFAULT_SHARD_BYTES / 2**20,
        help=f"start a new shard file beyond this many MiB ({DEFAULT_SHARD_BYTES // 2**20})",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=0, help="encoding processes (0: this one)")
    parser.add_argument(
        "--no-reduce", action="store_true",
        help="always decode at full size (default: JPEG DCT-domain 1/2, 1/4, 1/8 decoding when\n"
             "the crop still has --size pixels or more)",
    )  # fmt: skip
    parser.add_argument(
        "--chroma", choices=["420", "444"], default="420",
        help="JPEG chroma subsampling (420). 444: 1.2x larger files, decoded bit-identically\n"
             "by nvjpeg, which upsamples 420 chroma coarsely (for data.decode=device)",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace a pack in OUT")
    parser.add_argument("--align", action="store_true",
                        help="detect + align faces first (crops kept in OUT.aligned/)")  # fmt: skip
    add_align_options(parser, size=False)
    args = parser.parse_args(argv)
    if not 1 <= args.quality <= 100:
        parser.error(f"--quality must be in 1..100, got {args.quality}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from facerec.cli.errors import run_tool

    return run_tool(lambda: pack(args), "pack_dataset.py")


def pack_preprocessing(args: argparse.Namespace) -> dict:
    """How the pack's images are made, as every model file records it (its header's
    ``preprocessing``): aligned (then no crop) or centre-cropped, at ``--size``."""
    from facerec.inference.preprocessing import Preprocessing

    if args.align:
        return Preprocessing(args.size, None, alignment=options_from_args(args)).to_dict()
    return Preprocessing(args.size, args.center_crop or None).to_dict()


def pack(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    people = read_people(args.people_file) if args.people_file else None
    start = time.perf_counter()
    root = align_for_pack(args, people) if args.align else args.root
    info = pack_folder(
        root,
        args.out,
        people,
        args.min_images,
        image_size=args.size,
        center_crop=None if args.align else args.center_crop,
        quality=args.quality,
        shard_bytes=int(args.shard_mb * 2**20),
        workers=args.workers,
        reduce=not args.no_reduce,
        chroma=args.chroma,
        overwrite=args.overwrite,
        show_progress=True,
        preprocessing=pack_preprocessing(args),
    )
    seconds = time.perf_counter() - start
    print(f"{args.out}: {info.summary()}")
    print(f"packed in {seconds:.1f} s ({info.num_images / seconds:.0f} images/s)")


if __name__ == "__main__":
    sys.exit(main())
