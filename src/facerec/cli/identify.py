"""``facerec identify``: who is in each photo, or "unknown".

    facerec identify MODEL gallery/ door.jpg party.jpg             # the calibrated threshold
    facerec identify MODEL gallery/ *.jpg --far 1e-2 --top-k 3 --json answers.json
    facerec identify MODEL gallery/ photo.jpg --threshold 0.4

Every face found in each photo (a model trained on aligned faces: every face MTCNN finds, with
its box; a centre-cropped model: the photo as one face) is searched in the gallery; its top-k
identities are printed with their cosine similarity, and its answer is the best identity when
that similarity reaches the threshold, else "unknown". The threshold is ``--threshold`` (a
cosine, yours), else the one for ``--far`` (default: the rate calibrated) measured on the
gallery's calibration set of people not enrolled (``facerec gallery calibrate``), printed with
where it came from. A photo that cannot be read or shows no face is named and counted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facerec.cli.args import add_align_argument, add_runtime_arguments, extras_as_errors
from facerec.messages import first_line

PROG = "facerec identify"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[1])  # fmt: skip
    parser.add_argument("model", type=Path, help="checkpoint (.pt), model folder or .onnx")
    parser.add_argument("gallery", type=Path, help="a gallery folder (facerec gallery build)")
    parser.add_argument("photos", type=Path, nargs="+", metavar="PHOTO")
    parser.add_argument("--top-k", type=int, default=5, help="identities listed per face")
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument(
        "--far",
        type=float,
        default=None,
        help="false-accept rate for the threshold (default: the calibrated one)",
    )
    rule.add_argument("--threshold", type=float, default=None, help="cosine threshold in [-1, 1]")
    parser.add_argument("--faces", choices=("auto", "all", "one"), default="auto",
                        help="all faces (detected), one (as training), auto: all for a model "
                        "trained on aligned faces, else one")  # fmt: skip
    parser.add_argument(
        "--index",
        choices=("auto", "exact", "faiss"),
        default="auto",
        help="search: exact up to 100k identities, FAISS beyond (auto)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write every answer here")
    add_align_argument(parser)
    add_runtime_arguments(parser, batches=False)
    return parser.parse_args(argv)


def threshold_of(args: argparse.Namespace, searcher) -> tuple[float | None, str]:
    """The cosine threshold and where it came from (None: no threshold, a warning)."""
    from facerec.inference.calibration import threshold_for

    if args.threshold is not None:
        if not -1.0 <= args.threshold <= 1.0:
            raise ValueError(f"--threshold {args.threshold}: a cosine lies in [-1, 1]")
        return args.threshold, "--threshold, yours"
    gallery = searcher.gallery
    if gallery.calibration is None:
        if args.far is not None:
            raise ValueError(f"--far needs a calibrated gallery: run `facerec gallery "
                             f"calibrate MODEL {args.gallery} --folders ...` first")  # fmt: skip
        print(
            f"{PROG}: warning: {args.gallery} is not calibrated and no --threshold given: "
            "every face gets its nearest identity, none is called unknown",
            file=sys.stderr,
        )
        return None, "none"
    threshold, strangers = threshold_for(gallery, args.far, searcher.index)
    far = args.far if args.far is not None else gallery.calibration["far"]
    return threshold, (f"false-accept rate {far:g} on {strangers} photos of people not "
                       f"enrolled, {gallery.calibration['source']}")  # fmt: skip


def identify(args: argparse.Namespace) -> int:
    import json

    from facerec.inference import FaceEmbedder
    from facerec.inference.gallery import read_gallery
    from facerec.inference.identify import Searcher

    if args.top_k < 1:
        raise ValueError(f"--top-k {args.top_k}: at least 1")
    gallery = read_gallery(args.gallery)  # before the model: a bad gallery fails fast
    embedder = FaceEmbedder.load(args.model, args.device, align=args.align, prog=PROG)
    searcher = Searcher(gallery, embedder, args.index, args.gallery)
    threshold, source = threshold_of(args, searcher)
    shown = "none" if threshold is None else f"{threshold:.4f}"
    print(f"gallery {args.gallery}: {len(gallery.names)} identities; threshold {shown} "
          f"(cosine; {source})")  # fmt: skip
    report, problems = [], {"unreadable": 0, "no face": 0}
    for photo in args.photos:
        try:
            answers = searcher.photo(photo, args.top_k, threshold, args.faces)
        except OSError as error:
            problems["unreadable"] += 1
            print(f"{photo}: unreadable, skipped ({first_line(error)})")
            continue
        if not answers:
            problems["no face"] += 1
        report.append({"photo": str(photo), "faces": [a.as_dict() for a in answers]})
        print_photo(photo, answers)
    faces = [f for r in report for f in r["faces"]]
    unknown = sum(f["identity"] == "unknown" for f in faces)
    print(f"{len(args.photos)} photo(s), {len(faces)} face(s): {len(faces) - unknown} named, "
          f"{unknown} unknown; {problems['no face']} without a face, "
          f"{problems['unreadable']} unreadable")  # fmt: skip
    if args.json:
        record = {"gallery": str(args.gallery), "threshold": threshold,
                  "threshold_source": source, "photos": report}  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"answers: {args.json}")
    return 0


def print_photo(photo: Path, answers) -> None:
    """One line per photo, then one per face: box, answer, top-k."""
    print(f"{photo}: {len(answers)} face(s)" if answers else f"{photo}: no face found")
    for i, a in enumerate(answers, 1):
        box = ",".join(f"{v:.0f}" for v in a.box)
        top = ", ".join(f"{n} {s:.3f}" for n, s in a.candidates)
        print(f"  face {i} [{box}]: {a.identity or '(no threshold)'}  <- {top}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from facerec.cli.errors import run_tool  # after parsing: --help stays instant

    return run_tool(extras_as_errors(lambda: identify(args)), PROG)


if __name__ == "__main__":
    sys.exit(main())
