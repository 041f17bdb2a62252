#!/usr/bin/env python
"""Verify a trained checkpoint on LFW-format pair lists and insightface ``.bin`` packs.

    # the sets the model was validated on during training (its config's data.val)
    python scripts/evaluate.py runs/demo/<stamp>/checkpoints/best.pt
    # LFW View 2 (6,000 pairs) on deep-funneled images, centre-cropped as in training
    python scripts/evaluate.py best.pt --sets lfw=data/lfw/pairs.txt:data/lfw/lfw-deepfunneled \\
        --center-crop 150 --json lfw.json
    # insightface packs (aligned 112x112, no crop)
    python scripts/evaluate.py best.pt --bin faces_emore/lfw.bin faces_emore/cfp_fp.bin

The protocol is docs/evaluation.md's (flip-sum fusion, squared L2 distance, 10-fold accuracy,
TAR@FAR=1e-3, ROC AUC and EER). A table goes to stdout; ``--json`` also writes every number.
The first set's threshold is stored beside the checkpoint as ``<checkpoint>.threshold.json``,
where ``scripts/verify.py`` finds it (``--no-save-threshold`` to skip).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facerec.tool_args import add_align_argument, add_runtime_arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Face verification accuracy of a facerec checkpoint "
        "(10-fold, flip-fused, as insightface).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[1],
    )
    parser.add_argument("checkpoint", type=Path, help="a .pt file written by train.py")
    parser.add_argument(
        "--sets",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME=PAIRS:IMAGE_ROOT",
        help="LFW-format pairs file over an image folder (NAME= optional: default the file's "
        "stem; PAIRS must not contain ':')",
    )
    parser.add_argument(
        "--bin",
        nargs="+",
        action="extend",
        default=[],
        metavar="[NAME=]PACK.bin",
        help="insightface verification pack (lfw.bin, cfp_fp.bin, agedb_30.bin ...)",
    )
    parser.add_argument(
        "--center-crop",
        type=int,
        default=None,
        metavar="N",
        help="centre crop (pixels) before resizing, 0 = none. Default: --sets and the config's "
        "sets use the training crop (data.center_crop), --bin packs none",
    )
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    parser.add_argument(
        "--no-save-threshold",
        action="store_true",
        help="do not write <checkpoint>.threshold.json",
    )
    add_align_argument(parser)
    add_runtime_arguments(parser)
    parser.add_argument(
        "--fusion",
        choices=("sum", "concat"),
        default="sum",
        help="image + mirror: sum then normalise (insightface, default) or concatenate (CosFace)",
    )
    return parser.parse_args(argv)


def _split_name(spec: str) -> tuple[str | None, str]:
    name, sep, rest = spec.partition("=")
    return (name, rest) if sep and name and "/" not in name else (None, spec)


def build_sets(args: argparse.Namespace, cfg: dict) -> dict[str, tuple[object, str]]:
    """``{name: (set, where it came from)}`` from the command line, else the config's data.val."""
    from hydra.utils import instantiate

    from facerec import inference
    from facerec.data import PairsSet
    from facerec.data.binpack import BinSet

    size = inference.image_size(cfg)
    sets: dict[str, tuple[object, str]] = {}
    for spec in args.sets:
        name, rest = _split_name(spec)
        pairs, sep, root = rest.partition(":")
        if not sep or not pairs or not root:
            raise ValueError(f"--sets {spec!r}: expected NAME=PAIRS_FILE:IMAGE_ROOT")
        name = name or Path(pairs).stem
        crop = inference.center_crop(cfg, args.center_crop)
        sets[name] = (PairsSet(pairs, root, crop, size), f"--sets {spec}")
    for spec in args.bin:
        name, path = _split_name(spec)
        name = name or Path(path).stem
        sets[name] = (BinSet(path, args.center_crop or None, size), f"--bin {spec}")
    if sets:
        return sets
    val = (cfg.get("data") or {}).get("val") or {}
    if not val:
        raise ValueError(
            f"{args.checkpoint}: its config lists no verification sets (data.val); "
            f"pass --sets NAME=PAIRS:IMAGE_ROOT or --bin PACK.bin"
        )
    for name, node in val.items():
        s = instantiate(node)
        if args.center_crop is not None:
            s.center_crop = args.center_crop or None
        sets[name] = (s, f"the checkpoint's data.val.{name}")
    return sets


def evaluate(args: argparse.Namespace) -> int:
    import json
    import time

    from facerec import inference
    from facerec.evaluate import Verifier

    model, cfg, meta = inference.load_model(args.checkpoint, args.device)
    device = next(model.parameters()).device
    print(f"checkpoint {args.checkpoint}: step {meta['step']}, {meta['backbone']}, device {device}")
    show = sys.stderr.isatty()
    results: dict[str, dict] = {}
    sets = build_sets(args, cfg)
    align = inference.resolve_alignment(cfg, args.align, "evaluate.py")
    inference.align_sets({name: s for name, (s, _) in sets.items()}, align, cfg, device)
    for name, (pairs_set, origin) in sets.items():
        try:
            batch_size = inference.batch_size_for(device, args.batch_size)
            verifier = Verifier(pairs_set, batch_size, args.workers, args.fusion)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"set {name!r} ({origin}): {error}") from None
        tick = time.perf_counter()
        images = verifier.decode(show_progress=show)
        decoded = time.perf_counter()
        # NHWC as the trainer feeds it (trainer.channels_last): faster on CPUs and GPUs.
        channels_last = bool((cfg.get("trainer") or {}).get("channels_last", True))
        result = verifier.evaluate(model, device, channels_last=channels_last)
        done = time.perf_counter()
        results[name] = {
            **result.summary(),
            "pairs": len(verifier.pairs.issame),
            "images": len(images),
            "source": origin,
            "center_crop": pairs_set.center_crop,
            "decode_seconds": decoded - tick,
            "embed_seconds": done - decoded,
            # Each image is embedded with its mirror: two forward passes per image.
            "images_per_sec": len(images) / (done - decoded),
        }

    header = (
        f"{'set':<14} {'pairs':>6} {'accuracy':>17} {'threshold':>9} {'TAR@FAR=1e-3':>12} "
        f"{'AUC':>7} {'EER':>7} {'acc(no flip)':>12} {'images/s':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        noflip = f"{r['accuracy_noflip']:.4f}" if "accuracy_noflip" in r else "-"
        print(
            f"{name:<14} {r['pairs']:>6} {r['accuracy']:>8.4f} ± {r['accuracy_std']:.4f} "
            f"{r['threshold']:>9.3f} {r['tar_at_far']:>12.4f} {r['auc']:>7.4f} {r['eer']:>7.4f} "
            f"{noflip:>12} {r['images_per_sec']:>9.1f}"
        )
    print("images/s: distinct images embedded per second, each with its mirror (decoding excluded)")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "checkpoint": str(args.checkpoint),
            "step": meta["step"],
            "backbone": meta["backbone"],
            "device": str(device),
            "sets": results,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results: {args.json}")
    if not args.no_save_threshold:
        name, first = next(iter(results.items()))
        path = inference.save_threshold(args.checkpoint, name, first, meta["step"])
        print(f"threshold {first['threshold']:.3f} (set {name}) saved to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from facerec.cli import run_tool  # after parsing: --help stays instant

    return run_tool(lambda: evaluate(args), "evaluate.py")


if __name__ == "__main__":
    sys.exit(main())
