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

from facerec.cli.args import add_preparation_arguments, add_runtime_arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
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
    add_preparation_arguments(parser)
    add_runtime_arguments(parser)
    return parser.parse_args(argv)


def extract(args: argparse.Namespace) -> int:
    import time

    import numpy as np
    from torch.utils.data import DataLoader

    from facerec.data.module import ImageList, TolerantImages
    from facerec.inference import FaceEmbedder, list_images

    paths = list_images(args.folder)  # before the model: a bad folder fails fast
    embedder = FaceEmbedder.load(args.checkpoint, args.device, align=args.align,
                                 center_crop=args.center_crop, batch_size=args.batch_size,
                                 flip=not args.no_flip, prog="extract.py")  # fmt: skip
    device, crop = embedder.device, embedder.crop
    sources = embedder.align_paths(paths, progress=sys.stderr.isatty())
    loader = DataLoader(
        # Unreadable files come back flagged (and logged by name): skipped, not fatal.
        TolerantImages(ImageList(sources, embedder.preprocessing.image_size, crop)),
        batch_size=embedder.batch_size,
        num_workers=args.workers,
    )
    tick = time.perf_counter()
    # Streamed batch by batch: the folder may not fit in memory, its embeddings do.
    chunks, readable = [], []
    for batch, ok in loader:
        readable.append(ok.numpy())
        if bool(ok.any()):
            chunks.append(embedder.embed(batch[ok]))
    seconds = time.perf_counter() - tick
    keep = np.concatenate(readable)
    kept = [p for p, k in zip(paths, keep, strict=True) if k]
    if not kept:
        raise ValueError(f"{args.folder}: none of its {len(paths)} images could be read")
    emb = np.concatenate(chunks)
    out = args.out if args.out.suffix == ".npy" else args.out.with_name(args.out.name + ".npy")
    index = out.with_suffix(".txt")
    write_both(out, emb, index, [p.relative_to(args.folder).as_posix() for p in kept])
    skipped = [str(p) for p, k in zip(paths, keep, strict=True) if not k]
    print(
        f"{len(kept)} images -> {out} {emb.shape} float32 (flip: {not args.no_flip}, "
        f"crop: {crop}), index {index}; {len(kept) / seconds:.1f} images/s on {device}"
    )
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s), not in the index: "
              f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}")  # fmt: skip
    return 0


def write_both(out: Path, emb, index: Path, names: list[str]) -> None:
    """The embeddings and their index, each written in full to a temporary file and renamed
    only when both are complete: an interrupted run leaves the previous pair as it was."""
    import os

    import numpy as np

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out, tmp_index = out.with_name(out.name + ".tmp"), index.with_name(index.name + ".tmp")
    try:
        with open(tmp_out, "wb") as f:
            np.save(f, emb)
        tmp_index.write_text("".join(f"{name}\n" for name in names))
        os.replace(tmp_out, out)
        os.replace(tmp_index, index)
    finally:
        tmp_out.unlink(missing_ok=True)
        tmp_index.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from facerec.cli.errors import run_tool  # after parsing: --help stays instant

    return run_tool(lambda: extract(args), "extract.py")


if __name__ == "__main__":
    sys.exit(main())
