"""``facerec evaluate MODEL --ijb ROOT --target IJBC``: IJB-B / IJB-C 1:1 and 1:N, as papers report.

    facerec evaluate best.pt --ijb /data/IJB --target IJBC                 # 1:1 and 1:N, N1D1F1
    facerec evaluate best.pt --ijb /data/IJB --target IJBB --one-to-one --mode all

The protocol is docs/evaluation.md's "IJB-B / IJB-C" section. Stages: the meta files are read
and every image checked; faces are embedded into a resumable feature cache; per mode, template
features, 1:1 pair scores and the 1:N searches follow. Tables go to stdout; the report
(``ijb.json``), the ROC figure and the raw pair scores go to ``--ijb-out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["add_ijb_arguments", "run_ijb"]


def add_ijb_arguments(parser: argparse.ArgumentParser) -> None:
    """The IJB argument group of ``facerec evaluate``."""
    group = parser.add_argument_group("IJB-B / IJB-C (insightface's layout, docs/evaluation.md)")
    group.add_argument(
        "--ijb",
        type=Path,
        default=None,
        metavar="ROOT",
        help="evaluate on ROOT/<target>/{meta,loose_crop} instead of pairs sets",
    )
    group.add_argument("--target", choices=("IJBC", "IJBB"), default="IJBC")
    group.add_argument(
        "--one-to-one",
        action="store_true",
        help="1:1 verification only (with --one-to-n: both, the default)",
    )
    group.add_argument("--one-to-n", action="store_true", help="1:N identification only")
    group.add_argument(
        "--mode",
        nargs="+",
        default=["N1D1F1"],
        metavar="MODE",
        help="feature modes: N (1: keep norm, 0: normalise each image), D (1: "
        "weight by detector score), F (1: add the mirror); `all` = all 8 "
        "(default N1D1F1, arcface_torch's)",
    )
    group.add_argument(
        "--feature-cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="where embeddings are cached, resumable (default $FACEREC_IJB_CACHE,"
        " else ~/.cache/facerec/ijb)",
    )
    group.add_argument(
        "--ijb-out",
        type=Path,
        default=None,
        metavar="DIR",
        help="report, ROC figure and pair scores (default: <cache>/results)",
    )


def default_cache() -> Path:
    """``$FACEREC_IJB_CACHE``, else ``~/.cache/facerec/ijb``."""
    return Path(os.environ.get("FACEREC_IJB_CACHE") or Path.home() / ".cache/facerec/ijb")


def run_ijb(args: argparse.Namespace) -> int:
    """The whole benchmark for the parsed ``facerec evaluate`` arguments."""
    from facerec import inference
    from facerec.data import ijb as meta
    from facerec.eval.ijb import Templates, modes
    from facerec.inference import ijb_features as feats

    chosen = modes(args.mode)  # a typo fails before anything is read
    both = args.one_to_one == args.one_to_n
    files = meta.IJBFiles.under(args.ijb, args.target)
    faces = meta.read_faces(files)
    templates = Templates.of(faces.templates, faces.medias)
    protocol = {}
    if both or args.one_to_one:
        protocol["pairs"] = meta.read_pairs(files, templates.ids)
    missing = [p for p in (*files.galleries, files.probes) if not p.is_file()]
    if both and missing:  # insightface's first package had the 1:1 files only
        print(f"1:N skipped: {missing[0]} not found (--one-to-n requires it)", file=sys.stderr)
    if args.one_to_n or (both and not missing):
        protocol["galleries"] = {
            p.stem.rsplit("_", 1)[1]: meta.read_subjects(p, templates.ids, files.faces)
            for p in files.galleries
        }
        protocol["probes"] = meta.read_subjects(files.probes, templates.ids, files.faces)
    meta.check_images(files, faces)
    print(f"{args.target}: {len(faces.names):,} faces, {len(templates.ids):,} templates")

    embedder = inference.FaceEmbedder.load(args.checkpoint, args.device, prog="evaluate")
    prep = embedder.preprocessing
    _warn_if_unaligned(prep)
    show = sys.stderr.isatty()
    identity = feats.cache_identity(embedder.model, prep.to_dict(), files)
    cache = feats.FeatureCache(args.feature_cache or default_cache(), identity, len(faces.names))
    dataset = feats.AlignedFaces(files.images, faces.names, faces.landmarks, prep.image_size)
    batch = inference.batch_size_for(embedder.device, args.batch_size)
    done = feats.embed_faces(embedder.model, dataset, cache, embedder.device, batch, args.workers,
                             prep.channels_last, progress=show)  # fmt: skip
    print(f"features: {cache.folder} ({done:,} faces embedded now, "
          f"{len(faces.names) - done:,} from the cache)")  # fmt: skip
    features = feats.template_features(cache, faces, templates, chosen, progress=show)
    out = args.ijb_out or cache.folder / "results"
    report = {"model": str(args.checkpoint), "target": args.target, "faces": len(faces.names),
              "templates": len(templates.ids), "features": str(cache.folder),
              "modes": {}}  # fmt: skip
    for mode, template_feats in features.items():
        report["modes"][mode.name] = evaluate_mode(mode, template_feats, templates, protocol,
                                                   args.target, out, show)  # fmt: skip
    write_report(report, out / f"{args.target.lower()}.json", args.json)
    return 0


def _warn_if_unaligned(prep) -> None:
    if prep.alignment is None:
        how = f"centre crops ({prep.center_crop} px)" if prep.center_crop else "whole images"
        print(f"evaluate: warning: the model was trained on unaligned {how}; IJB faces are "
              "aligned by their landmarks to the ArcFace template, as the protocol does",
              file=sys.stderr)  # fmt: skip


def evaluate_mode(mode, features, templates, protocol: dict, target: str, out: Path, show: bool):
    """One mode's 1:1 and 1:N numbers (printed, figure and scores written)."""
    import numpy as np
    from tqdm import tqdm

    from facerec.cli.ijb_report import print_one_to_n, print_one_to_one, save_roc
    from facerec.eval.ijb import pair_scores
    from facerec.eval.ijb_search import identification
    from facerec.eval.ijb_verify import verify

    result = {}
    if "pairs" in protocol:
        first, second, same = protocol["pairs"]
        with tqdm(total=len(same), desc=f"1:1 {mode.name}", unit="pair", disable=not show) as bar:
            scores = pair_scores(features, templates.index(first), templates.index(second),
                                 progress=bar.update)  # fmt: skip
        numbers = verify(scores, same)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / f"{target.lower()}_{mode.name}_scores.npy", scores)
        save_roc(numbers, out / f"{target.lower()}_{mode.name}_roc.png", f"{target} {mode.name}")
        print_one_to_one(numbers, target, mode.name)
        result["one_to_one"] = numbers.summary()
    if "probes" in protocol:
        total = len(protocol["probes"][0]) * (len(protocol["galleries"]) + 1)
        with tqdm(total=total, desc=f"1:N {mode.name}", unit="probe", disable=not show) as bar:
            found = identification(features, templates, protocol["galleries"],
                                   protocol["probes"], progress=bar.update)  # fmt: skip
        print_one_to_n(found, target, mode.name)
        result["one_to_n"] = found
    return result


def write_report(report: dict, path: Path, extra: Path | None) -> None:
    """``ijb.json`` beside the figures, and at ``--json`` too when given."""
    text = json.dumps(report, indent=2, default=float) + "\n"
    for target in filter(None, (path, extra)):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"results: {target}")
