"""The demo recipe's levers, measured at a fixed budget of training images.

Every arm is ``train.py experiment=demo trainer.max_images=<images>`` plus its overrides (below),
trained on LFW's DevTrain people and verified on pairsDevTest (10 folds, flip) with the final
checkpoint: no model is picked by its pairsDevTest score. Each run is one process whose command
is printed and kept in ``<out>/study.json``; a run whose metrics exist is not repeated, so a
study can be extended arm by arm. ``--jobs 2`` trains two runs at a time with one thread each
(on a 2-core machine that is more images per second in all than one run on two threads).

    python scripts/recipe_study.py --lfw ../shared/data/lfw --out runs/recipe_study \\
        --arms arcface cosface --seeds 1 2 --images 20000 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ARCFACE = ["head=arcface", "head.s=64"]  # the demo sets s=32: every arm names its scale
ARCFACE_S32 = ["head=arcface", "head.s=32"]  # the demo's head
COSFACE = ["head=cosface", "head.m=0.4", "head.s=64"]
# name -> (what it changes, overrides on top of experiment=demo)
ARMS: dict[str, tuple[str, list[str]]] = {
    "arcface": ("ArcFace s=64 m=0.5 (the demo until 2026-12-02)", [*ARCFACE]),
    "arcface_b64": ("ArcFace, batch 64 (twice the steps)", [*ARCFACE, "data.batch_size=64"]),
    "arcface_all": (
        "ArcFace, every DevTrain person (min_images=1: 4,038 people, 9,525 images)",
        [*ARCFACE, "data.min_images=1"],
    ),
    "arcface_lr02": ("ArcFace, lr 0.2", [*ARCFACE, "optim.lr=0.2"]),
    "arcface_s32": ("ArcFace s=32", ARCFACE_S32),
    "arcface_s24": ("ArcFace s=24", ["head=arcface", "head.s=24"]),
    "arcface_s16": ("ArcFace s=16", ["head=arcface", "head.s=16"]),
    "arcface_s32_all": (
        "ArcFace s=32, every DevTrain person (min_images=1)",
        [*ARCFACE_S32, "data.min_images=1"],
    ),
    "arcface_s32_light": (
        "ArcFace s=32, augment=light",
        [*ARCFACE_S32, "augment=light"],
    ),
    "arcface_s32_ls": (
        "ArcFace s=32, label smoothing 0.1",
        [*ARCFACE_S32, "criterion.label_smoothing=0.1"],
    ),
    "arcface_s32_b64": (
        "ArcFace s=32, batch 64",
        [*ARCFACE_S32, "data.batch_size=64"],
    ),
    "arcface_m04": ("ArcFace m=0.4", [*ARCFACE, "head.m=0.4"]),
    "arcface_light": ("ArcFace, augment=light", [*ARCFACE, "augment=light"]),
    "arcface_ls": (
        "ArcFace, label smoothing 0.1",
        [*ARCFACE, "criterion.label_smoothing=0.1"],
    ),
    "arcface_linear": ("ArcFace, linear decay (poly power 1)", [*ARCFACE, "sched.power=1"]),
    "cosface": ("CosFace s=64 m=0.4", COSFACE),
    "cosface_m035": ("CosFace s=64 m=0.35 (paper)", ["head=cosface", "head.m=0.35", "head.s=64"]),
    "cosface_s32": ("CosFace s=32 m=0.4", ["head=cosface", "head.m=0.4", "head.s=32"]),
    "cosface_b64": ("CosFace m=0.4, batch 64", [*COSFACE, "data.batch_size=64"]),
    "cosface_light": ("CosFace m=0.4, augment=light", [*COSFACE, "augment=light"]),
    "cosface_strong": ("CosFace m=0.4, augment=strong", [*COSFACE, "augment=strong"]),
    "cosface_ls": (
        "CosFace m=0.4, label smoothing 0.1",
        [*COSFACE, "criterion.label_smoothing=0.1"],
    ),
    "cosface_lr02": ("CosFace m=0.4, lr 0.2", [*COSFACE, "optim.lr=0.2"]),
    "cosface_lr005": ("CosFace m=0.4, lr 0.05", [*COSFACE, "optim.lr=0.05"]),
    "cosface_nowarm": ("CosFace m=0.4, no warmup", [*COSFACE, "sched.warmup=0"]),
    "cosface_b64_light": (
        "CosFace m=0.4, batch 64, augment=light",
        [*COSFACE, "data.batch_size=64", "augment=light"],
    ),
    "cosface_pk": (
        "CosFace m=0.4, P x K batches (64 people x 2 images each)",
        [*COSFACE, "sampler=identity", "sampler.images_per_identity=2"],
    ),
    "centre_cosface": ("CosFace m=0.4 on centre crops (data=lfw)", [*COSFACE, "data=lfw"]),
}


def run(out: Path, arm: str, seed: int, images: int, lfw: str, threads: int) -> dict:
    """One ``train.py`` run (skipped when its metrics exist); returns its record."""
    name = f"{arm}-{images}-s{seed}"
    record_file = out / name / "record.json"
    command = [sys.executable, str(ROOT / "train.py"), "experiment=demo", f"name={name}",
               f"paths.output_dir={out}", f"data.root={lfw}", f"seed={seed}",
               f"trainer.max_images={images}", "trainer.progress=false",
               *ARMS[arm][1]]  # fmt: skip
    print("$", " ".join(command[1:]), flush=True)
    if not record_file.is_file():
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        start = time.time()
        (out / name).mkdir(parents=True, exist_ok=True)
        with open(out / name / "stdout.log", "w") as log:
            subprocess.run(command, check=True, cwd=ROOT, env=env, stdout=log,
                           stderr=subprocess.STDOUT)  # fmt: skip
        metrics = json.loads(sorted((out / name).glob("*/metrics.json"))[-1].read_text())
        record = {"arm": arm, "seed": seed, "images": images, "threads": threads,
                  "wall_s": round(time.time() - start), "command": " ".join(command[1:]),
                  "metrics": metrics}  # fmt: skip
        record_file.write_text(json.dumps(record, indent=2))
    record = json.loads(record_file.read_text())
    print(f"{name}: {summary(record)}", flush=True)
    return record


def summary(record: dict) -> str:
    val = next(iter(record["metrics"]["val"].values()))
    return (
        f"{100 * val['accuracy']:.1f}% ± {100 * val['accuracy_std']:.1f} (no flip "
        f"{100 * val.get('accuracy_noflip', float('nan')):.1f}%), {record['wall_s']} s"
    )


def table(records: list[dict]) -> list[str]:
    """Markdown: one row per arm and budget, every seed's accuracy, the means (TAR@FAR=1e-3)."""
    lines = ["| arm | what changes | images | pairsDevTest (flip) per seed | mean | TAR@FAR=1e-3 |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    groups: dict[tuple[str, int], list[dict]] = {}
    for record in records:
        groups.setdefault((record["arm"], record["images"]), []).append(record)
    for (arm, images), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        vals = [next(iter(r["metrics"]["val"].values())) for r in group]
        accs = [100 * v["accuracy"] for v in vals]
        seeds = ", ".join(f"s{r['seed']} {a:.1f}" for r, a in zip(group, accs, strict=True))
        tar = statistics.mean(v["tar_at_far"] for v in vals)
        lines.append(f"| `{arm}` | {ARMS[arm][0]} | {images:,} | {seeds} |"
                     f" {statistics.mean(accs):.1f}% | {tar:.3f} |")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw", required=True, help="LFW folder (pairsDevTest.txt, people files)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "recipe_study")
    parser.add_argument("--arms", nargs="+", default=["arcface", "cosface"], choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--images", nargs="+", type=int, default=[20000])
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (default: cores / jobs)")  # fmt: skip
    args = parser.parse_args(argv)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    args.out.mkdir(parents=True, exist_ok=True)
    todo = [(a, s, n) for n in args.images for a in args.arms for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        records = list(pool.map(lambda t: run(args.out, *t, args.lfw, threads), todo))
    every = sorted(args.out.glob("*/record.json"))
    all_records = [json.loads(p.read_text()) for p in every]
    (args.out / "study.json").write_text(json.dumps(all_records, indent=2))
    print("\n".join(table(all_records)))
    return 0 if records else 1


if __name__ == "__main__":
    raise SystemExit(main())
