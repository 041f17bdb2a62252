#!/usr/bin/env python
"""CPU training steps with and without facerec.training.malloc: images/s and the system-time share.

Each run is a fresh process (the allocator state is per process) doing ``--warmup`` untimed and
``--steps`` timed demo-sized training steps (MobileFaceNet + ArcFace, batch 128, random 112x112
images, the trainer's own ``train_step``). Modes alternate run by run so machine load hits them
alike:

- ``off``: glibc defaults (``trainer.malloc=false``);
- ``mallopt``: :func:`facerec.training.malloc.keep_freed_memory` at start-up (the trainer's
  default);
- ``env``: ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<2^40>`` set by the launcher;
- ``jemalloc`` / ``tcmalloc``: ``LD_PRELOAD`` of the library, when one is installed.

Usage:
    python scripts/bench_malloc.py --runs 3 --steps 6
    python scripts/bench_malloc.py --json malloc.json
"""

from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def child(mode: str, steps: int, warmup: int, batch: int, classes: int, threads: int) -> dict:
    import torch
    from torch.optim.lr_scheduler import LambdaLR

    from facerec.cli.bench_train import compose
    from facerec.model import build_recognizer
    from facerec.optim import param_groups
    from facerec.training.engine import train_step
    from facerec.training.malloc import keep_freed_memory

    if mode == "mallopt":
        assert keep_freed_memory(True), "mallopt failed"
    if threads:
        torch.set_num_threads(threads)
    cfg = compose("mobilefacenet", "arcface")
    recognizer = build_recognizer(cfg, classes).to(memory_format=torch.channels_last).train()
    from hydra.utils import instantiate

    optimizer = instantiate(cfg.optim)(param_groups([recognizer], cfg.optim.weight_decay))
    scheduler = LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    images = torch.randn(batch, 3, 112, 112).contiguous(memory_format=torch.channels_last)
    batches = [(images, torch.randint(classes, (batch,)))]
    for _ in range(warmup):
        train_step(recognizer, batches, optimizer, scheduler, scaler, None)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        train_step(recognizer, batches, optimizer, scheduler, scaler, None)
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    return {"mode": mode, "wall": t1 - t0, "user": user, "sys": system,
            "images_per_s": steps * batch / (t1 - t0), "minflt": r1.ru_minflt - r0.ru_minflt,
            "max_rss_mb": r1.ru_maxrss / 1024}  # fmt: skip


def preload_library(name: str) -> str | None:
    found = ctypes.util.find_library(name)
    if not found:
        return None
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"):
        if (Path(folder) / found).exists():
            return str(Path(folder) / found)
    return found


def launch(mode: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    env.pop("MALLOC_MMAP_MAX_", None)
    if mode == "env":
        env.update(MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(2**40))
    elif mode in ("jemalloc", "tcmalloc"):
        env["LD_PRELOAD"] = preload_library(mode)
    cmd = [sys.executable, __file__, "--child", mode, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch", str(args.batch),
           "--classes", str(args.classes), "--threads", str(args.threads)]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="processes per mode (3)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per process (6)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (1)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--classes", type=int, default=1500, help="head classes (demo: ~1,500)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--modes", nargs="+", default=None, help="default: every available")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.warmup, args.batch, args.classes,
                               args.threads)))  # fmt: skip
        return
    modes = args.modes or ["off", "mallopt", "env"] + [
        m for m in ("jemalloc", "tcmalloc") if preload_library(m)
    ]
    print(f"modes {modes}; jemalloc: {preload_library('jemalloc')}, "
          f"tcmalloc: {preload_library('tcmalloc')}", flush=True)  # fmt: skip
    start = time.perf_counter()
    rows = []
    for run in range(args.runs):
        for mode in modes if run % 2 == 0 else modes[::-1]:  # alternate the order too
            row = launch(mode, args)
            rows.append(row)
            print(f"run {run} {mode:9s} wall {row['wall']:6.2f} s  user {row['user']:6.2f} s  "
                  f"sys {row['sys']:6.2f} s  {row['images_per_s']:6.1f} img/s  "
                  f"minor faults {row['minflt']:>9d}  max RSS {row['max_rss_mb']:.0f} MB",
                  flush=True)  # fmt: skip
    print(f"\n{args.runs} runs x {args.steps} steps x batch {args.batch}, modes alternating, "
          f"{time.perf_counter() - start:.0f} s in all")  # fmt: skip
    print(f"{'mode':9s} {'img/s':>7s} {'wall':>7s} {'user s':>7s} {'sys s':>7s} {'sys share':>9s}")
    base = statistics.median(r["wall"] for r in rows if r["mode"] == modes[0])
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        wall = statistics.median(r["wall"] for r in mine)
        user = statistics.median(r["user"] for r in mine)
        system = statistics.median(r["sys"] for r in mine)
        ips = statistics.median(r["images_per_s"] for r in mine)
        print(f"{mode:9s} {ips:7.1f} {wall:7.2f} {user:7.2f} {system:7.2f} "
              f"{system / (user + system):9.1%}   wall x{wall / base:.2f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
