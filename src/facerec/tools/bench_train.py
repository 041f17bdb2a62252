"""Training throughput (images/s) and MFU of full training steps, over a grid of settings.

Every row times :func:`facerec.engine.train_step`, the trainer's own step, on random images
already on the device: backbone + embedding + margin head forward, cross-entropy, backward,
gradient norm, SGD (``configs/optim/sgd.yaml``) step. ``--warmup`` untimed steps first (they
include torch.compile's compilation), then ``--steps`` timed ones between two device
synchronisations.

MFU (model FLOP utilisation) = images/s x training FLOPs per image / peak FLOP/s, with the
training FLOPs taken as 3 (forward + backward) x 2 (multiply + add) x the forward MACs of
backbone + embedding (:func:`facerec.flops.count_flops` / 2; the head's ``D x C`` MACs, under 1 %
for a ResNet, are left out). The peak is ``--peak-tflops`` or, on a known accelerator, its
dense tensor-core figure for the row's dtype (H100 SXM: bf16/fp16 989, TF32 495, fp32 67
TFLOP/s); fp32 rows use the TF32 figure while ``torch.backends.cudnn.allow_tf32`` is on (the
PyTorch default, so fp32 convolutions do run on TF32 tensor cores). On the CPU MFU is n/a
unless ``--peak-tflops`` is given.

Each (backbone, batch, classes) group gets a baseline row (fp32, channels_last off, compile
off; run even if the grid does not ask for it) and every row's speed is given as a ratio to it.
fp16 rows are skipped on the CPU (no fp16 autocast there worth timing); a row that fails (out
of memory, a compile error) is reported as such and the grid goes on. Kernel settings are the
trainer's (``facerec.speed.configure_kernels``: cuDNN autotuning, TF32 unless ``--tf32 off``).

``--arcface-torch DIR`` (a checkout's ``recognition/arcface_torch``) adds, per ResNet group, a
row timing insightface arcface_torch's own step on its own modules (train_v2.py's fp16 path;
see :func:`arcface_torch_step`) and prints facerec's fastest row against it.

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
import functools
import gc
import importlib.util
import itertools
import json
import platform
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import torch
import torch.distributed as dist
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.optim.lr_scheduler import LambdaLR

from facerec.cli import CONFIG_DIR
from facerec.distributed import resolve_device
from facerec.engine import train_step
from facerec.flops import count_flops
from facerec.model import Recognizer, build_recognizer
from facerec.optim import param_groups
from facerec.speed import compile_backbone, configure_kernels

CONFIGS = CONFIG_DIR
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
ON_OFF = {"on": True, "off": False}

# Dense (no sparsity) peak TFLOP/s by device name, first match wins; "tf32" is what fp32
# convolutions get while cuDNN may use TF32. Vendor datasheets.
PEAKS: list[tuple[str, dict[str, float]]] = [
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.0}),
    ("H100", {"bf16": 989.0, "fp16": 989.0, "tf32": 495.0, "fp32": 67.0}),  # SXM
    ("H200", {"bf16": 989.0, "fp16": 989.0, "tf32": 495.0, "fp32": 67.0}),
    ("A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
]


@dataclass
class Row:
    """One grid point and what it measured."""

    backbone: str
    batch: int
    classes: int
    dtype: str
    channels_last: bool
    compile: bool
    route: str = "facerec"
    images_per_sec: float | None = None
    step_ms: float | None = None
    mfu: float | None = None
    peak_tflops: float | None = None
    peak_memory_gib: float | None = None
    skipped_steps: int = 0
    vs_baseline: float | None = None
    note: str = ""

    @property
    def is_baseline(self) -> bool:
        return (
            self.route == "facerec"
            and self.dtype == "fp32"
            and not self.channels_last
            and not self.compile
        )


def device_name(device: torch.device) -> str:
    if device.type == "cpu":
        return platform.processor() or platform.machine()
    module = getattr(torch, device.type, None)
    get_name = getattr(module, "get_device_name", None)
    return get_name(device) if get_name else device.type


def peak_for(name: str, dtype: str, override: float | None) -> float | None:
    """Peak TFLOP/s for a row: the override, else the table entry, else None (MFU n/a)."""
    if override is not None:
        return override
    for key, peaks in PEAKS:
        if key in name:
            if dtype == "fp32" and torch.backends.cudnn.allow_tf32:
                return peaks["tf32"]
            return peaks[dtype]
    return None


def synchronize(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def compose(backbone: str, head: str) -> DictConfig:
    """The training config a user gets with ``backbone=<backbone> head=<head>``."""
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
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


# arcface_torch's backbone names for ours (its backbones/__init__.py get_model: r50 -> iresnet50).
ARCFACE_TORCH_NETS = {
    "resnet18": "iresnet18",
    "resnet34": "iresnet34",
    "resnet50": "iresnet50",
    "resnet100": "iresnet100",
}


@functools.cache  # once per run, not once per grid row
def load_file(path: Path) -> ModuleType:
    """Import one source file by path, under a private name (no sys.path changes)."""
    if not path.is_file():
        raise FileNotFoundError(f"--arcface-torch: {path} not found")
    spec = importlib.util.spec_from_file_location(f"_arcface_torch_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def arcface_torch_step(
    row: Row, args: argparse.Namespace, device: torch.device
) -> Callable[[], bool]:
    """insightface arcface_torch's own step, as its train_v2.py runs it with ``fp16=True``.

    Its modules, loaded from the checkout at ``--arcface-torch``: ``iresnet*(fp16=True)``
    (autocast inside the backbone, fp32 FC), wrapped in DDP (one rank here, as train_v2.py
    does even on one GPU), ``PartialFC_V2`` with ``CombinedMarginLoss(64, 1.0, 0.5, 0.0)``
    (ArcFace) at sample rate 1.0, SGD (momentum 0.9, weight decay 5e-4), GradScaler
    (growth_interval 100), gradient clipping to 5, a scheduler step and the ``loss.item()`` of
    its logging callback (its one host sync per step).
    """
    if device.type != "cuda":
        raise RuntimeError("arcface_torch runs on CUDA only (its modules call .cuda())")
    if row.backbone not in ARCFACE_TORCH_NETS:
        raise ValueError(f"arcface_torch has no {row.backbone}")
    root = args.arcface_torch
    iresnet = load_file(root / "backbones" / "iresnet.py")
    losses = load_file(root / "losses.py")
    partial_fc = load_file(root / "partial_fc_v2.py")
    torch.cuda.set_device(device)
    if not dist.is_initialized():
        with socket.socket() as probe:  # a free port: a fixed one may be taken
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        dist.init_process_group(
            "nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1, device_id=device
        )
    net = getattr(iresnet, ARCFACE_TORCH_NETS[row.backbone])(
        dropout=0.0, fp16=True, num_features=512
    ).cuda()
    net = torch.nn.parallel.DistributedDataParallel(
        net,
        broadcast_buffers=False,
        device_ids=[device.index],
        bucket_cap_mb=16,
        find_unused_parameters=True,
    )
    net.train()
    net._set_static_graph()
    margin = losses.CombinedMarginLoss(64, 1.0, 0.5, 0.0, 0)
    pfc = partial_fc.PartialFC_V2(margin, 512, row.classes, 1.0, True).train().cuda()
    optimizer = torch.optim.SGD(
        [{"params": net.parameters()}, {"params": pfc.parameters()}],
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
    )
    scheduler = LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cuda", growth_interval=100)
    images = torch.randn(row.batch, 3, 112, 112, device=device)
    labels = torch.randint(row.classes, (row.batch,), device=device)

    def step() -> bool:
        loss = pfc(net(images), labels)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        scheduler.step()
        return bool(torch.isfinite(torch.tensor(loss.item())))

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


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'route':<14}{'backbone':<14}{'batch':>6}{'classes':>8} {'dtype':<5}{'ch_last':>8}"
        f"{'compile':>8}{'img/s':>10}{'step ms':>9}{'MFU':>7}{'peak TF':>8}{'mem GiB':>8}"
        f"{'x base':>8}  note"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        mfu = "n/a" if r.mfu is None else f"{100 * r.mfu:.1f}%"
        print(
            f"{r.route:<14}{r.backbone:<14}{r.batch:>6}{r.classes:>8} {r.dtype:<5}"
            f"{'on' if r.channels_last else 'off':>8}{'on' if r.compile else 'off':>8}"
            f"{fmt(r.images_per_sec, '.1f'):>10}{fmt(r.step_ms, '.1f'):>9}{mfu:>7}"
            f"{fmt(r.peak_tflops, '.0f'):>8}{fmt(r.peak_memory_gib, '.1f'):>8}"
            f"{fmt(r.vs_baseline, '.2f'):>8}  {r.note}"
        )


def print_comparison(rows: list[Row]) -> None:
    """Per group with an arcface_torch row: facerec's fastest row against it."""
    groups: dict[tuple[str, int, int], list[Row]] = {}
    for r in rows:
        if r.images_per_sec:
            groups.setdefault((r.backbone, r.batch, r.classes), []).append(r)
    lines = []
    for (backbone, batch, classes), group in groups.items():
        theirs = [r for r in group if r.route == "arcface_torch"]
        ours = [r for r in group if r.route == "facerec"]
        if not theirs or not ours:
            continue
        best = max(ours, key=lambda r: r.images_per_sec)
        ratio = best.images_per_sec / theirs[0].images_per_sec
        lines.append(
            f"{backbone} b{batch} C{classes}: arcface_torch fp16 {theirs[0].images_per_sec:.0f}"
            f" img/s, facerec {best.images_per_sec:.0f} img/s ({best.dtype},"
            f" channels_last {'on' if best.channels_last else 'off'},"
            f" compile {'on' if best.compile else 'off'}) = {ratio:.2f}x"
        )
    if lines:
        print("\nfacerec's fastest row vs arcface_torch's step, same process and GPU:")
        print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument(
        "--backbones",
        nargs="+",
        default=["mobilefacenet", "resnet50", "resnet100"],
        help="configs/backbone/<name>.yaml",
    )
    parser.add_argument("--batch", nargs="+", type=int, default=[128, 256, 512])
    parser.add_argument(
        "--dtype",
        nargs="+",
        choices=list(DTYPES),
        default=list(DTYPES),
        help="fp32, or autocast to bf16 / fp16 (+ GradScaler)",
    )
    parser.add_argument("--channels-last", nargs="+", choices=list(ON_OFF), default=["on", "off"])
    parser.add_argument("--compile", nargs="+", choices=list(ON_OFF), default=["on", "off"])
    parser.add_argument(
        "--classes",
        nargs="+",
        type=int,
        default=[10572, 93431],
        help="head size (CASIA-WebFace 10572, MS1MV2 85742, Glint 93431)",
    )
    parser.add_argument("--head", default="arcface", help="configs/head/<name>.yaml")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (and compilation)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda:0 | ...")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="peak TFLOP/s for MFU (default: by device kind and dtype; n/a on the CPU)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--tf32",
        choices=list(ON_OFF),
        default="on",
        help="fp32 matmuls/convolutions on TF32 tensor cores (trainer.tf32, default on)",
    )
    parser.add_argument(
        "--arcface-torch",
        type=Path,
        default=None,
        metavar="DIR",
        help="insightface's recognition/arcface_torch folder: adds a row per group with its "
        "own training step (CUDA only)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    configure_kernels(device, deterministic=False, tf32=ON_OFF[args.tf32])  # as the trainer does
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.cuda.amp in arcface_torch
    name = device_name(device)
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

    rows = grid(args)
    baselines: dict[tuple[str, int, int], Row] = {}
    for row in rows:
        row.peak_tflops = peak_for(name, row.dtype, args.peak_tflops)
        if row.dtype == "fp16" and device.type == "cpu":
            row.note = "skipped: fp16 autocast is for accelerators (use bf16 on the CPU)"
            continue
        try:
            run_row(row, args, device, macs[row.backbone])
        except torch.OutOfMemoryError:
            row.note = "out of memory"
        except Exception as error:  # a failed row (e.g. a compile error) must not end the grid
            row.note = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
        finally:
            gc.collect()
            if device.type != "cpu":
                torch.accelerator.empty_cache()
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

    print()
    print_table(rows)
    print_comparison(rows)
    if dist.is_initialized():
        dist.destroy_process_group()
    if args.json:
        meta = {
            "device": str(device),
            "device_name": name,
            "torch": torch.__version__,
            "steps": args.steps,
            "warmup": args.warmup,
            "head": args.head,
            "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "macs_per_image": macs,
        }
        rows_out = [asdict(r) for r in rows]
        args.json.write_text(json.dumps({"meta": meta, "rows": rows_out}, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
