#!/usr/bin/env python
"""Peak memory and time of the demo's training step, with and without recomputed BN + PReLU.

Each run is a fresh process (the heap's high-water mark is per process) that builds the
recognizer of ``train.py <overrides>`` (channels_last, as the trainer), applies the trainer's
allocator setting and times ``--steps`` calls of :func:`facerec.training.engine.train_step`
on one random batch of ``data.batch_size`` images. The variants (``--variant LABEL=OVERRIDES``,
the first is the baseline) alternate run by run with their order rotating, so the load of a
shared machine hits them alike; ratios are taken within each round.

Printed per run: the median CPU seconds per step after the first (the first faults the heap
in; CPU time, user + system, rather than wall time, because on a shared machine the wall time
is mostly the other jobs'), the wall seconds, the process's peak resident memory (``VmHWM``)
and both ratios to the baseline's.

Usage:
    python scripts/bench_step_memory.py --runs 3 --steps 4 \\
        --variant plain=backbone.memory_efficient=false \\
        --variant recompute=backbone.memory_efficient=true -- experiment=demo
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_memory import status_kb  # a sibling script, not a package

MARK = "BENCH_STEP "


def child(overrides: list[str], steps: int, classes: int) -> dict:
    """One variant in this process: ``steps`` training steps, their times and the peak."""
    import torch
    from hydra import compose, initialize_config_dir

    from facerec.configs import CONFIG_DIR
    from facerec.model import build_recognizer
    from facerec.training.engine import train_step
    from facerec.training.malloc import keep_freed_memory

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    keep_freed_memory(cfg.trainer.get("malloc", "auto"), "cpu")
    torch.manual_seed(0)
    recognizer = build_recognizer(cfg, classes).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(recognizer.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    batch = int(cfg.data.batch_size)
    images = torch.randint(0, 256, (batch, 3, 112, 112), dtype=torch.uint8)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(classes, (batch,))
    seconds, cpu_seconds = [], []
    for _ in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        train_step(recognizer, [(images, labels)], optimizer, scheduler, scaler, None)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    peak_mb = status_kb("VmHWM") / 1024
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mb": peak_mb, "batch": batch}


def launch(overrides: list[str], steps: int, classes: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--steps", str(steps), "--classes", str(classes),
         "--", *overrides],
        capture_output=True, text=True, check=True, env=os.environ,
    )  # fmt: skip
    line = next(x for x in out.stdout.splitlines() if x.startswith(MARK))
    return json.loads(line[len(MARK) :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="rounds (each runs every variant)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--classes", type=int, default=1184, help="the demo's identities")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=OVERRIDES")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="train.py overrides of every variant")
    args = parser.parse_args()
    if args.child:
        print(MARK + json.dumps(child(args.overrides, args.steps, args.classes)), flush=True)
        return
    specs = args.variant or [
        "plain=backbone.memory_efficient=false",
        "recompute=backbone.memory_efficient=true",
    ]
    variants = [(s.split("=", 1)[0], s.split("=", 1)[1].split()) for s in specs]
    rows: dict[str, list[tuple[float, ...]]] = {label: [] for label, _ in variants}
    for round_ in range(args.runs):
        order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
        got = {label: launch(args.overrides + extra, args.steps, args.classes)
               for label, extra in order}  # fmt: skip
        base_cpu = _median_step(got[variants[0][0]]["cpu_seconds"])
        base_mb = got[variants[0][0]]["peak_mb"]
        for label, _ in variants:
            r = got[label]
            cpu, wall = _median_step(r["cpu_seconds"]), _median_step(r["seconds"])
            rows[label].append((cpu, wall, r["peak_mb"], cpu / base_cpu, r["peak_mb"] / base_mb))
            print(f"run {round_} {label:<12} CPU {cpu:6.2f} s/step (x{cpu / base_cpu:.2f})  "
                  f"wall {wall:6.2f} s  peak {r['peak_mb']:6.0f} MB "
                  f"(x{r['peak_mb'] / base_mb:.2f})", flush=True)  # fmt: skip
    print(f"\nmedians over {args.runs} rounds, {args.steps} steps each (x < 1: less than the "
          f"baseline {variants[0][0]})")  # fmt: skip
    for label, values in rows.items():
        cpu, wall, mb, cpu_x, mb_x = (statistics.median(v[i] for v in values) for i in range(5))
        print(
            f"{label:<12} CPU {cpu:6.2f} s/step (x{cpu_x:.2f})  wall {wall:6.2f} s  "
            f"peak {mb:6.0f} MB (x{mb_x:.2f})"
        )


def _median_step(seconds: list[float]) -> float:
    return statistics.median(seconds[1:] or seconds)


if __name__ == "__main__":
    main()
