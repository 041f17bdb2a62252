#!/usr/bin/env python
"""Export a checkpoint's backbone + embedding as a folder a user can share.

    facerec export runs/demo/<stamp>/checkpoints/best.pt --out exported/demo
    facerec export best.pt --out exported/demo --onnx --check-lfw data/lfw   # + model.onnx

The folder holds ``model.safetensors`` (backbone + embedding weights only: no head, optimizer or
pickled training state), ``config.json`` (the architecture, named by facerec's own component
``_target_``s, and the preprocessing: image size, centre crop, alignment, normalisation), a model
card ``README.md`` (training data, recipe, steps, the verification table and its protocol) and,
when ``facerec evaluate`` chose one for the checkpoint, ``threshold.json``. The checkpoint's
config is copied as plain data (never resolved: a ``${...}`` in it stays that text), and only
facerec's own components with checked arguments reach ``config.json``. Every tool takes the
folder where it takes a checkpoint (``facerec verify FOLDER a.jpg b.jpg``); Python code loads it
with ``facerec.FaceEmbedder.load(FOLDER)``. ``--onnx`` also writes ``model.onnx``
beside it (``facerec export-onnx``, checked against PyTorch with onnxruntime).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Write a shareable model folder (safetensors + JSON config + model card).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[1],
    )
    parser.add_argument("checkpoint", type=Path, help="a .pt file written by facerec train")
    parser.add_argument("--out", type=Path, required=True, help="the folder to write")
    parser.add_argument(
        "--onnx", action="store_true", help="also write model.onnx (needs onnx, onnxruntime)"
    )
    parser.add_argument(
        "--check-lfw",
        type=Path,
        default=None,
        metavar="LFW_ROOT",
        help="with --onnx: check the ONNX file on these LFW images instead of random ones",
    )
    return parser.parse_args(argv)


def export(args: argparse.Namespace) -> int:
    from facerec.inference import FaceEmbedder, folder, is_onnx

    if args.out.resolve() == args.checkpoint.resolve():
        raise ValueError(f"--out {args.out} is the checkpoint itself")
    if is_onnx(args.checkpoint):
        raise ValueError(
            f"{args.checkpoint}: export takes a checkpoint or a model folder, not ONNX"
        )
    embedder = FaceEmbedder.load(args.checkpoint, "cpu")
    meta, threshold = embedder.meta, embedder.threshold
    written = folder.save_pretrained(embedder.model, embedder.config, args.out, meta=meta,
                                     threshold=threshold, spec=embedder.spec)  # fmt: skip
    size = (written / folder.WEIGHTS).stat().st_size / 2**20
    print(
        f"exported {written}: {folder.WEIGHTS} ({size:.1f} MiB, {meta['backbone']}, step "
        f"{meta['step']}), {folder.CONFIG}, {folder.CARD}"
        + (f", {folder.THRESHOLD}" if threshold else "")
    )
    if not args.onnx:
        return 0
    from facerec.cli import export_onnx

    onnx_args = [str(written), "--out", str(written / "model.onnx")]
    onnx_args += ["--check-lfw", str(args.check_lfw)] if args.check_lfw else []
    return export_onnx.main(onnx_args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from facerec.cli.errors import run_tool  # after parsing: --help stays instant

    return run_tool(lambda: export(args), "facerec export")


if __name__ == "__main__":
    sys.exit(main())
