"""The demo recipe's levers at a fixed budget of training images: a preset over a Hydra sweep
per arm and ``facerec compare`` (docs/studies.md).

Every arm is ``train.py -m experiment=demo trainer.max_images=<images> seed=<seeds>`` plus its
overrides (below), trained on LFW's DevTrain people and verified on pairsDevTest (10 folds,
flip) with the final checkpoint: no model is picked by its pairsDevTest score. Each arm's sweep
lives in ``<out>/<arm>-<images>/seed<seed>/``; a seed whose run finished is not repeated, so a
study can be extended arm by arm and seed by seed. ``--jobs 2`` trains an arm's seeds two at a
time through the joblib launcher (the study extra), each on its share of the cores. The table,
figures and paired intervals are ``facerec compare`` over the arms' folders (baseline: the
first arm), written to ``<out>/study.md`` and ``<out>/study.json``.

    python scripts/recipe_study.py --lfw ../shared/data/lfw --out runs/recipe_study \\
        --arms arcface_s32 cosface --seeds 1 2 --images 20000 --jobs 2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
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


def sweep(out: Path, arm: str, seeds: list[int], images: int, lfw: str, jobs: int) -> Path:
    """Train the seeds of one arm that have not finished; returns the arm's sweep folder."""
    folder = out / f"{arm}-{images}"
    todo = [s for s in seeds if not any((folder / f"seed{s}").rglob("metrics.json"))]
    launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"] if jobs > 1 else []
    command = [sys.executable, str(ROOT / "train.py"), "-m", "experiment=demo",
               f"data.root={lfw}", f"trainer.max_images={images}", "trainer.progress=false",
               f"hydra.sweep.dir={folder}", "hydra.sweep.subdir=seed${seed}",
               f"seed={','.join(map(str, todo))}", *launcher, *ARMS[arm][1]]  # fmt: skip
    print(f"{arm}: {ARMS[arm][0]}\n$", " ".join(command[1:]), flush=True)
    if todo:
        subprocess.run(command, check=True, cwd=ROOT)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw", required=True, help="LFW folder (pairsDevTest.txt, people files)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "recipe_study")
    parser.add_argument("--arms", nargs="+", default=["arcface", "cosface"], choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--images", nargs="+", type=int, default=[20000])
    parser.add_argument("--jobs", type=int, default=1, help="an arm's seeds trained at a time")
    args = parser.parse_args(argv)
    folders = [sweep(args.out, arm, args.seeds, n, args.lfw, args.jobs)
               for n in args.images for arm in args.arms]  # fmt: skip
    outputs = ["--md", str(args.out / "study.md"), "--json", str(args.out / "study.json")]
    compare = [sys.executable, "-m", "facerec", "compare", *map(str, folders), *outputs]
    print("$", " ".join(compare[1:]), flush=True)
    return subprocess.run(compare, cwd=ROOT).returncode


if __name__ == "__main__":
    raise SystemExit(main())
