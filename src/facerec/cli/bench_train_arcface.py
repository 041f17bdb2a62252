"""insightface arcface_torch's own training step, the reference row of ``facerec bench train``.

``--arcface-torch DIR`` (a checkout's ``recognition/arcface_torch``) loads its modules from
there by file path and times its train_v2.py step with ``fp16=True``, so facerec's fastest row
can be read against the trainer most face recognition work is compared with, in the same
process on the same GPU. Nothing here is imported unless that flag is given.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import socket
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch.optim.lr_scheduler import LambdaLR

if TYPE_CHECKING:  # only for annotations: the benchmark imports this module, not the reverse
    from facerec.cli.bench_train_report import Row

__all__ = ["ARCFACE_TORCH_NETS", "arcface_torch_step"]

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
    its logging callback (its one host sync per step). Images ``(row.batch, 3, 112, 112)``.
    """
    if device.type != "cuda":
        raise RuntimeError("arcface_torch runs on CUDA only (its modules call .cuda())")
    if row.backbone not in ARCFACE_TORCH_NETS:
        raise ValueError(f"arcface_torch has no {row.backbone}")
    net, pfc = build_modules(args.arcface_torch, row.backbone, row.classes, device)
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


def build_modules(
    root: Path, backbone: str, classes: int, device: torch.device
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(DDP-wrapped iresnet, PartialFC_V2)`` in training mode on ``device``, as train_v2.py
    builds them: 512-d embeddings, ``classes`` centres, every centre sampled."""
    iresnet = load_file(root / "backbones" / "iresnet.py")
    losses = load_file(root / "losses.py")
    partial_fc = load_file(root / "partial_fc_v2.py")
    torch.cuda.set_device(device)
    init_single_rank(device)
    net = getattr(iresnet, ARCFACE_TORCH_NETS[backbone])(
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
    pfc = partial_fc.PartialFC_V2(margin, 512, classes, 1.0, True).train().cuda()
    return net, pfc


def init_single_rank(device: torch.device) -> None:
    """A one-rank NCCL process group (PartialFC_V2 and DDP need one), once per process."""
    if dist.is_initialized():
        return
    with socket.socket() as probe:  # a free port: a fixed one may be taken
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group(
        "nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1, device_id=device
    )
