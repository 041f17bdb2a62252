"""Training throughput (images/s) and MFU of full training steps, over a grid of settings.

Every row times :func:`facerec.training.engine.train_step`, the trainer's own step, on random
images already on the device: backbone + embedding + margin head forward, cross-entropy,
backward, gradient norm, SGD (``configs/optim/sgd.yaml``) step. ``--warmup`` untimed steps first
(they include torch.compile's compilation), then ``--steps`` timed ones between two device
synchronisations.

MFU (model FLOP utilisation) = images/s x training FLOPs per image / peak FLOP/s, with the
training FLOPs taken as 3 (forward + backward) x 2 (multiply + add) x the forward MACs of
backbone + embedding (:func:`facerec.training.flops.count_flops` / 2; the head's ``D x C`` MACs,
under 1 % for a ResNet, are left out). The peak is ``--peak-tflops`` or, on a known accelerator,
its dense tensor-core figure for the row's dtype (H100 SXM: bf16/fp16 989, TF32 495, fp32 67
TFLOP/s); fp32 rows use the TF32 figure while ``torch.backends.cudnn.allow_tf32`` is on (the
PyTorch default, so fp32 convolutions do run on TF32 tensor cores). On the CPU MFU is n/a unless
``--peak-tflops`` is given.

Each (backbone, batch, classes) group gets a baseline row (fp32, channels_last off, compile
off; run even if the grid does not ask for it) and every row's speed is given as a ratio to it.
fp16 rows are skipped on the CPU (no fp16 autocast there worth timing); a row that fails (out
of memory, a compile error) is reported as such and the grid goes on. Kernel settings are the
trainer's (``facerec.training.speed.configure_kernels``: cuDNN autotuning, TF32 unless
``--tf32 off``).

``--arcface-torch DIR`` (a checkout's ``recognition/arcface_torch``) adds, per ResNet group, a
row timing insightface arcface_torch's own step on its own modules (train_v2.py's fp16 path;
see :mod:`facerec.cli.bench_train_arcface`) and prints facerec's fastest row against it.

Usage:
    python scripts/bench_train.py --backbones resnet50 --batch 256 512 --dtype fp32 bf16 \\
        --channels-last on --compile off on --classes 93431       # the H100 rows that matter
    python scripts/bench_train.py --json bench.json               # the full grid (216 rows)
    python scripts/bench_train.py --backbones resnet50 --batch 512 --dtype bf16 \
        --arcface-torch ~/insightface/recognition/arcface_torch  # side by side on one GPU
    python scripts/bench_train.py --backbones mobilefacenet --batch 4 --classes 100 --steps 2 \\
        --compile off                                             # CPU smoke run
"""

from __future__ import annotations

import argparse
import gc
import itertools
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.optim.lr_scheduler import LambdaLR

from facerec.cli.bench_train_arcface import ARCFACE_TORCH_NETS, arcface_torch_step
from facerec.cli.bench_train_report import (
    Row,
    device_name,
    fmt,
    peak_for,
    print_comparison,
    print_table,
    write_json,
)
from facerec.configs import CONFIG_DIR
from facerec.distributed import resolve_device
from facerec.messages import first_line
from facerec.model import Recognizer, build_recognizer
from facerec.optim import param_groups
from facerec.training.engine import train_step
from facerec.training.flops import count_flops
from facerec.training.speed import compile_backbone, configure_kernels

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
ON_OFF = {"on": True, "off": False}


def synchronize(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def compose(backbone: str, head: str) -> DictConfig:
    """The training config a user gets with ``backbone=<backbone> head=<head>``."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose("train", overrides=[f"backbone={backbone}", f"head={head}"])


def build(backbone: str, classes: int, head: str) -> Recognizer:
    """Backbone + embedding + head, built by the trainer's own builder."""
    return build_recognizer(compose(backbone, head), classes)


def macs_per_image(backbone: str) -> int:
    """Forward MACs of backbone + embedding for one 112x112 image (on the CPU, once):
    FlopCounterMode's FLOPs / 2, attention included (= count_macs for convolutional nets)."""
    return count_flops(build(backbone, 2, "normface").model, (1, 3, 112, 112)) // 2


def facerec_step(row: Row, args: argparse.Namespace, device: torch.device) -> Callable[[], bool]:
    """facerec's training step for one grid point; the callable returns whether it stepped."""
    memory_format = torch.channels_last if row.channels_last else torch.contiguous_format
    recognizer = build(row.backbone, row.classes, args.head).to(device, memory_format=memory_format)
    recognizer.train()
    module = recognizer
    if row.compile:
        # Each row compiles a new model of the same classes: without a reset dynamo would keep
        # recompiling the same code objects and, past its cache limit, silently run eagerly.
        torch._dynamo.reset()
        module = Recognizer(compile_backbone(recognizer.model), recognizer.criterion)  # as trained
    optim_cfg = compose(row.backbone, args.head).optim
    optimizer = instantiate(optim_cfg)(param_groups([recognizer], optim_cfg.weight_decay))
    scheduler = LambdaLR(optimizer, lambda step: 1.0)
    amp_dtype = DTYPES[row.dtype]
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
    images = torch.randn(row.batch, 3, 112, 112, device=device)
    images = images.contiguous(memory_format=memory_format)
    labels = torch.randint(row.classes, (row.batch,), device=device)
    batches = [(images, labels)]

    def step() -> bool:
        # train_step syncs with the host once per step (its skip decision), as in training.
        return train_step(module, batches, optimizer, scheduler, scaler, amp_dtype, None,
                          recognizer.clip_grad_norm_)[2]  # fmt: skip

    return step


ROUTES = {"facerec": facerec_step, "arcface_torch": arcface_torch_step}


def run_row(row: Row, args: argparse.Namespace, device: torch.device, macs: int) -> None:
    """Build, warm up and time one grid point; fills in ``row``."""
    torch.manual_seed(args.seed)
    step = ROUTES[row.route](row, args, device)
    if device.type != "cpu":
        torch.accelerator.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        row.skipped_steps += int(not step())
    synchronize(device)
    elapsed = time.perf_counter() - start

    row.step_ms = 1e3 * elapsed / args.steps
    row.images_per_sec = row.batch * args.steps / elapsed
    if row.peak_tflops is not None:
        row.mfu = row.images_per_sec * 6.0 * macs / (row.peak_tflops * 1e12)
    if device.type != "cpu":
        row.peak_memory_gib = torch.accelerator.max_memory_allocated(device) / 2**30
    if row.skipped_steps:
        row.note = f"{row.skipped_steps} non-finite step(s) skipped (no SGD update)"


def grid(args: argparse.Namespace) -> list[Row]:
    """Every requested combination, plus each group's baseline, baseline first."""
    rows = []
    for backbone, classes, batch in itertools.product(args.backbones, args.classes, args.batch):
        group = [
            Row(backbone, batch, classes, dtype, ON_OFF[cl], ON_OFF[co])
            for dtype, cl, co in itertools.product(args.dtype, args.channels_last, args.compile)
        ]
        baseline = [r for r in group if r.is_baseline] or [
            Row(backbone, batch, classes, "fp32", False, False, note="baseline (added)")
        ]
        if args.arcface_torch and backbone in ARCFACE_TORCH_NETS:
            baseline.append(
                Row(backbone, batch, classes, "fp16", False, False, route="arcface_torch")
            )
        rows += baseline + [r for r in group if not r.is_baseline]
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    add = parser.add_argument
    add("--backbones", nargs="+", default=["mobilefacenet", "resnet50", "resnet100"],
        help="configs/backbone/<name>.yaml")  # fmt: skip
    add("--batch", nargs="+", type=int, default=[128, 256, 512])
    add("--dtype", nargs="+", choices=list(DTYPES), default=list(DTYPES),
        help="fp32, or autocast to bf16 / fp16 (+ GradScaler)")  # fmt: skip
    add("--channels-last", nargs="+", choices=list(ON_OFF), default=["on", "off"])
    add("--compile", nargs="+", choices=list(ON_OFF), default=["on", "off"])
    add("--classes", nargs="+", type=int, default=[10572, 93431],
        help="head size (CASIA-WebFace 10572, MS1MV2 85742, Glint 93431)")  # fmt: skip
    add("--head", default="arcface", help="configs/head/<name>.yaml")
    add("--steps", type=int, default=20, help="timed steps per row")
    add("--warmup", type=int, default=5, help="untimed steps (and compilation)")
    add("--device", default="auto", help="auto | cpu | cuda:0 | ...")
    add("--peak-tflops", type=float, default=None, help="peak TFLOP/s for MFU (default: by "
        "device kind and dtype; n/a on the CPU)")  # fmt: skip
    add("--threads", type=int, default=None, help="torch CPU threads")
    add("--tf32", choices=list(ON_OFF), default="on", help="fp32 matmuls/convolutions on TF32 "
        "tensor cores (trainer.tf32, default on)")  # fmt: skip
    add("--arcface-torch", type=Path, default=None, metavar="DIR",
        help="insightface's recognition/arcface_torch folder: adds a row per group with its "
        "own training step (CUDA only)")  # fmt: skip
    add("--seed", type=int, default=0)
    add("--json", type=Path, default=None, help="also write the rows here")
    return parser.parse_args(argv)


def print_setup(args: argparse.Namespace, device: torch.device, name: str) -> dict[str, int]:
    """Print the device, its kernel settings and each backbone's MACs; return those MACs."""
    if device.type == "cpu":
        detail = f"{torch.get_num_threads()} CPU threads"
    else:
        detail = (
            f"TF32 {'on' if torch.backends.cudnn.allow_tf32 else 'off'}, cuDNN autotuning "
            f"{'on' if torch.backends.cudnn.benchmark else 'off'}"
        )
    print(
        f"device {device} ({name}), torch {torch.__version__}, {args.warmup} warm-up + "
        f"{args.steps} timed steps per row, head {args.head}, {detail}"
    )
    macs = {b: macs_per_image(b) for b in args.backbones}
    for backbone, count in macs.items():
        print(
            f"  {backbone}: {count / 1e9:.3f} GMACs/image forward -> "
            f"{6 * count / 1e9:.2f} training GFLOPs/image"
        )
    return macs


def try_row(row: Row, args: argparse.Namespace, device: torch.device, macs: int) -> None:
    """:func:`run_row`, or the reason it could not run in ``row.note``."""
    try:
        run_row(row, args, device, macs)
    except torch.OutOfMemoryError:
        row.note = "out of memory"
    except Exception as error:  # a failed row (e.g. a compile error) must not end the grid
        row.note = f"failed: {type(error).__name__}: {first_line(error)[:120]}"
    finally:
        gc.collect()
        if device.type != "cpu":
            torch.accelerator.empty_cache()


def run_grid(
    rows: list[Row], args: argparse.Namespace, device: torch.device, name: str, macs: dict
) -> None:
    """Time every row in order (each group's baseline first), filling in its ratio to that
    baseline, and print a line per row as it finishes."""
    baselines: dict[tuple[str, int, int], Row] = {}
    for row in rows:
        row.peak_tflops = peak_for(name, row.dtype, args.peak_tflops)
        if row.dtype == "fp16" and device.type == "cpu":  # no progress line, no ratio
            row.note = "skipped: fp16 autocast is for accelerators (use bf16 on the CPU)"
            continue
        try_row(row, args, device, macs[row.backbone])
        key = (row.backbone, row.batch, row.classes)
        if row.is_baseline:
            baselines[key] = row
        base = baselines.get(key)
        if base is not None and base.images_per_sec and row.images_per_sec:
            row.vs_baseline = row.images_per_sec / base.images_per_sec
        print(
            f"  {row.route} {row.backbone} b{row.batch} C{row.classes} {row.dtype} "
            f"cl={row.channels_last} compile={row.compile}: "
            f"{fmt(row.images_per_sec, '.1f')} img/s {row.note}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    configure_kernels(device, deterministic=False, tf32=ON_OFF[args.tf32])  # as the trainer does
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.cuda.amp in arcface_torch
    name = device_name(device)
    macs = print_setup(args, device, name)
    rows = grid(args)
    run_grid(rows, args, device, name, macs)
    print()
    print_table(rows)
    print_comparison(rows)
    if dist.is_initialized():
        dist.destroy_process_group()
    if args.json:
        write_json(args.json, rows, args, device, name, macs)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
