#!/usr/bin/env python
"""Export a checkpoint's backbone + embedding to ONNX and check it against PyTorch.

    python scripts/export_onnx.py best.pt --out model.onnx --check-lfw data/lfw

The graph maps ``images`` float32 ``(batch, 3, S, S)`` (S = the training image size, 112) to
``embeddings`` float32 ``(batch, D)``; the batch axis is dynamic. Preprocessing is not in the
graph: RGB, centre-cropped as in training (the checkpoint's data.center_crop) and resized to
S x S, then ``(uint8 - 127.5) / 127.5``. The embeddings are not normalised: for the protocol's
numbers add the mirrored image's embedding, L2-normalise, and compare by squared distance against
the threshold (stored in the model's metadata when ``scripts/evaluate.py`` has chosen one). All of
this is also in the ONNX file's metadata (``facerec.*`` keys).

After export, onnxruntime runs the file on real LFW images (``--check-lfw``; random images
otherwise) and the L2-normalised embeddings must match PyTorch's: max |difference| <= 1e-4 and
cosine >= 0.9999 for every image (exit status 1 otherwise). Needs ``onnx``, ``onnxscript`` (the
``torch.export``-based exporter) and ``onnxruntime``: ``pip install -e '.[dev]'``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

NEEDED = ("onnx", "onnxscript", "onnxruntime")
MAX_ABS = 1e-4
MIN_COSINE = 0.9999


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Export backbone + embedding to ONNX (dynamic batch) and check it with "
        "onnxruntime.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[1],
    )
    parser.add_argument("checkpoint", type=Path, help="a .pt file written by train.py")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument(
        "--check-lfw",
        type=Path,
        default=None,
        metavar="LFW_ROOT",
        help="check on images of this LFW folder (holding lfw-deepfunneled/) instead of random "
        "ones",
    )
    parser.add_argument("--check-images", type=int, default=32, help="images to check on")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: torch's)")
    return parser.parse_args(argv)


def check_images(args: argparse.Namespace, prep):
    """uint8 ``(K, 3, S, S)`` images to compare on, and what they are (``prep``: the model's
    :class:`facerec.inference.Preprocessing`)."""
    import torch

    from facerec import inference

    size = prep.image_size
    if args.check_lfw is None:
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (args.check_images, 3, size, size), generator=generator)
        return images.to(torch.uint8), f"{args.check_images} random images (no --check-lfw)"
    folder = args.check_lfw / "lfw-deepfunneled"
    paths = inference.list_images(folder if folder.is_dir() else args.check_lfw)
    # Spread over the sorted list: many identities, not the first person's photos.
    step = max(1, len(paths) // args.check_images)
    paths = paths[::step][: args.check_images]
    crop = prep.crop()
    images = inference.load_images(paths, size, crop)
    return images, f"{len(paths)} images from {args.check_lfw} (centre crop {crop})"


def metadata(args: argparse.Namespace, embedder) -> dict[str, str]:
    """The ONNX file's ``facerec.*`` metadata: the preprocessing as facerec reads it back, and
    the same in words, the model's step and threshold for people."""
    from facerec.inference.onnx import preprocessing_metadata

    prep, meta = embedder.preprocessing, embedder.meta
    size = prep.image_size
    crop = prep.crop()
    props = {
        "facerec.input": f"images: float32 (batch, 3, {size}, {size}), RGB, NCHW",
        "facerec.preprocessing": f"centre crop {crop} px (none if None), resize to {size}x{size} "
        "(INTER_AREA), then (uint8 - 127.5) / 127.5",
        "facerec.center_crop": str(crop),
        "facerec.image_size": str(size),
        "facerec.output": "embeddings: float32 (batch, D), not normalised",
        "facerec.comparison": "add the mirrored image's embedding, L2-normalise, squared L2 "
        "distance; same person if distance < threshold",
        "facerec.backbone": str(meta["backbone"]),
        "facerec.files.checkpoint": str(args.checkpoint),
        "facerec.step": str(meta["step"]),
        **preprocessing_metadata(prep),  # what facerec reads back (the keys above: for people)
    }
    threshold = embedder.threshold
    if threshold is not None:
        props["facerec.threshold"] = f"{float(threshold['threshold']):.6f}"
        props["facerec.threshold_set"] = str(threshold.get("set"))
    return props


def check(args: argparse.Namespace, model, prep) -> int:
    """Run the written file in onnxruntime against PyTorch; 0 when they agree, else 1."""
    import numpy as np
    import onnxruntime
    import torch

    images, what = check_images(args, prep)
    x = model.preprocess(images)  # the ONNX model's input; PyTorch gets the uint8 pixels
    with torch.no_grad():
        ref = model(images).numpy().astype(np.float64)
    session = onnxruntime.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    got = session.run(["embeddings"], {"images": x.numpy()})[0].astype(np.float64)
    single = session.run(["embeddings"], {"images": x[:1].numpy()})[0].astype(np.float64)

    def unit(e: np.ndarray) -> np.ndarray:
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    # The raw scale is arbitrary (verification normalises), so compare unit vectors.
    max_abs = max(np.abs(unit(got) - unit(ref)).max(), np.abs(unit(single) - unit(ref[:1])).max())
    cosine = float(np.min(np.sum(unit(got) * unit(ref), axis=1)))
    raw_rel = float(np.abs(got - ref).max() / np.abs(ref).max())
    ok = max_abs <= MAX_ABS and cosine >= MIN_COSINE
    print(
        f"onnxruntime vs PyTorch on {what}: max |diff| {max_abs:.2e} (<= {MAX_ABS:g}), "
        f"min cosine {cosine:.7f} (>= {MIN_COSINE}), raw max |diff| / max |emb| {raw_rel:.1e}, "
        f"batch {len(x)} and 1: {'OK' if ok else 'MISMATCH'}"
    )
    return 0 if ok else 1


def export(args: argparse.Namespace) -> int:
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"export_onnx.py: error: {', '.join(missing)} not installed; the export needs "
            f"{', '.join(NEEDED)}: pip install -e '.[dev]' (or pip install {' '.join(missing)})",
            file=sys.stderr,
        )
        return 2

    import onnx
    import torch

    from facerec import inference

    if inference.is_onnx(args.checkpoint):
        raise ValueError(f"{args.checkpoint} is already ONNX; give a checkpoint or model folder")
    embedder = inference.FaceEmbedder.load(args.checkpoint, "cpu")
    model, prep = embedder.model, embedder.preprocessing
    size = prep.image_size
    example = torch.rand(2, 3, size, size) * 2 - 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # The torch.export-based exporter (dynamo=True, needs onnxscript): the TorchScript one is
    # deprecated and slated for removal. One file, weights included (external_data=False).
    torch.onnx.export(
        model,
        (example,),
        str(args.out),
        dynamo=True,
        input_names=["images"],
        output_names=["embeddings"],
        dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
        opset_version=args.opset,
        external_data=False,
        verbose=False,
    )

    onnx_model = onnx.load(str(args.out))
    props = metadata(args, embedder)
    onnx.helper.set_model_props(onnx_model, props)
    onnx_model.doc_string = "facerec face embedding model. " + props["facerec.preprocessing"]
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, str(args.out))
    print(f"exported {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB), dynamic batch axis")

    return check(args, model, prep)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from facerec.cli.errors import run_tool  # after parsing: --help stays instant

    return run_tool(lambda: export(args), "export_onnx.py")


if __name__ == "__main__":
    sys.exit(main())
