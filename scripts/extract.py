#!/usr/bin/env python
"""Embed every image under a folder with a trained checkpoint.

    python scripts/extract.py best.pt data/lfw/lfw-deepfunneled --out lfw_emb.npy
    python scripts/extract.py best.pt faces/ --out faces.npy --no-flip --center-crop 0

Writes ``--out`` (``.npy``): float32 ``(N, D)``, one L2-normalised embedding per image (the
image's and its mirror's embeddings summed, then normalised, as verification does; ``--no-flip``
embeds the image alone), and beside it the index ``<out>.txt`` (same stem): the N image paths,
relative to FOLDER, one per line in the same order (sorted paths, the folder searched
recursively). Two rows ``a`` and ``b`` compare as cosine ``a @ b`` or squared distance
``2 - 2 a @ b``. Images are centre-cropped as in training (the checkpoint's data.center_crop)
unless ``--center-crop`` says otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facerec.tool_args import add_runtime_arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="extract.py",
        description="Embeddings (float32, L2-normalised) of every image under a folder.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[1],
    )
    parser.add_argument("checkpoint", type=Path, help="a .pt file written by train.py")
    parser.add_argument("folder", type=Path, help="folder searched recursively for images")
    parser.add_argument("--out", type=Path, required=True, help="embeddings file (.npy)")
    parser.add_argument(
        "--no-flip", action="store_true", help="do not fuse with the mirrored image's embedding"
    )
    parser.add_argument(
        "--center-crop",
        type=int,
        default=None,
        metavar="N",
        help="centre crop before resizing, 0 = none (default: the training crop)",
    )
    add_runtime_arguments(parser)
    return parser.parse_args(argv)


def extract(args: argparse.Namespace) -> int:
    import time

    import numpy as np
    from torch.utils.data import DataLoader

    from facerec import inference
    from facerec.data.module import ImageList

    paths = inference.list_images(args.folder)  # before the model: a bad folder fails fast
    model, cfg, _ = inference.load_model(args.checkpoint, args.device)
    device = next(model.parameters()).device
    crop = inference.center_crop(cfg, args.center_crop)
    loader = DataLoader(
        ImageList(paths, inference.image_size(cfg), crop),
        batch_size=inference.batch_size_for(device, args.batch_size),
        num_workers=args.workers,
    )
    tick = time.perf_counter()
    # Streamed batch by batch: the folder may not fit in memory, its embeddings do.
    chunks = [
        inference.embed_images(model, batch, device, flip=not args.no_flip) for batch in loader
    ]
    seconds = time.perf_counter() - tick
    emb = np.concatenate(chunks)

    out = args.out if args.out.suffix == ".npy" else args.out.with_name(args.out.name + ".npy")
    index = out.with_suffix(".txt")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, emb)
    index.write_text("".join(f"{p.relative_to(args.folder).as_posix()}\n" for p in paths))
    print(
        f"{len(paths)} images -> {out} {emb.shape} float32 (flip: {not args.no_flip}, "
        f"crop: {crop}), index {index}; {len(paths) / seconds:.1f} images/s on {device}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from facerec.cli import run_tool  # after parsing: --help stays instant

    return run_tool(lambda: extract(args), "extract.py")


if __name__ == "__main__":
    sys.exit(main())
