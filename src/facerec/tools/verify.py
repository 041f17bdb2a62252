#!/usr/bin/env python
"""Are two face images the same person? One checkpoint, two images, one decision.

    python scripts/evaluate.py best.pt                 # once: stores best.pt.threshold.json
    python scripts/verify.py best.pt a.jpg b.jpg       # uses that threshold
    python scripts/verify.py best.pt a.jpg b.jpg --threshold 1.25

Prints the cosine similarity and the squared L2 distance (``2 - 2 cos``) of the two images'
flip-fused, L2-normalised embeddings, then "same" when the distance is below the threshold. The
threshold is ``--threshold`` if given, else the one ``scripts/evaluate.py`` stored beside the
checkpoint (``<checkpoint>.threshold.json``); the output says which. Images are centre-cropped
as in training (the checkpoint's data.center_crop) unless ``--center-crop`` says otherwise.
Exit status: 0 whatever the decision, 2 on an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facerec.tool_args import add_preparation_arguments, add_runtime_arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Same person or not: compare two face images with a facerec checkpoint.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[1],
    )
    parser.add_argument("checkpoint", type=Path, help="a .pt file written by train.py")
    parser.add_argument("image1", type=Path)
    parser.add_argument("image2", type=Path)
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="squared-distance threshold (default: the one evaluate.py stored)",
    )
    add_preparation_arguments(parser)
    add_runtime_arguments(parser, batches=False)
    return parser.parse_args(argv)


def verify(args: argparse.Namespace) -> int:
    from facerec import inference

    model, cfg, meta = inference.load_model(args.checkpoint, args.device)
    if args.threshold is not None:
        threshold, source = args.threshold, "--threshold"
    else:
        record = inference.load_threshold(args.checkpoint)
        if record is None:
            raise ValueError(
                f"no threshold for {args.checkpoint}: pass --threshold T, or run "
                f"scripts/evaluate.py {args.checkpoint} first (it writes "
                f"{inference.threshold_path(args.checkpoint)})"
            )
        threshold = float(record["threshold"])
        source = (
            f"{record['file']}: chosen on {record.get('set')} "
            f"(accuracy {record.get('accuracy', float('nan')):.4f}, step {record.get('step')})"
        )
        if record.get("step") != meta["step"]:
            print(
                f"verify.py: warning: the threshold was chosen at step {record.get('step')} but "
                f"the checkpoint is now at step {meta['step']}; re-run scripts/evaluate.py",
                file=sys.stderr,
            )
    device = next(model.parameters()).device
    align = inference.resolve_alignment(cfg, args.align, "verify.py")
    paths = inference.align_paths([args.image1, args.image2], align, device)
    crop = inference.center_crop(cfg, args.center_crop, aligned=align is not None)
    images = inference.load_images(paths, inference.image_size(cfg), crop)
    a, b = inference.embed_images(model, images, device).astype("float64")
    cosine = float(a @ b)
    distance = float(((a - b) ** 2).sum())
    same = distance < threshold
    print(f"image 1:           {args.image1}")
    print(f"image 2:           {args.image2}")
    print(f"cosine similarity: {cosine:.4f}")
    print(f"squared distance:  {distance:.4f}")
    print(f"threshold:         {threshold:.4f} (from {source})")
    print(
        f"decision:          {'same person' if same else 'different people'} "
        f"(distance {'<' if same else '>='} threshold)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from facerec.cli import run_tool  # after parsing: --help stays instant

    return run_tool(lambda: verify(args), "verify.py")


if __name__ == "__main__":
    sys.exit(main())
