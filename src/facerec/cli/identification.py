"""``facerec evaluate MODEL --identification SOURCE``: the open-set protocol on labelled images.

    facerec evaluate best.pt --identification data/lfw/peopleDevTest.txt:data/lfw/lfw-deepfunneled
    facerec evaluate best.pt --identification faces/ --trials 10 --json id.json

SOURCE is an LFW people file over its image folder (``peopleDevTest.txt``: people disjoint
from ``peopleDevTrain.txt``) or a folder of identity folders. Every image is embedded once (as
``facerec evaluate`` embeds verification images); each trial then enrols a random half of the
people with more than ``--gallery-images`` images and searches all the rest
(:mod:`facerec.eval.identification`). Prints rank-1, rank-5, DIR at each FPIR, mean and
standard deviation over trials; ``--json`` also writes every trial and the CMC and DET figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

__all__ = ["add_identification_arguments", "evaluate_identification", "labelled_images"]


def add_identification_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``open-set identification`` argument group of ``facerec evaluate``."""
    group = parser.add_argument_group("open-set identification (docs/identification.md)")
    group.add_argument(
        "--identification",
        default=None,
        metavar="PEOPLE:IMAGE_ROOT|FOLDER",
        help="run the open-set protocol on these people instead of verification",
    )
    group.add_argument("--trials", type=int, default=10, help="random galleries (default 10)")
    group.add_argument(
        "--enrolled",
        type=float,
        default=0.5,
        help="fraction of the people with enough images enrolled per trial",
    )
    group.add_argument("--gallery-images", type=int, default=1, help="images per enrolled person")
    group.add_argument(
        "--fpir",
        type=float,
        nargs="+",
        default=[0.01, 0.001],
        help="false-positive identification rates for DIR (default 1%% 0.1%%)",
    )
    group.add_argument("--trial-seed", type=int, default=0)  # fmt: skip


def labelled_images(source: str) -> tuple[list[Path], np.ndarray]:
    """``(paths, labels (N,) str)`` of a people file over its images, or identity folders."""
    from facerec.data.pairs import image_path, read_people_folds
    from facerec.inference.enrol import Report, identity_folders

    people_file, sep, root = source.partition(":")
    if sep and not Path(source).is_dir():
        people = {n: c for fold in read_people_folds(people_file) for n, c in fold.items()}
        found = {n: [image_path(root, n, i) for i in range(1, c + 1)] for n, c in people.items()}
    else:
        found = identity_folders(source, Report())
    paths = [p for files in found.values() for p in files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) of {source} not found: {missing[0]}")
    return paths, np.array([n for n, files in found.items() for _ in files])


def embed_all(embedder, paths: list[Path], chunk: int = 256) -> np.ndarray:
    """Every image embedded (as verification does), a progress bar over chunks."""
    from tqdm import tqdm

    parts = [embedder.embed(paths[i : i + chunk])
             for i in tqdm(range(0, len(paths), chunk), desc="embed", disable=None)]  # fmt: skip
    return np.concatenate(parts)


def evaluate_identification(args: argparse.Namespace, embedder) -> int:
    """Run the protocol, print the table, write the JSON and figures when asked."""
    from facerec.eval import identification as ident

    for rate in args.fpir:
        if not 0.0 < rate < 1.0:
            raise ValueError(f"--fpir {rate}: a rate lies in (0, 1)")
    paths, labels = labelled_images(args.identification)
    trials = ident.open_set_trials(labels, args.trials, args.enrolled, args.gallery_images,
                                   args.trial_seed)  # fmt: skip
    emb = embed_all(embedder, paths)
    results = []
    for trial in trials:
        templates, names = ident.identity_templates(emb[trial.gallery], labels[trial.gallery])
        scores = emb[trial.probes] @ templates.T
        results.append(ident.open_set(scores, labels[trial.probes], names, tuple(args.fpir)))
    summary = ident.summarise(results)
    print(f"open-set identification on {args.identification}: {len(set(labels))} people, "
          f"{len(paths)} images, {len(trials)} trials of {len(trials[0].gallery)} enrolled "
          f"images, {summary['mated_probes']:.0f} mated + {summary['non_mated_probes']:.0f} "
          "non-mated probes")  # fmt: skip
    keys = ["rank1", "rank5"] + [f"dir@fpir={f:g}" for f in args.fpir]
    print("  ".join(f"{k:>17}" for k in keys))
    print("  ".join(f"{summary[k]:.4f} ± {summary[k + '_std']:.4f}".rjust(17) for k in keys))
    if args.json:
        write_report(args, summary, results)
    return 0


def write_report(args: argparse.Namespace, summary: dict, results: list) -> None:
    """The JSON (summary + every trial) and the CMC and DET figures beside it."""
    import cv2

    from facerec.eval.identification_plots import cmc_image, det_image

    trials = [{"cmc": r.cmc.tolist(), "dir": r.dir.tolist(), "thresholds": r.thresholds.tolist(),
               "mated": r.mated, "non_mated": r.non_mated} for r in results]  # fmt: skip
    protocol = {k: getattr(args, k) for k in ("identification", "trials", "enrolled",
                                              "gallery_images", "fpir", "trial_seed")}  # fmt: skip
    report = {"checkpoint": str(args.checkpoint), "protocol": protocol, "summary": summary,
              "trials": trials}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    for name, image in (("cmc", cmc_image(results)), ("det", det_image(results))):
        path = args.json.with_suffix(f".{name}.png")
        cv2.imwrite(str(path), image[..., ::-1])
        print(f"figure: {path}", file=sys.stderr)
    print(f"results: {args.json}")
