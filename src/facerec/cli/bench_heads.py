"""Time every head's forward + backward against a plain ``nn.Linear`` + cross-entropy.

Each head in ``configs/head/*.yaml`` is built as the trainer builds it and timed on one step
(forward, cross-entropy, backward) at CASIA-WebFace size; the baseline is an ``nn.Linear`` of
the same shape followed by ``F.cross_entropy``. Steps are interleaved (baseline, head 1, head
2, ... per repeat) so drifting clocks and noisy neighbours hit all of them alike, and the
median is reported. Target: every head within 1.3x of the baseline.

A head whose ``weight`` has more rows than classes (sub-centre ArcFace: ``C·k``) does ``k`` times
the baseline's matmul work, so it is also compared with an ``nn.Linear`` of its own row count
(``linear+ce[C·k]``, cross-entropy over those ``C·k`` outputs), in the last column.

Usage:
    python scripts/bench_heads.py                          # CPU (1 thread), B=256, D=512, C=10572
    python scripts/bench_heads.py --device cuda --repeats 50
    python scripts/bench_heads.py --device cuda --autocast bfloat16
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from facerec.configs import CONFIG_DIR

HEAD_DIR = CONFIG_DIR / "head"


def make_step(
    module: nn.Module, embeddings: torch.Tensor, labels: torch.Tensor, autocast: torch.dtype | None
) -> Callable[[], None]:
    """One training step of ``module`` (a head, or the baseline wrapped to take labels)."""
    device_type = embeddings.device.type

    def step() -> None:
        module.zero_grad(set_to_none=True)
        embeddings.grad = None
        with torch.autocast(device_type, dtype=autocast or torch.float32, enabled=bool(autocast)):
            loss = F.cross_entropy(module(embeddings, labels), labels)
        loss.backward()

    return step


class LinearBaseline(nn.Module):
    """``nn.Linear`` with the heads' call signature."""

    def __init__(self, embedding_size: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(embedding_size, num_classes)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.fc(embeddings)


def time_once(step: Callable[[], None], device: torch.device) -> float:
    """Seconds one step takes: wall clock on an accelerator (synchronised), process CPU time
    on the CPU, where wall clock on a shared machine measures the neighbours as much as us."""
    if device.type == "cpu":
        start = time.process_time()
        step()
        return time.process_time() - start
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    torch.cuda.synchronize(device)
    return time.perf_counter() - start


def build_modules(dim: int, classes: int) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """``({name: module}, {head: its same-size baseline})``: the ``linear+ce`` baseline, every
    head of ``configs/head`` (``(B, dim)`` embeddings -> ``(B, classes)`` logits), and an
    ``nn.Linear`` of each head's own row count where that is not ``classes``."""
    modules: dict[str, nn.Module] = {"linear+ce": LinearBaseline(dim, classes)}
    same_size: dict[str, str] = {}  # head -> the baseline with as many rows as its weight
    for path in sorted(HEAD_DIR.glob("*.yaml")):
        cfg = OmegaConf.load(path)
        modules[path.stem] = instantiate(cfg, embedding_size=dim, num_classes=classes)
    for name, module in list(modules.items()):
        rows = module.fc.out_features if name == "linear+ce" else module.weight.shape[0]
        if rows != classes:
            same_size[name] = f"linear+ce[{rows}]"
            modules.setdefault(same_size[name], LinearBaseline(dim, rows))
    return modules, same_size


def print_table(times: dict[str, list[float]], same_size: dict[str, str]) -> None:
    """Median ms per module, its ratio to ``linear+ce`` and to its same-size baseline."""
    baseline = statistics.median(times["linear+ce"])
    width = max(len(name) for name in times)
    print(f"{'head':<{width}} {'median ms':>10} {'ratio':>7} {'vs same-size linear':>20}")
    for name, samples in times.items():
        median = statistics.median(samples)
        line = f"{name:<{width}} {median * 1e3:>10.2f} {median / baseline:>6.2f}x"
        if name in same_size:
            own = median / statistics.median(times[same_size[name]])
            line += f" {own:>19.2f}x"
        print(line)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10572)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--autocast", choices=["bfloat16", "float16"], default=None)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared CPU, OpenMP workers spin-waiting "
        "on descheduled siblings inflate CPU time, mostly in the heads' elementwise ops)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    autocast = getattr(torch, args.autocast) if args.autocast else None
    torch.manual_seed(0)
    embeddings = torch.randn(args.batch, args.dim, device=device, requires_grad=True)
    labels = torch.randint(args.classes, (args.batch,), device=device)

    modules, same_size = build_modules(args.dim, args.classes)
    steps = {
        name: make_step(module.to(device).train(), embeddings, labels, autocast)
        for name, module in modules.items()
    }

    times: dict[str, list[float]] = {name: [] for name in steps}
    for repeat in range(args.warmup + args.repeats):
        for name, step in steps.items():
            elapsed = time_once(step, device)
            if repeat >= args.warmup:
                times[name].append(elapsed)

    print(
        f"B={args.batch} D={args.dim} C={args.classes} device={device} "
        f"autocast={args.autocast} repeats={args.repeats} threads={torch.get_num_threads()}"
    )
    print_table(times, same_size)


if __name__ == "__main__":
    main()
