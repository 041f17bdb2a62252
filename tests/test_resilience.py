"""Cluster-grade behaviour: exact resume after SIGKILL, SIGTERM preemption and Ctrl-C, corrupt
checkpoints, non-finite steps, broken images and configurations that cannot work."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from facerec.cli.train import train_status
from facerec.files import checkpoint
from facerec.training.engine import NonFiniteError, NonFiniteGuard, Preemption, train_step
from facerec.training.loop import Preempted

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6


def tiny_folder(root: Path, corrupt: int = 0) -> Path:
    """4 identities x 6 random 112x112 images; ``corrupt`` of them replaced by broken files."""
    rng = np.random.default_rng(0)
    for person in range(4):
        folder = root / f"id{person}"
        folder.mkdir(parents=True)
        for i in range(6):
            image = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
            cv2.imwrite(str(folder / f"{i}.jpg"), image)
    for i in range(corrupt):
        (root / f"id{i}" / "0.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    return root


def overrides(data_root: Path, out: Path, *extra: str) -> list[str]:
    """A deterministic CPU run on a synthetic folder, verified on nothing (fast)."""
    return [
        "data=folder", f"data.root={data_root}", "data.batch_size=4", "data.num_workers=0",
        "~data.val", "backbone=mobilefacenet", "embedding.embedding_size=32",
        f"paths.output_dir={out}", "name=resilience", "trainer.device=cpu",
        "trainer.progress=false", "trainer.deterministic=true", f"trainer.max_steps={STEPS}",
        "trainer.log_every=1",
        "trainer.checkpoint_every=1", "trainer.keep_checkpoints=2", "trainer.eval_every=0",
        "sched=multistep", "sched.unit=step", "sched.milestones=[3]", "sched.warmup=2",
        *extra,
    ]  # fmt: skip


def env() -> dict[str, str]:
    # One thread: identical arithmetic in every process, so weights can be compared bit for bit.
    return {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}


def train(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], env=env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], env=env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for_step(out: Path, step: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    pattern = f"resilience/*/checkpoints/step_{step:09d}.pt"
    while not list(out.glob(pattern)):
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, f"step {step} never reached"
        time.sleep(0.05)


def final_state(out: Path) -> dict:
    (run_dir,) = (out / "resilience").iterdir()
    return checkpoint.load(run_dir / "checkpoints" / "last.pt")


def assert_identical(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] == STEPS
    for part in ("model", "head"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), f"{part}.{key}"
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    for x, y in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(x["momentum_buffer"], y["momentum_buffer"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every interrupted one is compared with."""
    tmp = tmp_path_factory.mktemp("reference")
    data = tiny_folder(tmp / "data")
    result = train(overrides(data, tmp / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    return data, final_state(tmp / "out")


def test_sigkill_at_a_random_step_then_resume_is_bit_identical(reference, tmp_path):
    data, expected = reference
    kill_at = random.Random(os.getpid()).randint(1, STEPS - 1)
    process = start(overrides(data, tmp_path))
    wait_for_step(tmp_path, kill_at, process)
    process.kill()  # SIGKILL: no handler runs, whatever was written is all there is
    process.wait()
    resumed = train(overrides(data, tmp_path, "trainer.resume=auto"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert_identical(expected, final_state(tmp_path))


def signal_after_step_one(process: subprocess.Popen, out: Path, sig: int,
                          timeout: float = 120) -> str:  # fmt: skip
    """Send ``sig`` once the run under ``out`` has logged step 1; its stderr once it exited."""
    deadline = time.monotonic() + timeout
    while not any("step 1/" in log.read_text() for log in out.glob("resilience/*/train.log")):
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "step 1 never logged"
        time.sleep(0.05)
    process.send_signal(sig)
    return process.communicate(timeout=timeout)[1]


def test_sigterm_writes_a_checkpoint_and_exits_for_requeue(reference, tmp_path):
    data, expected = reference
    # checkpoint_every is large: the only checkpoint is the one the signal asks for.
    process = start(overrides(data, tmp_path, "trainer.checkpoint_every=1000"))
    stderr = signal_after_step_one(process, tmp_path, signal.SIGTERM)
    assert process.returncode == 143, stderr[-2000:]
    assert "preempted: checkpoint written at step" in stderr
    saved = final_state(tmp_path)["step"]
    assert 1 <= saved < STEPS
    resumed = train(
        overrides(data, tmp_path, "trainer.resume=auto", "trainer.checkpoint_every=1000")
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_identical(expected, final_state(tmp_path))


def test_ctrl_c_writes_a_checkpoint_and_exits_130_in_one_line(reference, tmp_path):
    """SIGINT is handled like SIGTERM (the resume after it is the same code path, checked
    bit for bit above): the steps since the last checkpoint are kept, no traceback."""
    data, _ = reference
    process = start(overrides(data, tmp_path, "trainer.checkpoint_every=1000"))
    stderr = signal_after_step_one(process, tmp_path, signal.SIGINT)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("facerec: interrupted (Ctrl-C): checkpoint written at step"), last
    assert "trainer.resume=auto" in last
    assert 1 <= final_state(tmp_path)["step"] < STEPS


def test_a_second_ctrl_c_stops_at_once():
    """In-process: the first SIGINT only sets the flag; a repeat within ``repeat_s`` (torchrun
    forwarding the terminal's signal) is the same Ctrl-C; a later one raises at once."""
    before = signal.getsignal(signal.SIGINT)  # whatever pytest or an earlier test left
    preemption = Preemption(repeat_s=0.2)
    try:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # the forwarded copy
        assert preemption.interrupted and preemption.exit_code(143) == 130
        assert preemption.requested(torch.device("cpu"))
        time.sleep(0.3)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        preemption.close()
    assert signal.getsignal(signal.SIGINT) is before  # close() puts the previous handler back
    sigterm = Preemption()
    try:
        signal.raise_signal(signal.SIGTERM)
        assert not sigterm.interrupted and sigterm.exit_code(143) == 143
    finally:
        sigterm.close()


@pytest.mark.parametrize(
    ("raised", "status", "line"),
    [
        (KeyboardInterrupt(), 130, "facerec: interrupted: stopped at once"),
        (Preempted(3, 130, interrupted=True), 130, "facerec: interrupted (Ctrl-C): checkpoint"),
        (Preempted(3, 143), 143, "facerec: preempted: checkpoint written at step 3"),
        (ValueError("data.root: no such folder"), 2, "facerec: error: data.root: no such"),
    ],
)
def test_how_a_run_ends_is_its_exit_status_and_one_line(raised, status, line, capsys):
    def run(cfg):
        raise raised

    assert train_status(run, None) == status
    stderr = capsys.readouterr().err
    assert stderr.startswith(line) and len(stderr.strip().splitlines()) == 1, stderr


@pytest.mark.parametrize(
    ("raised", "calls"),
    [
        (None, ["fit", "barrier", "destroy"]),
        (Preempted(3, 143), ["fit", "barrier", "destroy"]),  # every rank stops at the same step
        (ValueError("data.root: no such folder"), ["fit", "destroy"]),
    ],
)
def test_ranks_meet_before_the_group_goes_unless_this_one_leaves_on_an_error(
    monkeypatch, raised, calls
):
    """Gloo ranks that destroy their group unsynchronised can abort at exit (SIGABRT); a rank
    leaving on an error must not wait at a barrier the others may never reach."""
    from facerec import distributed
    from facerec.training import run as run_module

    seen = []
    monkeypatch.setattr(distributed, "init", lambda device: None)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "barrier", lambda: seen.append("barrier"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: seen.append("destroy"))

    def fit(cfg, env):
        seen.append("fit")
        if raised is not None:
            raise raised
        return {"accuracy": 1.0}, None

    monkeypatch.setattr(run_module, "fit", fit)
    cfg = OmegaConf.create({"trainer": {"device": "cpu"}})
    if raised is None:
        assert run_module.run(cfg) == {"accuracy": 1.0}
    else:
        with pytest.raises(type(raised)):
            run_module.run(cfg)
    assert seen == calls


def test_a_barrier_that_fails_still_closes_the_group(monkeypatch, caplog):
    """A rank that left on an error after the last collective: gloo's barrier raises on the
    others, which log it and still destroy their group (no traceback at a finished run)."""
    from facerec import distributed

    seen = []

    def barrier():
        raise RuntimeError("Connection closed by peer [127.0.0.1]:29500\nmore")

    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "barrier", barrier)
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: seen.append("destroy"))
    distributed.cleanup()
    assert seen == ["destroy"]
    assert "did not meet before closing (Connection closed by peer" in caplog.text


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(reference, tmp_path, caplog):
    data, _ = reference
    first = train(overrides(data, tmp_path, "trainer.max_steps=3"))
    assert first.returncode == 0, first.stderr[-3000:]
    (run_dir,) = (tmp_path / "resilience").iterdir()
    newest = run_dir / "checkpoints" / "step_000000003.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a node dying mid-copy
    path, state = checkpoint.load_latest(tmp_path / "resilience")
    assert path.name == "step_000000002.pt" and state["step"] == 2
    assert "skipping unreadable checkpoint" in caplog.text and "step_000000003.pt" in caplog.text


def test_checkpoint_from_another_backbone_is_refused_with_a_clear_message(reference, tmp_path):
    data, _ = reference
    first = train(overrides(data, tmp_path, "trainer.max_steps=1"))
    assert first.returncode == 0, first.stderr[-3000:]
    other = train(overrides(data, tmp_path, "trainer.resume=auto", "embedding.embedding_size=16"))
    assert other.returncode == 2
    assert "does not fit this" in other.stderr and "Traceback" not in other.stderr


@pytest.mark.parametrize(
    ("mode", "skipped"),
    [
        (["data.verify_images=false"], 2),  # streamed: found when loaded, skipped, counted
        (["data.verify_images=false", "data.preload=true"], 2),  # found while caching
        (["data.verify_images=true"], 0),  # scanned at start-up: never reaches a batch
    ],
)
def test_broken_images_are_skipped_counted_and_reported(tmp_path, mode, skipped):
    data = tiny_folder(tmp_path / "data", corrupt=2)
    # 6 steps x 4 images = one epoch of the 24 files: each broken file is met exactly once.
    result = train(overrides(data, tmp_path / "out", "trainer.max_steps=6", *mode))
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "out" / "resilience").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["skipped_samples"] == skipped
    assert (
        "id0/0.jpg" in result.stdout + result.stderr
        and "id1/0.jpg" in result.stdout + result.stderr
    )


def test_fp16_on_cpu_stops_before_anything_is_written(tmp_path):
    result = train(overrides(tiny_folder(tmp_path / "data"), tmp_path / "out", "trainer.amp=fp16"))
    assert result.returncode == 2 and "fp16 needs a GPU" in result.stderr
    assert not (tmp_path / "out").exists()


class Exploding(nn.Module):
    """Loss is NaN when ``labels`` hold a 0: a bad batch on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = (self.weight * images.mean()).sum()
        return loss * torch.where(
            (labels == 0).any(), torch.tensor(float("nan")), torch.tensor(1.0)
        )


def test_non_finite_steps_are_skipped_then_the_run_stops():
    module = Exploding()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    guard = NonFiniteGuard(max_consecutive=3)
    good = [(torch.ones(2, 3), torch.tensor([1, 2]))]
    bad = [(torch.ones(2, 3), torch.tensor([0, 2]))]
    _, _, finite = train_step(module, good, optimizer, scheduler, scaler, None)
    assert finite
    before = module.weight.detach().clone()
    for step in (2, 3):
        _, _, finite = train_step(module, bad, optimizer, scheduler, scaler, None)
        assert not finite and torch.equal(module.weight, before)  # skipped: weights untouched
        guard.update(finite, step, 0.1, scaler)
    assert guard.skipped == 2
    with pytest.raises(NonFiniteError, match="3 consecutive"):
        train_step(module, bad, optimizer, scheduler, scaler, None)
        guard.update(False, 4, 0.1, scaler)


def torchrun(args: list[str]) -> list[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
            f"--master_port={port}", str(ROOT / "train.py"), *args]  # fmt: skip


@pytest.mark.slow  # two torchrun jobs of 2 ranks (~35 s): make test-all
def test_two_process_gloo_preempted_and_resumed_is_bit_identical(reference, tmp_path):
    """SIGTERM to torchrun mid-run: both ranks stop at the same step boundary, rank 0 writes the
    checkpoint, and the resumed 2-process run ends exactly where an uninterrupted one does."""
    data, _ = reference
    straight = subprocess.run(torchrun(overrides(data, tmp_path / "a")), env=env(), cwd=ROOT,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-3000:]
    args = overrides(data, tmp_path / "b", "trainer.checkpoint_every=1000")
    process = subprocess.Popen(torchrun(args), env=env(), cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    # torchrun forwards SIGTERM to both workers
    stderr = signal_after_step_one(process, tmp_path / "b", signal.SIGTERM, timeout=180)
    assert process.returncode != 0
    assert "preempted: checkpoint written at step" in stderr
    assert 1 <= final_state(tmp_path / "b")["step"] < STEPS
    resumed = subprocess.run(torchrun([*args, "trainer.resume=auto"]), env=env(), cwd=ROOT,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_identical(final_state(tmp_path / "a"), final_state(tmp_path / "b"))


class Quadratic(nn.Module):
    """A BatchNorm-free model: the mean loss over micro-batches equals the big batch's."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.arange(3.0))

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return ((images @ self.weight - labels.float()) ** 2).mean()


def test_gradient_accumulation_equals_one_big_batch():
    torch.manual_seed(0)
    images, labels = torch.randn(8, 3), torch.randint(0, 5, (8,))
    results = []
    for batches in ([(images, labels)], [(images[:4], labels[:4]), (images[4:], labels[4:])]):
        module = Quadratic()
        optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        loss, _, finite = train_step(module, batches, optimizer, scheduler, scaler, None)
        assert finite
        results.append((loss, module.weight.detach().clone()))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


@pytest.mark.slow  # two torchrun jobs of 2 ranks (~35 s): make test-all
def test_partial_fc_two_ranks_checkpoints_shards_and_resumes_exactly(reference, tmp_path):
    """Partial FC: each rank holds half the centres; its shard (centres + optimizer state) is
    checkpointed beside the main file, and 3 steps + resume to 5 equals 5 steps straight."""
    data, _ = reference
    pfc = ["criterion=partial_fc", "trainer.keep_checkpoints=10"]

    def launch(out: Path, *extra: str) -> None:
        args = overrides(data, out, *pfc, *extra)
        result = subprocess.run(torchrun(args), env=env(), cwd=ROOT, capture_output=True,
                                text=True, timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]

    launch(tmp_path / "a", "trainer.max_steps=5")
    launch(tmp_path / "b", "trainer.max_steps=3")
    launch(tmp_path / "b", "trainer.max_steps=5", "trainer.resume=auto")
    runs = [next((tmp_path / x / "resilience").iterdir()) for x in ("a", "b")]
    mains = [checkpoint.load(run / "checkpoints" / "last.pt") for run in runs]
    assert mains[0]["step"] == mains[1]["step"] == 5
    for key, value in mains[0]["model"].items():
        assert torch.equal(value, mains[1]["model"][key]), key
    for rank in (0, 1):
        shards = [torch.load(run / "checkpoints" / "shards" / f"rank{rank:05d}-step_000000005.pt",
                             weights_only=False) for run in runs]  # fmt: skip
        assert shards[0]["head"]["head.weight"].shape[0] == 2  # 4 classes over 2 ranks
        for key, value in shards[0]["head"].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, shards[1]["head"][key]), (rank, key)


@pytest.mark.slow  # compiling MobileFaceNet takes about a minute on a 2-core CPU
def test_compiled_training_keeps_plain_checkpoints_and_an_eager_model(tmp_path):
    """trainer.compile=true steps through a compiled backbone; the checkpoint keys stay plain."""
    out = tmp_path / "out"
    args = overrides(tiny_folder(tmp_path / "data"), out, "trainer.compile=true",
                     "trainer.deterministic=false")  # fmt: skip
    result = train(args, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "compile on" in result.stdout + result.stderr
    state = final_state(out)
    assert not [k for part in ("model", "head") for k in state[part] if "_orig_mod" in k]
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
