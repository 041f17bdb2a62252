"""Memory of one rank's Partial FC shard: weight, gradient and SGD momentum, measured.

Builds the shard rank ``--rank`` of ``--world`` would own (``class_shard``: ``C / W`` classes of
``D`` floats), wraps it in :class:`facerec.criteria.partial_fc.PartialFC` and runs ``--steps``
training steps (forward on a random global batch, backward, SGD with momentum and weight decay as
``configs/optim/sgd.yaml``) on the CPU, then reports the process's peak resident memory (RSS)
against the steady-state expectation ``(C/W) · D · 12`` bytes (fp32 weight + grad + momentum).

The other ranks are not started: the shard runs with ``world_size=1`` over its own classes,
which is the same local computation as inside a W-rank job (there, communication adds only
``(B_global, D)``-sized buffers). So the figure is one rank's, at ``C / W`` classes.

Usage:
    python scripts/partial_fc_memory.py --classes 2000000 --world 2     # 1M x 512: ~6-8 GB
    python scripts/partial_fc_memory.py --classes 20000 --dim 64        # a quick check
    python scripts/partial_fc_memory.py --classes 2000000 --world 2 --json -   # + a JSON line
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from facerec.configs import CONFIG_DIR
from facerec.criteria.partial_fc import PartialFC, class_shard

ROOT = Path(__file__).resolve().parents[1]


def rss_bytes() -> int:
    """Current resident set size (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return 0
    return pages * resource.getpagesize()


def peak_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=2_000_000, help="total classes C")
    parser.add_argument("--world", type=int, default=2, help="ranks W the classes are split over")
    parser.add_argument("--rank", type=int, default=0, help="whose shard to build")
    parser.add_argument("--dim", type=int, default=512, help="embedding size D")
    parser.add_argument("--batch", type=int, default=128, help="global batch (all ranks)")
    parser.add_argument("--sample-rate", type=float, default=0.1)
    parser.add_argument("--head", default="arcface", help="configs/head/<name>.yaml")
    parser.add_argument("--steps", type=int, default=2, help="momentum exists after step 1")
    parser.add_argument(
        "--fused",
        action="store_true",
        help="SGD(fused=True): weight decay and momentum in one kernel, without "
        "the gradient-sized temporary of the default implementation",
    )
    parser.add_argument("--json", help="write the figures as JSON here ('-': stdout)")
    args = parser.parse_args()

    torch.manual_seed(0)
    start, local = class_shard(args.classes, args.rank, args.world)
    elements = local * args.dim
    head_cfg = OmegaConf.load(CONFIG_DIR / "head" / f"{args.head}.yaml")
    optim_cfg = OmegaConf.load(CONFIG_DIR / "optim" / "sgd.yaml")

    def build(classes: int) -> tuple[PartialFC, torch.optim.Optimizer]:
        head = instantiate(head_cfg, embedding_size=args.dim, num_classes=classes)
        pfc = PartialFC(head, classes, args.dim, args.sample_rate).train()
        optimizer = instantiate(optim_cfg, **({"fused": True} if args.fused else {}))
        return pfc, optimizer(pfc.parameters())

    def steps(pfc: PartialFC, optimizer: torch.optim.Optimizer, count: int) -> None:
        for _ in range(count):
            embeddings = torch.randn(args.batch, args.dim, requires_grad=True)
            labels = torch.randint(pfc.num_local, (args.batch,))
            optimizer.zero_grad(set_to_none=True)
            pfc(embeddings, labels).backward()
            optimizer.step()

    # The same code on a toy shard first, so the baseline holds the libraries and kernels
    # that load lazily, and the measured increase is the shard's own.
    steps(*build(args.batch), count=2)
    baseline = rss_bytes()
    began = time.perf_counter()
    pfc, optimizer = build(local)
    after_build = rss_bytes()
    steps(pfc, optimizer, args.steps)
    elapsed = time.perf_counter() - began
    peak = peak_rss_bytes()
    steady = rss_bytes()

    gib = 2.0**30
    expected = 12 * elements
    figures = {
        "classes": args.classes,
        "world": args.world,
        "rank": args.rank,
        "shard_classes": local,
        "dim": args.dim,
        "elements": elements,
        "global_batch": args.batch,
        "sample_rate": args.sample_rate,
        "fused_sgd": args.fused,
        "sampled_centres": local if pfc.last_index is None else int(pfc.last_index.numel()),
        "expected_bytes": expected,
        "baseline_rss_bytes": baseline,
        "after_build_rss_bytes": after_build,
        "steady_rss_bytes": steady,
        "peak_rss_bytes": peak,
        "peak_increase_bytes": peak - baseline,
        "seconds": round(elapsed, 1),
    }
    print(
        f"shard of rank {args.rank}/{args.world}: classes {start}…{start + local - 1} "
        f"({local:,} x {args.dim} = {elements:,} fp32 elements), global batch {args.batch}, "
        f"sample_rate {args.sample_rate} ({figures['sampled_centres']:,} centres per step), "
        f"{args.steps} SGD steps in {elapsed:.1f} s"
    )
    print(f"  weight alone:                       {4 * elements / gib:8.2f} GiB")
    print(f"  weight + grad + momentum (12 B/el): {expected / gib:8.2f} GiB")
    print(f"  RSS after building the shard:       {(after_build - baseline) / gib:8.2f} GiB")
    print(f"  RSS after the steps:                {(steady - baseline) / gib:8.2f} GiB")
    print(
        f"  peak RSS (above the {baseline / gib:.2f} GiB baseline): "
        f"{(peak - baseline) / gib:.2f} GiB = {(peak - baseline) / elements:.1f} B/el"
    )
    if args.json == "-":
        print(json.dumps(figures))
    elif args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
