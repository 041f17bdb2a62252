#!/usr/bin/env python
"""Are two face images the same person? One checkpoint, two images, one decision.

    facerec evaluate best.pt                     # once: stores best.pt.threshold.json
    facerec verify best.pt a.jpg b.jpg           # uses that threshold
    facerec verify best.pt a.jpg b.jpg --threshold 1.25
    facerec verify model/ a.jpg b.jpg --reference lfw=pairs.txt:lfw-deepfunneled

Prints the cosine similarity and the squared L2 distance (``2 - 2 cos``) of the two images'
flip-fused, L2-normalised embeddings, then "same" when the distance is below the threshold. The
threshold is ``--threshold`` if given (yours), else the one ``facerec evaluate`` stored beside
the model (``<checkpoint>.threshold.json``, or ``threshold.json`` in a model folder); the output
says which, and quotes what a threshold file says of its set and accuracy as the file's claim.

A threshold file is a claim to check. One at 2.0 or more is refused: a squared distance of 2 is
cosine 0, so it calls every pair of orthogonal embeddings the same person, and a trained face
model puts most pairs of different people near cosine 0: such a threshold accepts about half of
them or more (trained models' thresholds lie near 1.2 to 1.6). ``--threshold`` past 2.0 is
used, with a warning. With ``--reference`` (a pairs file over images, or a ``.bin`` pack) the
threshold, wherever it came from, is also measured there: one that calls more than half of the
reference's different-person pairs "same" is refused. Images are centre-cropped as in training
(the model's preprocessing) unless ``--center-crop`` says otherwise. Exit status: 0 whatever the
decision, 2 on an error or a refused threshold.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facerec.cli.args import add_preparation_arguments, add_runtime_arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Same person or not: compare two face images with a facerec checkpoint.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[1],
    )
    parser.add_argument("checkpoint", type=Path, help="a .pt file, a model folder or .onnx")
    parser.add_argument("image1", type=Path)
    parser.add_argument("image2", type=Path)
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="squared-distance threshold in [0, 4] (default: the one evaluate stored; a stored "
        "one must be below 2.0, cosine 0, or it is refused)",
    )
    parser.add_argument(
        "--reference",
        default=None,
        metavar="[NAME=]PAIRS:IMAGE_ROOT|PACK.bin",
        help="a verification set to check the threshold on: refused if it calls more than half "
        "of the set's different-person pairs the same person",
    )
    add_preparation_arguments(parser)
    add_runtime_arguments(parser, batches=False)
    return parser.parse_args(argv)


def threshold_of(args: argparse.Namespace, meta: dict) -> tuple[float, str]:
    """The threshold and where it came from: ``--threshold``, else the model's file (a claim,
    refused past :data:`facerec.inference.MAX_THRESHOLD`)."""
    from facerec import inference

    if args.threshold is not None:
        if not 0.0 <= args.threshold <= 4.0:
            raise ValueError(f"--threshold {args.threshold}: squared distances lie in [0, 4]")
        if args.threshold >= inference.MAX_THRESHOLD and args.reference is None:
            print(
                f"verify.py: warning: --threshold {args.threshold:g} is at or past "
                f"{inference.MAX_THRESHOLD:g} (cosine <= 0): it calls most pairs of different "
                "people the same person",
                file=sys.stderr,
            )
        return args.threshold, "--threshold, yours"
    record = inference.load_threshold(args.checkpoint)
    if record is None:
        raise ValueError(
            f"no threshold for {args.checkpoint}: pass --threshold T, or run "
            f"evaluate.py {args.checkpoint} first (it writes "
            f"{inference.threshold_path(args.checkpoint)})"
        )
    if record.get("step") != meta["step"]:
        print(
            f"verify.py: warning: the threshold file says step {record.get('step')} but the "
            f"model is at step {meta['step']}; re-run evaluate.py",
            file=sys.stderr,
        )
    return float(record["threshold"]), inference.threshold_claim(record)


def check_on_reference(args, threshold: float, source: str, embedder) -> str | None:
    """Measure the threshold on ``--reference``; refuse it there if it accepts most impostors.

    Returns:
        What was measured (printed), or None without a reference.
    """
    if args.reference is None:
        return None
    from facerec import inference
    from facerec.cli.evaluate import bin_set, pairs_set
    from facerec.training.verifier import Verifier

    prep = embedder.preprocessing
    make = bin_set if args.reference.lower().endswith(".bin") else pairs_set
    name, reference = make(args.reference, prep, args.center_crop)
    device = embedder.device
    verifier = Verifier(reference, inference.batch_size_for(device), num_workers=0)
    result = verifier.evaluate(embedder.model, device, channels_last=prep.channels_last)
    rate = inference.impostor_accept_rate(threshold, result.distances, result.issame)
    where = f"the reference set {name} ({args.reference})"
    inference.check_threshold(threshold, source, rate, where)
    accepted = float((result.distances[result.issame] < threshold).mean())
    return (
        f"measured here on {where}: {rate:.1%} of its different-person pairs and "
        f"{accepted:.1%} of its same-person pairs called the same person"
    )


def verify(args: argparse.Namespace) -> int:
    from facerec.inference import FaceEmbedder

    embedder = FaceEmbedder.load(args.checkpoint, args.device, align=args.align,
                                 center_crop=args.center_crop, prog="verify.py")  # fmt: skip
    threshold, source = threshold_of(args, embedder.meta)
    measured = check_on_reference(args, threshold, source, embedder)
    result = embedder.compare(args.image1, args.image2, threshold)
    cosine, distance, same = result.similarity, result.distance, result.same
    print(f"image 1:           {args.image1}")
    print(f"image 2:           {args.image2}")
    print(f"cosine similarity: {cosine:.4f}")
    print(f"squared distance:  {distance:.4f}")
    print(f"threshold:         {threshold:.4f} (from {source})")
    if measured:
        print(f"threshold check:   {measured}")
    print(
        f"decision:          {'same person' if same else 'different people'} "
        f"(distance {'<' if same else '>='} threshold)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from facerec.cli.errors import run_tool  # after parsing: --help stays instant

    return run_tool(lambda: verify(args), "verify.py")


if __name__ == "__main__":
    sys.exit(main())
