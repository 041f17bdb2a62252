"""The rows of ``facerec bench train``: what one grid point measured, the peak FLOP/s its MFU
is taken against, and the tables and JSON the rows are reported in."""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

__all__ = ["Row", "device_name", "peak_for", "print_comparison", "print_table", "write_json"]

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


def write_json(
    path: Path,
    rows: list[Row],
    args: argparse.Namespace,
    device: torch.device,
    name: str,
    macs: dict[str, int],
) -> None:
    """``{"meta": the run's settings, "rows": one dict per Row}``, indented."""
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
    path.write_text(json.dumps({"meta": meta, "rows": rows_out}, indent=2))
