"""Compare finished runs arm against arm: ``facerec compare RUNS...`` (docs/studies.md).

RUNS are run folders or folders holding them (a sweep's ``multirun/<time>``, an output dir).
Runs whose configs differ only by seed form an arm. For every verification set: one table (arm,
seeds, accuracy mean ± std over seeds, each seed's accuracy, TAR@FAR mean ± std, and the
difference from the baseline arm over the same pairs and seeds with a paired bootstrap
interval), a ROC overlay and accuracy against training images (PNG).

    facerec compare runs/multirun/20261206-101500 --md study.md --json study.json
    facerec compare runs/demo/2026* runs/cosface/2026* --baseline head=arcface
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "set_rows"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="facerec compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders, sweep folders or both")
    parser.add_argument("--baseline", default=None,
                        help="the arm the others are measured against: its label or words of it"
                             " (e.g. head=arcface); default the first arm")  # fmt: skip
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    parser.add_argument("--level", type=float, default=0.95, help="coverage of the interval")
    parser.add_argument("--ignore", action="append", default=[], metavar="KEY",
                        help="a config key that does not make an arm (repeatable)")  # fmt: skip
    parser.add_argument("--md", type=Path, help="write the tables (and figure links) as Markdown")
    parser.add_argument("--json", type=Path, help="write every number as JSON")
    parser.add_argument(
        "--figures", type=Path, help="folder for the PNG figures (default: beside --md, else none)"
    )
    args = parser.parse_args(argv)
    if args.bootstrap < 1 or not 0 < args.level < 1:
        parser.error("--bootstrap must be >= 1 and --level in (0, 1)")
    return args


def pick_baseline(labels: list[str], wanted: str | None) -> int:
    """Index of the arm ``wanted`` names: its exact label, or the one arm holding its words.

    Raises:
        ValueError: no arm or several arms match (listing the arms).
    """
    if wanted is None:
        return 0
    if wanted in labels:
        return labels.index(wanted)
    words = set(wanted.split())
    hits = [i for i, label in enumerate(labels) if words <= set(label.split())]
    if len(hits) != 1:
        found = "no arm" if not hits else "several arms"
        raise ValueError(f"--baseline {wanted!r} matches {found}; the arms: {'; '.join(labels)}")
    return hits[0]


def spread(values: list[float]) -> dict[str, Any]:
    """Mean and sample std (ddof 1; None for one value) of per-seed values."""
    import numpy as np

    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"mean": float(np.mean(values)), "std": std, "values": values}


def paired(arm: Any, base: Any, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The arm's difference from the baseline on set ``name`` over the seeds both have."""
    import numpy as np

    from facerec.eval.paired import pair_correct, paired_bootstrap

    seeds = sorted(set(arm.seeds()) & set(base.seeds()))
    finals = [[next(r for r in a.runs if r.seed == s).final(name) for s in seeds]
              for a in (arm, base)]  # fmt: skip
    if not seeds or any(f is None for side in finals for f in side):
        return {"note": "no shared seed with per-pair scores"}
    labels = {tuple(f["issame"]) for side in finals for f in side}
    if len(labels) != 1:
        return {"note": "not the same pairs"}
    outcome = [np.array([pair_correct(f["distances"], f["issame"]) for f in side])
               for side in finals]  # fmt: skip
    diff = paired_bootstrap(*outcome, n_boot=args.bootstrap, seed=args.seed, level=args.level)
    per_seed = (outcome[0].mean(axis=1) - outcome[1].mean(axis=1)).tolist()
    return {**diff._asdict(), "seed_values": seeds, "per_seed": per_seed,
            "pairs": int(outcome[0].shape[1])}  # fmt: skip


def set_rows(arms: list[Any], name: str, baseline: int, args: argparse.Namespace) -> list[dict]:
    """One row per arm with runs on set ``name``: the table's numbers."""
    rows = []
    for i, arm in enumerate(arms):
        runs = [run for run in arm.runs if name in run.sets()]
        if not runs:
            continue
        results = [run.metrics["val"][name] for run in runs]
        row = {
            "arm": arm.label,
            "baseline": i == baseline,
            "seeds": [run.seed for run in runs],
            "runs": [str(run.path) for run in runs],
            "accuracy": spread([r["accuracy"] for r in results]),
            "tar_at_far": spread([r["tar_at_far"] for r in results]),
            "far_target": results[0].get("far_target", 1e-3),
        }
        if i != baseline:
            row["difference"] = paired(arm, arms[baseline], name, args)
        rows.append(row)
    return rows


def percent(value: dict[str, Any], scale: float = 100.0, digits: int = 2) -> str:
    text = f"{scale * value['mean']:.{digits}f}"
    return text if value["std"] is None else f"{text} ± {scale * value['std']:.{digits}f}"


def difference_cell(row: dict[str, Any]) -> str:
    diff = row.get("difference")
    if diff is None:
        return "baseline"
    if "mean" not in diff:
        return diff["note"]
    return (f"{100 * diff['mean']:+.2f} [{100 * diff['low']:+.2f}, {100 * diff['high']:+.2f}]"
            f" ({diff['seeds']} seed{'s' * (diff['seeds'] > 1)})")  # fmt: skip


def markdown(tables: dict[str, list[dict]], args: argparse.Namespace, figures: dict) -> str:
    """The tables (one per set), how the interval was made, and the figures' links."""
    level = round(100 * args.level)
    out = []
    for name, rows in tables.items():
        far = rows[0]["far_target"]
        out += [f"## {name}", "",
                f"| arm | seeds | accuracy % (mean ± std) | per seed | TAR@FAR={far:g} |"
                f" Δ accuracy vs baseline, points [{level}% CI] |",
                "|---|---|---|---|---|---|"]  # fmt: skip
        for row in rows:
            per_seed = ", ".join(
                f"s{s} {100 * a:.1f}"
                for s, a in zip(row["seeds"], row["accuracy"]["values"], strict=True)
            )
            out.append(f"| {row['arm']} | {len(row['seeds'])} | {percent(row['accuracy'])} |"
                       f" {per_seed} | {percent(row['tar_at_far'], 1.0, 3)} |"
                       f" {difference_cell(row)} |")  # fmt: skip
        out += ["", f"Δ: mean over the seeds both arms have of the per-pair difference (the"
                f" 10-fold decisions), {level}% percentile interval of {args.bootstrap}"
                f" bootstrap resamples of the pairs (seed {args.seed}), paired across arms"
                " and seeds.", ""]  # fmt: skip
        out += [f"![{kind}]({path.name})" for kind, path in figures.get(name, {}).items()]
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    from facerec.cli.errors import run_tool

    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_tool(lambda: compare(args), "facerec compare")


def compare(args: argparse.Namespace) -> int:
    """Load, group, tabulate; print the Markdown and write what was asked."""
    from facerec.cli.compare_figures import write_figures
    from facerec.training.study import IGNORED, find_runs, group_arms, load_run

    runs = [load_run(path) for path in find_runs(args.runs)]
    if not runs:
        raise ValueError(f"no finished run (config.yaml + metrics.json) under {args.runs[0]}")
    arms = group_arms(runs, (*IGNORED, *args.ignore))
    baseline = pick_baseline([arm.label for arm in arms], args.baseline)
    names = list(dict.fromkeys(name for run in runs for name in run.sets()))
    tables = {name: set_rows(arms, name, baseline, args) for name in names}
    folder = args.figures or (args.md.parent if args.md else None)
    figures = {name: write_figures(arms, name, folder) for name in names} if folder else {}
    text = markdown(tables, args, figures)
    print(text)
    if args.md:
        args.md.write_text(text)
    if args.json:
        bootstrap = {"resamples": args.bootstrap, "seed": args.seed, "level": args.level,
                     "unit": "pair"}  # fmt: skip
        record = {
            "baseline": arms[baseline].label,
            "bootstrap": bootstrap,
            "sets": tables,
            "figures": {n: {k: str(p) for k, p in f.items()} for n, f in figures.items()},
        }
        args.json.write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
