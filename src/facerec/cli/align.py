"""``scripts/align.py SRC DST``: detect and align every face image of an identity folder.

    python scripts/align.py raw/ aligned/                 # raw/<identity>/<img> -> aligned/...
    python scripts/align.py raw/ aligned/ --select center --on-missing skip
    python scripts/align.py crops/ aligned/ --on-missing whole     # already cropped faces
    python scripts/align.py raw/ aligned/ --landmarks marks.csv    # image,x1,y1,...,x5,y5
    python train.py data=folder data.root=aligned/ data.center_crop=null

Each image becomes a 112x112 crop with its five landmarks (MTCNN) fitted by least squares onto
the ArcFace template, written under DST with the same relative path. Several faces: the
largest (or the one nearest the centre). A face MTCNN misses or misplaces is looked for
again in padded, enhanced and rotated views (docs/alignment.md); no face at all: resized whole
if the photo is a face crop already, else centre-cropped (``--on-missing``), named and
counted. A second run skips the files already done with the same options
(DST/.facerec-align.json).
The summary is printed and written to DST/align-summary.json. Exit status: 0 when the folder
was processed (problems are counted, not fatal), 2 on an error (no source folder, bad option),
3 when the align extra is missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

__all__ = ["add_align_options", "align_for_pack", "main", "options_from_args"]


def add_align_options(parser: argparse.ArgumentParser, size: bool = True) -> None:
    """The alignment options every aligning tool shares (``--select``, ``--on-missing`` ...);
    ``size`` False leaves ``--size`` to the tool (``pack_dataset.py`` has its own)."""
    group = parser.add_argument_group("alignment")
    several = "several faces: keep the largest, or the one nearest the centre"
    group.add_argument("--select", choices=("largest", "center"), default="largest", help=several)
    group.add_argument("--on-missing", choices=("auto", "whole", "center", "skip"),
                       default="auto",
                       help="no face found: 'whole' resizes the whole image (a face crop "
                            "already), 'center' takes the centred 0.6 of its shorter side, "
                            "'skip' leaves it out, 'auto' (default) resizes whole the images "
                            "that look like face crops and centre-crops the rest; counted and "
                            "named either way")  # fmt: skip
    group.add_argument("--search", default=None, metavar="STEPS",
                       help="where to look again when the plain detection misses, in order "
                            "(default pad,enhance,small,rotate; '' for nowhere)")  # fmt: skip
    if size:
        group.add_argument("--size", type=int, default=112, help="side of the aligned crops (112)")
    group.add_argument("--min-face", type=int, default=20, help="smallest face side searched (px)")
    group.add_argument("--align-batch", type=int, default=32,
                       help="same-sized images detected together (32)")  # fmt: skip


def options_from_args(args: argparse.Namespace):
    from facerec.align.options import AlignOptions

    search = {} if args.search is None else {"search": [s for s in args.search.split(",") if s]}
    return AlignOptions(size=args.size, select=args.select, on_missing=args.on_missing,
                        min_face=args.min_face, **search)  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Detect and align the faces of an identity folder (MTCNN + ArcFace template).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[1],
    )
    parser.add_argument("src", type=Path, help="raw folder: SRC/<identity>/<image>")
    parser.add_argument("dst", type=Path, help="aligned folder to write (same layout)")
    add_align_options(parser)
    parser.add_argument("--landmarks", type=Path, default=None, metavar="FILE",
                        help="five landmarks per image, used instead of detecting: CSV "
                             "'image,x1,y1,...,x5,y5' or insightface's 'image x1 y1 ... x5 y5 "
                             "score' (image: path under SRC or file name)")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="where MTCNN runs: cpu | cuda | auto")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def align(args: argparse.Namespace) -> int:
    import torch

    from facerec.align.detect import FaceDetector, MissingExtra
    from facerec.align.folder import align_folder
    from facerec.distributed import resolve_device
    from facerec.training.malloc import keep_freed_memory

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    keep_freed_memory(True)  # MTCNN too: system time 0.5 s -> 0.05 s per 64 images
    if args.threads:
        torch.set_num_threads(args.threads)
    options = options_from_args(args)
    if not args.src.is_dir():
        raise FileNotFoundError(f"source folder not found (or not a folder): {args.src}")
    try:
        detector = FaceDetector(resolve_device(args.device), min_face=options.min_face)
    except MissingExtra as error:
        print(f"align.py: error: {error}", file=sys.stderr)
        return 3
    start = time.perf_counter()
    summary = align_folder(args.src, args.dst, options, None, detector, args.align_batch,
                           progress=not args.no_progress, landmarks=args.landmarks)  # fmt: skip
    seconds = time.perf_counter() - start
    for line in summary.lines():
        print(line)
    done = summary.total - summary.cached
    print(f"{args.dst}: {seconds:.1f} s ({done / max(seconds, 1e-9):.1f} images/s aligned now)")
    report = {"options": options.as_dict(), "key": options.key, "seconds": round(seconds, 1),
              "landmarks": str(args.landmarks) if args.landmarks else None,
              **summary.as_json()}  # fmt: skip
    args.dst.mkdir(parents=True, exist_ok=True)
    (args.dst / "align-summary.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


def align_for_pack(args: argparse.Namespace, people: list[str] | None) -> Path:
    """``pack_dataset.py --align``: align the images it would pack into ``<out>.aligned/``
    (kept: a re-run, or a re-pack with other shard options, detects nothing) and return that
    folder, which is then packed without a centre crop."""
    from facerec.align.folder import align_folder
    from facerec.data.folder import scan_folder
    from facerec.training.malloc import keep_freed_memory

    keep_freed_memory(True)
    scan = scan_folder(args.root, set(people) if people is not None else None, args.min_images)
    dst = args.out.with_name(args.out.name + ".aligned")
    summary = align_folder(args.root, dst, options_from_args(args), scan.paths,
                           batch_size=args.align_batch)  # fmt: skip
    for line in summary.lines():
        print(f"align: {line}")
    return dst


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from facerec.cli.errors import run_tool  # after parsing: --help stays instant

    return run_tool(lambda: align(args), "align.py")
