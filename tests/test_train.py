"""End-to-end: compose the real configs, train a few steps on real LFW images, resume, DDP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_train
from omegaconf import OmegaConf

from facerec.files import checkpoint
from facerec.training.run import run

ROOT = Path(__file__).resolve().parents[1]


def small_pairs(lfw_root: Path, out: Path, per_kind: int = 10) -> Path:
    """The first ``per_kind`` same and different pairs of pairsDevTest.txt: a 10-fold-able list."""
    lines = (lfw_root / "pairsDevTest.txt").read_text().splitlines()[1:]
    same, diff = lines[:500][:per_kind], lines[500:][:per_kind]
    out.write_text("\n".join([str(per_kind), *same, *diff]) + "\n")
    return out


def smoke_overrides(lfw_root: Path, tmp_path: Path, *extra: str) -> list[str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    pairs = small_pairs(lfw_root, tmp_path / "pairs_small.txt")
    return [
        f"data.root={lfw_root}",
        f"paths.output_dir={tmp_path / 'runs'}",
        "trainer.device=cpu",
        "trainer.progress=false",
        "data.min_images=20",  # a few dozen identities with many images: a quick scan
        "data.batch_size=8",
        "data.num_workers=0",
        f"data.val.lfw_devtest.pairs_file={pairs}",
        "trainer.eval_batch_size=16",
        "name=smoke",
        *extra,
    ]


def test_smoke_run_writes_checkpoint_metrics_and_config(lfw_root, tmp_path):
    cfg = compose_train(
        *smoke_overrides(lfw_root, tmp_path, "trainer.max_steps=2", "head.s=32", "head.m=0.4")
    )
    metrics = run(cfg)
    run_dir = Path(metrics["run_dir"])
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["step"] == 2
    assert 0.0 <= saved["accuracy"] <= 1.0 and saved["accuracy_std"] >= 0.0
    assert saved["images_per_sec"] > 0
    assert "threshold" in saved
    config = OmegaConf.load(run_dir / "config.yaml")
    assert config.head.s == 32 and config.head.m == 0.4  # overrides visible in the saved config
    ckpt = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2
    for key in ("model", "head", "optimizer", "scheduler", "scaler", "rng", "config", "classes"):
        assert key in ckpt
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert (run_dir / "tb" / "projector_config.pbtxt").is_file()  # embedding projector
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    images = set(events.Tags()["images"])
    for figure in ("roc", "distances", "hardest_pairs"):
        assert f"val/lfw_devtest_{figure}" in images
    kinds = ("same", "different")  # TensorBoard's native histograms beside the figure
    assert {f"val/lfw_devtest_distance_{k}" for k in kinds} <= set(events.Tags()["histograms"])
    assert {"train/loss", "train/lr", "train/images_per_sec", "val/lfw_devtest_accuracy"} <= set(
        events.Tags()["scalars"]
    )


def state_of(run_dir: Path) -> dict:
    return checkpoint.load(run_dir / "checkpoints" / "last.pt")


def assert_same_tensors(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_resume_continues_at_saved_step_with_identical_state(lfw_root, tmp_path):
    """4 steps straight == 2 steps, stop, resume=auto for 2 more: same weights and states."""
    common = ["trainer.eval_every=0", "sched.milestones=[3]", "sched.unit=step", "sched.warmup=1"]
    straight = run(
        compose_train(*smoke_overrides(lfw_root, tmp_path / "a", "trainer.max_steps=4", *common))
    )
    first = run(
        compose_train(*smoke_overrides(lfw_root, tmp_path / "b", "trainer.max_steps=2", *common))
    )
    resumed = run(
        compose_train(
            *smoke_overrides(
                lfw_root, tmp_path / "b", "trainer.max_steps=4", "trainer.resume=auto", *common
            )
        )
    )
    assert resumed["run_dir"] == first["run_dir"]  # continued the same run
    a, b = state_of(Path(straight["run_dir"])), state_of(Path(resumed["run_dir"]))
    assert b["step"] == 4
    for key in ("model", "head", "optimizer", "scheduler"):
        assert_same_tensors(a[key], b[key], key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_ddp_ends_with_identical_weights(lfw_root, tmp_path):
    # backbone.memory_efficient: its recomputing layers hand DDP their parameters' gradients
    # through their own backward (a gradient DDP never saw would leave the ranks apart).
    overrides = smoke_overrides(lfw_root, tmp_path, "trainer.max_steps=3", "trainer.eval_every=0",
                                "backbone.memory_efficient=true")  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={free_port()}", str(ROOT / "tests" / "ddp_worker.py"),
        str(tmp_path / "weights"), *overrides,
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "weights" / "rank0.pt")
    rank1 = torch.load(tmp_path / "weights" / "rank1.pt")
    assert_same_tensors(rank0, rank1)
    run_dirs = list((tmp_path / "runs" / "smoke").iterdir())
    assert len(run_dirs) == 1  # one run directory agreed by both ranks
    assert json.loads((run_dirs[0] / "metrics.json").read_text())["step"] == 3


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("head=nosuchhead", "Available options in 'head'"),
        ("head.sm=32", "unknown config key 'head.sm'"),
        ("trainer.nosuchkey=1", "unknown config key 'trainer.nosuchkey'"),
        ("data=folder", "missing required config value(s): data.root"),
        ("trainer.epochs=many", "trainer.epochs='many' must be int"),
        ("trainer.compile=maybe", "trainer.compile='maybe': choose true, false or auto"),
        ("trainer.compile=1", "trainer.compile=1 must be bool or str"),
        ("trainer.amp=fp8", "trainer.amp='fp8': choose one of ['auto', 'none', 'bf16', 'fp16']"),
        ("trainer.tf32=yes", "trainer.tf32='yes' must be bool"),
        ("trainer.device=gpu", "trainer.device='gpu' is not a device"),
        ("trainer.device=cuda:3", "device(s) are available"),
        ("trainer.sync_bn=true", "SyncBatchNorm has no CPU path"),
    ],
)
def test_bad_override_gives_readable_error(override, expected):
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), override],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"},
    )  # fmt: skip
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
