#!/usr/bin/env python
"""Peak resident memory of a training run, phase by phase, with its training images/s.

Each run is a fresh process training ``python train.py <overrides>`` in-process (Hydra compose,
then :func:`facerec.training.run.run`), so the figures are the trainer's own. Phases:

- ``setup``: config checks, model, optimizer, training loader (with ``data.preload``: the
  decode of every training image); inside it
- ``data``: :func:`facerec.training.inputs.build_data` (scan, alignment if the cache is cold,
  the verification images' decode);
- ``train``: the training steps (``train_one_epoch`` until its first nested phase below;
  what follows one is ``train after save`` etc.);
- ``evaluate``: verification on every set;
- ``save``: checkpoints; ``finish``: metrics.json; ``other``: imports, config, the exit.

A phase's peak is the kernel's high-water mark of the process (``VmHWM``), reset through
``/proc/self/clear_refs`` at every phase switch, so even a millisecond-long peak is caught.
Child processes (DataLoader workers) are separate processes with peaks of their own: a thread
samples their ``VmHWM`` every 0.2 s. ``/usr/bin/time -v`` reports the largest single process,
which is the trainer here (``max RSS`` below: the largest of its phase peaks; its own
``ru_maxrss`` is unusable once ``clear_refs`` has reset the high-water mark).

Variants alternate run by run, their order rotating, so machine load hits them alike; the
images/s ratio against the first variant is taken within each round.

Usage:
    python scripts/bench_memory.py --activations -- experiment=demo
    python scripts/bench_memory.py --runs 2 --variant malloc_off=trainer.malloc=false \\
        -- experiment=demo trainer.max_images=2560
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MARK = "BENCH_MEMORY "
# The trainer functions that start a phase, as facerec.training.run names them.
PHASES = {"setup": "setup", "build_data": "data", "train_one_epoch": "train",
          "evaluate": "evaluate", "save": "save", "finish": "finish"}  # fmt: skip


def status_kb(field: str, pid: int | str = "self") -> int:
    """A ``VmRSS`` / ``VmHWM`` figure of ``/proc/<pid>/status`` in kB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PhaseMemory:
    """Per-phase peak RSS (MB) and seconds of this process; phases nest (a stack)."""

    def __init__(self) -> None:
        self.stack = ["other"]
        self.returned_from = ""  # a stretch after a nested phase is named after it too
        self.peak_mb: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.t = time.perf_counter()
        Path("/proc/self/clear_refs").write_text("5")

    def switch(self, push: str | None = None) -> None:
        """Close the current phase's stretch (its peak since the last switch), then push
        ``push`` or, without one, pop back to the enclosing phase."""
        now, phase = time.perf_counter(), self.stack[-1]
        if self.returned_from and phase != "other":
            phase = f"{phase} after {self.returned_from}"
        self.peak_mb[phase] = max(self.peak_mb.get(phase, 0.0), status_kb("VmHWM") / 1024)
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self.t
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM back to the current RSS
        self.t = now
        self.returned_from = self.stack.pop() if push is None else ""
        if push is not None:
            self.stack.append(push)

    def wrap(self, name: str, fn):
        def phase(*args, **kwargs):
            self.switch(push=name)
            try:
                return fn(*args, **kwargs)
            finally:
                self.switch()

        return phase


def sample_children(peaks: dict[int, float], stop: threading.Event) -> None:
    """Each child process's peak RSS (MB), read every 0.2 s until ``stop``."""
    me = os.getpid()
    while not stop.wait(0.2):
        for task in Path(f"/proc/{me}/task").iterdir():
            try:
                pids = (task / "children").read_text().split()
            except OSError:
                continue
            for pid in pids:
                peaks[int(pid)] = max(peaks.get(int(pid), 0.0), status_kb("VmHWM", pid) / 1024)


def child(overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir

    import facerec.training.run as run_module
    from facerec.configs import CONFIG_DIR

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    memory = PhaseMemory()
    for name, phase in PHASES.items():
        setattr(run_module, name, memory.wrap(phase, getattr(run_module, name)))
    workers: dict[int, float] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=sample_children, args=(workers, stop), daemon=True)
    sampler.start()
    metrics = run_module.run(cfg)
    memory.switch(push="other")
    stop.set()
    images = metrics["step"] * cfg.data.batch_size * cfg.trainer.accumulate
    return {"peak_mb": memory.peak_mb, "seconds": memory.seconds,
            "images_per_s": images / memory.seconds["train"],  # the steps, no eval/save
            # ru_maxrss forgets what clear_refs resets: the largest phase peak is the process's
            "max_rss_mb": max(memory.peak_mb.values()),
            "worker_peak_mb": max(workers.values(), default=0.0), "workers": len(workers),
            "accuracy": metrics.get("accuracy"), "load": os.getloadavg()[0]}  # fmt: skip


def saved_activations(overrides: list[str], batch: int = 16) -> dict:
    """What autograd keeps for the backward pass of one training batch: the bytes of the
    distinct tensors a forward pass saves (``saved_tensors_hooks``), measured on ``batch``
    images and scaled to ``data.batch_size``."""
    import torch
    from hydra import compose, initialize_config_dir

    from facerec.configs import CONFIG_DIR
    from facerec.model import build_recognizer

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    recognizer = build_recognizer(cfg, 1000).to(memory_format=torch.channels_last).train()
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    images = torch.randint(0, 256, (batch, 3, 112, 112), dtype=torch.uint8)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        recognizer(images.contiguous(memory_format=torch.channels_last),
                   torch.randint(1000, (batch,)))  # fmt: skip
    per_image = sum(storages.values()) / batch
    return {"mb_per_image": per_image / 2**20,
            "gib_per_batch": per_image * cfg.data.batch_size / 2**30,
            "batch_size": cfg.data.batch_size}  # fmt: skip


def launch(overrides: list[str], log: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as out:
        env = {**os.environ, "FACEREC_OUTPUT_DIR": out}
        with log.open("a") as sink:
            subprocess.run([sys.executable, __file__, "--child", *overrides], env=env,
                           stdout=sink, stderr=subprocess.STDOUT, check=True)  # fmt: skip
    lines = [line for line in log.read_text().splitlines() if line.startswith(MARK)]
    return json.loads(lines[-1][len(MARK) :])


def row(label: str, r: dict, ratio: float | None) -> str:
    phases = "  ".join(f"{k} {v:5.0f}" for k, v in r["peak_mb"].items())
    vs = f"{ratio:5.2f}x" if ratio is not None else "   -  "
    return (f"{label:<16} max RSS {r['max_rss_mb']:6.0f} MB  {r['images_per_s']:5.1f} img/s {vs}"
            f"  load {r['load']:4.1f}  workers {r['workers']} (peak {r['worker_peak_mb']:4.0f})"
            f"  acc {r['accuracy']}  | peak MB by phase: {phases}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="rounds (each runs every variant)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=OVERRIDES",
                        help="extra overrides (space-separated) against the base run")  # fmt: skip
    parser.add_argument("--log", type=Path, default=Path("bench_memory.log"))
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    parser.add_argument(
        "--activations",
        action="store_true",
        help="print what autograd saves for one training batch, then exit",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="train.py overrides of every variant")
    args = parser.parse_args()
    if args.activations:
        print(json.dumps(saved_activations(args.overrides)))
        return
    if args.child:
        print(MARK + json.dumps(child(args.overrides)), flush=True)
        return
    variants = [("base", [])] + [
        (spec.split("=", 1)[0], spec.split("=", 1)[1].split()) for spec in args.variant
    ]
    results = []
    for round_ in range(args.runs):
        order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
        done = {label: launch(args.overrides + extra, args.log) for label, extra in order}
        base = done["base"]["images_per_s"]
        for label, _ in variants:
            r = done[label]
            print(f"run {round_} " + row(label, r, r["images_per_s"] / base), flush=True)
            results.append({"round": round_, "variant": label, **r})
    for label, _ in variants:
        mine = [r for r in results if r["variant"] == label]
        print(f"median {label:<10} max RSS {statistics.median(r['max_rss_mb'] for r in mine):6.0f}"
              f" MB  {statistics.median(r['images_per_s'] for r in mine):5.1f} img/s")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
