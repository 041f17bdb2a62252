"""Fine-tuning on LFW, measured: triplet loss against a margin-head control at equal images.

Two scenarios, each verified on pairsDevTest (10 folds, flip), every run one ``train.py``
process whose command is printed and kept in ``<out>/study.json``:

* **same** — start from a model trained on DevTrain (``--base``, e.g. the demo's best.pt) and
  fine-tune on the same DevTrain people;
* **transfer** — split DevTrain's people in two halves (alternating in the people file's
  order), train a base on half A with the demo recipe, fine-tune on half B (identities the
  base never saw).

Each fine-tune runs ``--images`` training images: ``experiment=finetune`` (batch-hard triplet,
P x K) and the control, the same experiment with a fresh ArcFace head over the new classes on
uniform batches (head learning rate x10, backbone frozen for its first steps so the random
head does not wreck the features). ``before`` is the base's own pairsDevTest accuracy.

    python scripts/finetune_study.py --lfw ../shared/data/lfw \\
        --base runs/demo/<run>/checkpoints/best.pt --out runs/finetune_study
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH = 128


def read_people(path: Path) -> list[str]:
    """The lines of an LFW people file after its count line (``name<TAB>count``)."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return lines[1:]


def write_people(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join([str(len(lines)), *lines]) + "\n")
    return path


def train(out: Path, name: str, overrides: list[str], log: list[dict]) -> dict:
    """One ``train.py`` run (skipped when its metrics exist); returns its metrics."""
    metrics_file = out / name / "metrics.json"
    command = [sys.executable, str(ROOT / "train.py"), f"name={name}",
               f"paths.output_dir={out}", "hydra.run.dir=.", "trainer.progress=false",
               *overrides]  # fmt: skip
    print("$", " ".join(command[1:]), flush=True)
    if not metrics_file.is_file():
        start = time.time()
        subprocess.run(command, check=True, cwd=ROOT)
        runs = sorted((out / name).glob("*/metrics.json"))
        metrics = json.loads(runs[-1].read_text())
        metrics["wall_s"] = round(time.time() - start)
        metrics_file.write_text(json.dumps(metrics, indent=2))
    metrics = json.loads(metrics_file.read_text())
    log.append({"name": name, "command": " ".join(command[1:]), **metrics})
    print(f"{name}: {metrics['accuracy']:.4f} ± {metrics['accuracy_std']:.4f}", flush=True)
    return metrics


def checkpoint_of(out: Path, name: str) -> Path:
    return sorted((out / name).glob("*/checkpoints/best.pt"))[-1]


def finetunes(
    out: Path, tag: str, base: Path, people: str, steps: int, extra: list[str], log: list[dict]
) -> None:
    """The triplet fine-tune and its margin-head control from ``base`` on ``people``."""
    common = ["experiment=finetune", f"trainer.init_from={base}", f"data.people_file={people}",
              f"trainer.max_steps={steps}", *extra]  # fmt: skip
    train(out, f"{tag}-triplet", common, log)
    control = ["criterion=margin", "sampler=uniform", "head=arcface",
               "trainer.lr_scale.criterion=10",
               f"trainer.freeze_backbone_steps={steps // 5}"]  # fmt: skip
    train(out, f"{tag}-arcface", common + control, log)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, required=True, help="LFW folder (pairsDevTest.txt)")
    parser.add_argument("--base", type=Path, required=True, help="a model trained on DevTrain")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "finetune_study")
    parser.add_argument("--images", type=int, default=6400, help="training images per fine-tune")
    parser.add_argument("--base-epochs", type=int, default=5, help="epochs of the half-A base")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    lfw = args.lfw.resolve()
    steps = max(1, args.images // BATCH)
    log: list[dict] = []
    lfw_root = f"paths.lfw_root={lfw}"

    people = read_people(lfw / "peopleDevTrain.txt")
    half_a = write_people(out / "people_A.txt", people[0::2])
    half_b = write_people(out / "people_B.txt", people[1::2])

    finetunes(out, "same", args.base.resolve(), "peopleDevTrain.txt", steps, [lfw_root], log)
    train(out, "transfer-base", ["experiment=demo", lfw_root, f"data.people_file={half_a}",
                                 f"trainer.epochs={args.base_epochs}"], log)  # fmt: skip
    base = checkpoint_of(out, "transfer-base")
    finetunes(out, "transfer", base, str(half_b), steps, [lfw_root], log)
    (out / "study.json").write_text(json.dumps(log, indent=2))
    print(f"wrote {out / 'study.json'}")


if __name__ == "__main__":
    main()
