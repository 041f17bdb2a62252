"""``facerec gallery``: enrol the people you know, change them, calibrate "unknown".

    facerec gallery build MODEL people/ --out gallery/          # people/<name>/<photos>
    facerec gallery add MODEL gallery/ people/                  # new or changed photos only
    facerec gallery remove gallery/ --identity Bob --photo people/Ann/old.jpg
    facerec gallery calibrate MODEL gallery/ --folders strangers/ --far 1e-3
    facerec gallery calibrate MODEL gallery/ --pairs lfw/pairsDevTest.txt:lfw/lfw-deepfunneled
    facerec gallery show gallery/

Photos are prepared as the model's training images (its alignment included). A photo that
cannot be read or shows no face is skipped, one with several faces keeps the alignment's pick:
each is named and counted in the summary. docs/identification.md has the format and the rule.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facerec.cli.args import add_align_argument, add_runtime_arguments, extras_as_errors

PROG = "facerec gallery"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[1])  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str, model: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        if model:
            p.add_argument("model", type=Path, help="checkpoint (.pt), model folder or .onnx")
            add_align_argument(p)
            add_runtime_arguments(p, batches=False)
        return p

    p = command("build", "a new gallery of a folder of identity folders")
    p.add_argument("folder", type=Path, help="FOLDER/<name>/<photos>")
    p.add_argument("--out", type=Path, required=True, help="the gallery folder to write")
    p.add_argument("--float16", action="store_true", help="store embeddings as float16")
    p = command("add", "add new or changed photos of identity folders")
    p.add_argument("gallery", type=Path)
    p.add_argument("folder", type=Path, help="FOLDER/<name>/<photos>")
    p = command("remove", "remove identities or photos (no model needed)", model=False)
    p.add_argument("gallery", type=Path)
    p.add_argument("--identity", nargs="+", default=[], metavar="NAME")
    p.add_argument("--photo", nargs="+", default=[], type=Path, metavar="FILE")
    p = command("calibrate", "the unknown threshold from people not enrolled")
    p.add_argument("gallery", type=Path)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--folders", type=str, help="identity folders of people not enrolled")
    source.add_argument("--pairs", type=str, metavar="PAIRS:IMAGE_ROOT",
                        help="an LFW-format pairs file over its images")  # fmt: skip
    p.add_argument(
        "--far",
        type=float,
        default=1e-3,
        help="false-accept rate: the fraction of strangers' photos named as someone",
    )
    command("show", "what a gallery holds", model=False).add_argument("gallery", type=Path)
    return parser.parse_args(argv)


def _embedder(args: argparse.Namespace):
    from facerec.inference import FaceEmbedder

    return FaceEmbedder.load(args.model, args.device, align=args.align, prog=PROG)


def _save(gallery, report, folder: Path, what: str = "") -> None:
    from facerec.inference.gallery import write_gallery

    if not gallery.names:
        raise ValueError(f"no face enrolled: {report.lines()[0]}")
    write_gallery(gallery, folder)
    for line in report.lines(None if what else gallery):
        print(what + line)
    print(f"gallery written: {folder}")


def run(args: argparse.Namespace) -> int:
    from facerec.inference import calibration, enrol
    from facerec.inference.gallery import read_gallery

    show = sys.stderr.isatty()
    if args.command == "build":
        gallery, report = enrol.build_gallery(
            _embedder(args), args.folder, "float16" if args.float16 else "float32", show
        )
        _save(gallery, report, args.out)
        return 0
    gallery = read_gallery(args.gallery)
    if args.command == "show":
        return show_gallery(gallery, args.gallery)
    if args.command == "remove":
        if not args.identity and not args.photo:
            raise ValueError("remove what? give --identity NAME ... and/or --photo FILE ...")
        _save(enrol.remove_from(gallery, args.identity, args.photo), enrol.Report(), args.gallery)
        return 0
    embedder = _embedder(args)
    enrol.check_model(gallery, enrol.model_record(embedder), args.gallery)
    if args.command == "add":
        _save(*enrol.add_folders(gallery, embedder, args.folder, show), args.gallery)
        return 0
    source = args.folders or args.pairs
    gallery, report, threshold = calibration.calibrate(gallery, embedder, source, args.far, show)
    _save(gallery, report, args.gallery, "calibration set: ")
    _, strangers = calibration.threshold_for(gallery)
    print(f"threshold {threshold:.4f} (cosine) at false-accept rate {args.far:g}, measured on "
          f"{strangers} photos of people not enrolled ({source})")  # fmt: skip
    return 0


def show_gallery(gallery, where: Path) -> int:
    """Print what ``gallery`` holds: identities, images, model, calibration."""
    from facerec.inference.calibration import threshold_for

    print(f"gallery {where}: {len(gallery.names)} identities, {len(gallery.embeddings)} images, "
          f"{gallery.embeddings.shape[1]}-d {gallery.embeddings.dtype}")  # fmt: skip
    print(f"model: {gallery.model['source']} (fingerprint {gallery.model['fingerprint']})")
    if gallery.calibration is None:
        print("calibration: none (identify needs --threshold, or run `gallery calibrate`)")
    else:
        threshold, strangers = threshold_for(gallery)
        far = gallery.calibration["far"]
        print(f"calibration: {gallery.calibration['source']}: threshold {threshold:.4f} at "
              f"false-accept rate {far:g} ({strangers} stranger photos)")  # fmt: skip
    for name, images in list(zip(gallery.names, gallery.images, strict=True))[:20]:
        print(f"  {name}: {len(images)} image(s)")
    if len(gallery.names) > 20:
        print(f"  ... and {len(gallery.names) - 20} more")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from facerec.cli.errors import run_tool  # after parsing: --help stays instant

    return run_tool(extras_as_errors(lambda: run(args)), PROG)


if __name__ == "__main__":
    sys.exit(main())
