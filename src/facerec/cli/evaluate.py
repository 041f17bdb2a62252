#!/usr/bin/env python
"""Verify a trained checkpoint on LFW-format pair lists and insightface ``.bin`` packs.

    # the sets the model was validated on during training (its config's data.val: the
    # pairs / .bin files it names, read by facerec's own set classes)
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

from facerec.cli.args import add_align_argument, add_runtime_arguments
from facerec.cli.identification import add_identification_arguments, evaluate_identification
from facerec.cli.ijb import add_ijb_arguments, run_ijb


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
    parser.add_argument(
        "--align-cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="where aligned copies of the sets' images go (default: $FACEREC_ALIGN_CACHE, else "
        "~/.cache/facerec/align; never a place the model file names)",
    )
    add_runtime_arguments(parser)
    parser.add_argument(
        "--fusion",
        choices=("sum", "concat"),
        default="sum",
        help="image + mirror: sum then normalise (insightface, default) or concatenate (CosFace)",
    )
    add_ijb_arguments(parser)
    add_identification_arguments(parser)
    return parser.parse_args(argv)


def _split_name(spec: str) -> tuple[str | None, str]:
    name, sep, rest = spec.partition("=")
    return (name, rest) if sep and name and "/" not in name else (None, spec)


def _pairs(files: tuple[str, ...], crop: int | None, size: int):
    from facerec.data import PairsSet

    return PairsSet(files[0], files[1], crop, size)


def _bin(files: tuple[str, ...], crop: int | None, size: int):
    from facerec.data.binpack import BinSet

    return BinSet(files[0], crop, size)


def pairs_set(spec: str, prep, center_crop: int | None) -> tuple[str, object]:
    """``[NAME=]PAIRS:IMAGE_ROOT`` (a pairs file over an image folder) as ``(name, set)``,
    centre-cropped as in training unless ``center_crop`` says otherwise (0: none)."""
    name, rest = _split_name(spec)
    pairs, sep, root = rest.partition(":")
    if not sep or not pairs or not root:
        raise ValueError(f"--sets {spec!r}: expected NAME=PAIRS_FILE:IMAGE_ROOT")
    return name or Path(pairs).stem, _pairs((pairs, root), prep.crop(center_crop), prep.image_size)


def bin_set(spec: str, prep, center_crop: int | None) -> tuple[str, object]:
    """``[NAME=]PACK.bin`` (an insightface pack, no crop unless asked) as ``(name, set)``."""
    name, path = _split_name(spec)
    return name or Path(path).stem, _bin((path,), center_crop or None, prep.image_size)


# facerec's own verification sets as a saved config lists them (data.val.<name>): the keys
# naming their files, the _target_ a config gives them, and the class that builds them. The set
# is built from the paths (checked to be strings) by facerec's class; a _target_ is never called.
SAVED_SETS = {
    "pairs_file": (("pairs_file", "image_root"), "facerec.data.PairsSet", _pairs),
    "bin_file": (("bin_file",), "facerec.data.binpack.BinSet", _bin),
}


def saved_sets(cfg, prep, source: Path, center_crop: int | None) -> dict[str, tuple[object, str]]:
    """The verification sets a checkpoint's config lists (``data.val``), rebuilt from their
    paths; a ``_target_`` other than facerec's own sets, or any other key, is refused."""
    data = cfg.get("data") if isinstance(cfg, dict) else None
    val = data.get("val") if isinstance(data, dict) else None
    if not val or not isinstance(val, dict):
        raise ValueError(
            f"{source}: its config lists no verification sets (data.val); "
            f"pass --sets NAME=PAIRS:IMAGE_ROOT or --bin PACK.bin"
        )
    return {name: _saved_set(name, node, prep, source, center_crop) for name, node in val.items()}


def _saved_set(name, node, prep, source: Path, center_crop: int | None) -> tuple[object, str]:
    from facerec.inference.rules import Rule, read_section

    key = f"data.val.{Rule('str').read(name, 'data.val', source)}"
    targets = [target for _, target, _ in SAVED_SETS.values()]
    target = node.get("_target_") if isinstance(node, dict) else None
    if target is not None and target not in targets:
        raise ValueError(
            f"{source} refused: {key}._target_: {str(target)[:80]!r} is not one of facerec's "
            f"verification sets ({', '.join(targets)})"
        )
    kind = next((k for k in SAVED_SETS if isinstance(node, dict) and k in node), None)
    if kind is None:
        raise ValueError(f"{source} refused: {key}: names no pairs_file or bin_file")
    paths, _, make = SAVED_SETS[kind]
    for k in paths:
        if not isinstance(node.get(k), str) or not node[k]:
            raise ValueError(f"{source} refused: {key}.{k}: {node.get(k)!r} is not a path")
    rest = {k: v for k, v in node.items() if k not in (*paths, "_target_")}
    saved = read_section(rest, ("center_crop", "image_size"), f"{key}.", source)
    crop = center_crop if center_crop is not None else saved.get("center_crop")
    return make(tuple(node[k] for k in paths), crop or None, prep.image_size), f"the model's {key}"


def build_sets(args: argparse.Namespace, cfg, prep) -> dict[str, tuple[object, str]]:
    """``{name: (set, where it came from)}`` from the command line, else the model's data.val."""
    sets: dict[str, tuple[object, str]] = {}
    for spec in args.sets:
        name, pairs = pairs_set(spec, prep, args.center_crop)
        sets[name] = (pairs, f"--sets {spec}")
    for spec in args.bin:
        name, pack = bin_set(spec, prep, args.center_crop)
        sets[name] = (pack, f"--bin {spec}")
    return sets or saved_sets(cfg, prep, args.checkpoint, args.center_crop)


def evaluate(args: argparse.Namespace) -> int:
    import time

    from facerec import inference
    from facerec.training.verifier import Verifier

    if args.ijb is not None:
        return run_ijb(args)
    embedder = inference.FaceEmbedder.load(args.checkpoint, args.device, align=args.align,
                                           prog="evaluate.py")  # fmt: skip
    model, meta, prep, device = (
        embedder.model,
        embedder.meta,
        embedder.preprocessing,
        embedder.device,
    )
    print(f"checkpoint {args.checkpoint}: step {meta['step']}, {meta['backbone']}, device {device}")
    if args.identification:
        return evaluate_identification(args, embedder)
    show = sys.stderr.isatty()
    results: dict[str, dict] = {}
    sets = build_sets(args, embedder.config, prep)
    named = {name: s for name, (s, _) in sets.items()}
    inference.align_sets(named, embedder.alignment, args.align_cache, device)
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
        result = verifier.evaluate(model, device, channels_last=prep.channels_last)
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

    print_table(results)

    if args.json:
        write_report(args, meta, device, results)
    if not args.no_save_threshold:
        save_threshold(args.checkpoint, results, meta["step"])
    return 0


def write_report(args: argparse.Namespace, meta: dict, device: object, results: dict) -> None:
    """The ``--json`` file: the checkpoint, its step and backbone, the device, every set."""
    import json

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


def print_table(results: dict[str, dict]) -> None:
    """One line per set: pairs, accuracy ± std, threshold, TAR@FAR, AUC, EER, speed."""
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


def save_threshold(checkpoint: Path, results: dict[str, dict], step: int | None) -> None:
    """The first set's threshold beside the model, unless it is past the bound that
    ``facerec verify`` refuses (a model that cannot yet tell people apart)."""
    from facerec import inference

    name, first = next(iter(results.items()))
    if first["threshold"] >= inference.MAX_THRESHOLD:
        print(
            f"evaluate.py: warning: threshold {first['threshold']:.3f} (set {name}) not saved: "
            f"at {inference.MAX_THRESHOLD:g} or more (cosine <= 0) it accepts most "
            "different-person pairs; this model does not separate faces yet",
            file=sys.stderr,
        )
        return
    path = inference.save_threshold(checkpoint, name, first, step)
    print(f"threshold {first['threshold']:.3f} (set {name}) saved to {path}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from facerec.cli.errors import run_tool  # after parsing: --help stays instant

    return run_tool(lambda: evaluate(args), "evaluate.py")


if __name__ == "__main__":
    sys.exit(main())
