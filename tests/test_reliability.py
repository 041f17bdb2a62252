"""A run never loses work or hides it: start-up checks, full disks, unreadable checkpoints, two
processes on one run directory, shrunken batches and resumes that are not the same run."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import compose_train

from facerec import distributed
from facerec.files import checkpoint, checkpoint_write
from facerec.training.run_dir import RunLock, create_run_dir

ROOT = Path(__file__).resolve().parents[1]


def faces(root: Path, people: int = 4, each: int = 6, broken: int = 0) -> Path:
    """``people`` identities x ``each`` random 112x112 JPEGs, LFW-named (``p1/p1_0001.jpg``);
    the first image of the first ``broken`` people replaced by undecodable bytes."""
    rng = np.random.default_rng(0)
    for person in range(people):
        name = f"p{person}"
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(1, each + 1):
            image = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
            cv2.imwrite(str(root / name / f"{name}_{i:04d}.jpg"), image)
    for person in range(broken):
        (root / f"p{person}" / f"p{person}_0001.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    return root


def pairs_file(path: Path, same: int, different: int) -> Path:
    """LFW-format pairs over ``faces``' people: ``same`` pairs of p0, ``different`` p0 vs p1."""
    lines = [f"p0 {1 + i % 5} {2 + i % 5}" for i in range(same)]
    lines += [f"p0 {1 + i % 6} p1 {1 + i % 6}" for i in range(different)]
    path.write_text("\n".join([str(same), *lines]) + "\n")
    return path


def args(data: Path, out: Path, *extra: str) -> list[str]:
    """A short deterministic CPU run on a synthetic folder, verified on nothing."""
    return [
        "data=folder", f"data.root={data}", "data.batch_size=4", "data.num_workers=0",
        "~data.val", "embedding.embedding_size=32", f"paths.output_dir={out}", "name=rel",
        "trainer.device=cpu", "trainer.progress=false", "trainer.deterministic=true",
        "trainer.max_steps=4", "trainer.checkpoint_every=1", "trainer.eval_every=0",
        *extra,
    ]  # fmt: skip


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}


def train(argv: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *argv], env=env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


def run_dirs(out: Path) -> list[Path]:
    return sorted((out / "rel").iterdir()) if (out / "rel").is_dir() else []


# --- fail before training, not after ------------------------------------------------------


def with_val(data: Path, pairs: Path) -> list[str]:
    return [
        "+data.val.check._target_=facerec.data.PairsSet", f"+data.val.check.pairs_file={pairs}",
        f"+data.val.check.image_root={data}", "+data.val.check.image_size=112",
    ]  # fmt: skip


def test_a_broken_image_in_a_verification_set_fails_before_step_one(tmp_path):
    train_data = faces(tmp_path / "train")
    val = faces(tmp_path / "val", people=2, broken=1)
    pairs = pairs_file(tmp_path / "pairs.txt", 10, 10)
    line = one_line_error(train(args(train_data, tmp_path / "out") + with_val(val, pairs)))
    assert "p0_0001.jpg" in line
    assert not list(tmp_path.glob("out/rel/*/checkpoints"))  # no step was trained


def test_too_few_pairs_for_ten_folds_fails_before_step_one(tmp_path):
    train_data = faces(tmp_path / "train")
    val = faces(tmp_path / "val", people=2)
    pairs = pairs_file(tmp_path / "pairs.txt", 5, 5)
    line = one_line_error(train(args(train_data, tmp_path / "out") + with_val(val, pairs)))
    assert "pairs.txt" in line and "n_folds=10" in line
    assert not list(tmp_path.glob("out/rel/*/checkpoints"))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.checkpoint_every=0", "trainer.checkpoint_every=0"),
        ("trainer.log_every=0", "trainer.log_every=0"),
        ("trainer.max_steps=0", "trainer.max_steps=0"),
        ("trainer.max_images=0", "trainer.max_images=0"),
        ("trainer.max_images=1.5", "trainer.max_images=1.5"),
        ("trainer.max_images=20000 trainer.max_steps=10", "trainer.max_images=20000"),
        ("trainer.eval_every=-1", "trainer.eval_every=-1"),
        ("optim.lr=nan", "optim.lr=nan"),
        ("optim.lr=-0.1", "optim.lr=-0.1"),
        ("head.s=0", "head.s=0"),
        ("head.m=-1", "head.m=-1"),
        ("head=sphereface head.m=9", "head.m=9"),
        ("head=combined head.m2=2.5", "head.m2=2.5"),
        ("head=softmax ++head.s=32", "head.s: Softmax takes no s"),
        ("head=cosface ++head.t=1", "head.t: CosFace takes no t"),
    ],
)
def test_impossible_values_are_one_line_errors_naming_the_key(override, key):
    from facerec.training.validate import check_config

    cfg = compose_train("data.root=/nowhere", *override.split())
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        check_config(cfg, torch.device("cpu"))


def test_impossible_value_on_the_command_line(tmp_path):
    line = one_line_error(train(args(faces(tmp_path / "d"), tmp_path / "o", "optim.lr=nan")))
    assert "optim.lr=nan" in line
    assert not run_dirs(tmp_path / "o")


def test_a_typo_next_to_a_mandatory_key_names_the_typo(tmp_path):
    line = one_line_error(train(["data=folder", f"data.root={tmp_path}", "trainer.max_stepz=3"]))
    assert "'trainer.max_stepz'" in line and "data.root" not in line


# --- never lose a checkpoint, never hide a restart ---------------------------------------


def test_disk_full_keeps_the_previous_checkpoint_and_cleans_up(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    state = {"model": {"w": torch.ones(1000)}, "step": 1}
    checkpoint.save_step(state, folder)
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        f.write(b"partial bytes")  # as far as the write got
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="needs about") as error:
        checkpoint.save_step({**state, "step": 2}, folder)
    assert error.value.errno == errno.ENOSPC and "previous checkpoint is kept" in str(error.value)
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "step_000000001.pt"]
    assert checkpoint.load(folder / "last.pt")["step"] == 1


class SmallDisk(io.RawIOBase):
    """A file on a disk with ``free`` bytes left: a write that does not fit fails with ENOSPC,
    smaller ones still fit (as on a real disk, where the end of the file may)."""

    def __init__(self, path: str | os.PathLike, free: int) -> None:
        self.file = open(path, "wb", buffering=0)  # noqa: SIM115 - closed by close()
        self.free = free

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.free:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.free -= len(data)
        return self.file.write(data)

    def fileno(self) -> int:
        return self.file.fileno()

    def close(self) -> None:
        self.file.close()
        super().close()


def test_disk_full_inside_torch_save_is_one_line_and_leaves_no_tmp(tmp_path, monkeypatch):
    """The tensor data does not fit: torch's zip writer reports the ENOSPC of the write under
    it as a RuntimeError ("unexpected pos") while closing the archive, and the last bytes fit,
    so the file closes cleanly: the partial file must still go, with the one-line message."""
    folder = tmp_path / "checkpoints"
    state = {"model": {"w": torch.ones(250_000)}, "step": 1}  # 1 MB of tensor data
    checkpoint.save_step(state, folder)
    monkeypatch.setattr(checkpoint_write, "open", lambda path, mode: io.BufferedWriter(
        SmallDisk(path, free=64 * 1024)), raising=False)  # fmt: skip
    probe = io.BufferedWriter(SmallDisk(tmp_path / "probe", free=64 * 1024))
    with pytest.raises(RuntimeError, match="unexpected pos"):  # what torch raises
        torch.save(state, probe)
    probe.close()  # the last bytes fit: no OSError on close to reveal the failure
    with pytest.raises(OSError, match="needs about 1 MiB") as error:
        checkpoint.save_step({**state, "step": 2}, folder)
    message = str(error.value)
    assert error.value.errno == errno.ENOSPC and "No space left on device" in message
    assert "previous checkpoint is kept" in message and "\n" not in message
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "step_000000001.pt"]
    monkeypatch.undo()
    assert checkpoint.load(folder / "last.pt")["step"] == 1


def test_a_write_stopped_by_ctrl_c_leaves_no_tmp(tmp_path, monkeypatch):
    def interrupted(obj, f, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):  # not turned into a disk error
        checkpoint.save({"model": {}, "step": 1}, tmp_path / "step_000000001.pt")
    assert not list(tmp_path.iterdir())


def test_disk_full_mid_run_then_resume_finishes(tmp_path, monkeypatch):
    """In-process: the write of step 3 fails, the run stops with the message; resume=auto
    continues from step 2 and ends at step 4 (leftover temporary files removed)."""
    from facerec.training.run import run

    data = faces(tmp_path / "d")
    cfg = compose_train(*args(data, tmp_path / "o"))
    resumed = compose_train(*args(data, tmp_path / "o", "trainer.resume=auto"))
    real_save, calls = torch.save, []

    def fails_at_step_3(obj, f, *a, **k):
        calls.append(obj.get("step"))
        if obj.get("step") == 3:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", fails_at_step_3)
    with pytest.raises(OSError, match=r"step_000000003\.pt"):
        run(cfg)
    (run_dir,) = run_dirs(tmp_path / "o")
    assert not list(run_dir.glob("checkpoints/*.tmp"))
    monkeypatch.setattr(torch, "save", real_save)
    metrics = run(resumed)
    assert metrics["step"] == 4 and Path(metrics["run_dir"]) == run_dir


def test_resume_auto_with_only_unreadable_checkpoints_stops_and_lists_them(tmp_path):
    out = tmp_path / "o"
    data = faces(tmp_path / "d")
    assert train(args(data, out, "trainer.max_steps=2")).returncode == 0
    (run_dir,) = run_dirs(out)
    for ckpt in run_dir.glob("checkpoints/step_*.pt"):
        ckpt.write_bytes(b"not a checkpoint")
    line = one_line_error(train(args(data, out, "trainer.resume=auto")))
    assert "none of the 2 checkpoints" in line and "step_000000002.pt" in line
    assert "trainer.resume=null" in line
    assert len(run_dirs(out)) == 1  # no silent new run
    fresh = train(args(data, out, "trainer.max_steps=1"))  # the explicit way to start again
    assert fresh.returncode == 0 and len(run_dirs(out)) == 2


def test_a_run_directory_is_locked_and_a_killed_holder_leaves_no_stale_lock(tmp_path):
    held = RunLock(tmp_path)
    with pytest.raises(ValueError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path)
    held.release()
    code = (
        "import sys, time; from pathlib import Path; from facerec.training.run_dir import RunLock;"
        " lock = RunLock(Path(sys.argv[1])); print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=env(),
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(ValueError, match=f"pid {holder.pid}"):
        RunLock(tmp_path)
    holder.kill()  # SIGKILL: no clean-up ran
    holder.wait()
    RunLock(tmp_path).release()  # the kernel released it


def test_a_second_process_on_a_live_run_is_refused(tmp_path):
    out, data = tmp_path / "o", faces(tmp_path / "d")
    first = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args(data, out, "trainer.max_steps=400")],
        env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("rel/*/checkpoints/step_*.pt")):
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        line = one_line_error(train(args(data, out, "trainer.resume=auto")))
        assert "is in use" in line and f"pid {first.pid}" in line
    finally:
        first.kill()
        first.wait()


def test_runs_started_in_the_same_second_get_a_folder_each(tmp_path):
    """8 threads create a run folder of the same name at the same instant (the name is the
    second): each gets its own, none finds another's folder "in use"."""
    env = distributed.Dist(0, 0, 1, torch.device("cpu"))
    (tmp_path / "20260101-120000").mkdir()  # a run from earlier, same second
    start = threading.Barrier(8)

    def new_run(_: int) -> Path:
        start.wait()
        return create_run_dir(tmp_path, env, stamp="20260101-120000")

    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(new_run, range(8)))
    assert len(set(made)) == 8 and all(d.is_dir() and not any(d.iterdir()) for d in made)
    assert sorted(d.name for d in made) == sorted(f"20260101-120000+{i}" for i in range(1, 9))
    locks = [RunLock(d) for d in made]  # every run can take its own folder
    for lock in locks:
        lock.release()


def test_a_loose_checkpoint_resumes_into_the_output_folder(tmp_path):
    out, data = tmp_path / "o", faces(tmp_path / "d")
    assert train(args(data, out, "trainer.max_steps=2")).returncode == 0
    (run_dir,) = run_dirs(out)
    loose = tmp_path / "downloads" / "model.pt"
    loose.parent.mkdir()
    loose.write_bytes((run_dir / "checkpoints" / "last.pt").read_bytes())
    result = train(args(data, out, f"trainer.resume={loose}"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in loose.parent.iterdir()) == ["model.pt"]  # nothing beside it
    new = [d for d in run_dirs(out) if d != run_dir]
    assert len(new) == 1 and (new[0] / "config.yaml").is_file()
    assert json.loads((new[0] / "metrics.json").read_text())["step"] == 4


# --- resume means the same run -------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("head=cosface", "head._target_"),
        ("head.m=0.3", "head.m: 0.5 there, 0.3 here"),
        ("optim=adamw", "optim._target_"),
    ],
)
def test_resume_with_another_head_or_optimizer_is_refused(override, named, tmp_path):
    out, data = tmp_path / "o", faces(tmp_path / "d")
    assert train(args(data, out, "trainer.max_steps=1")).returncode == 0
    line = one_line_error(train(args(data, out, "trainer.resume=auto", override)))
    assert "another run" in line and named in line


# --- bad data never ends a run -------------------------------------------------------------


def test_batches_shrunk_to_one_sample_or_none_are_skipped_not_fatal(tmp_path):
    """Batch 2 with a third of the images unreadable (streamed, not pre-scanned): some batches
    keep one image (BatchNorm cannot train on it), some none; the run trains on the rest."""
    data = faces(tmp_path / "d", people=6, each=2)
    for person in range(6):
        if person % 3 == 0 or person == 4:
            (data / f"p{person}" / f"p{person}_0002.jpg").write_bytes(b"broken")
    result = train(args(data, tmp_path / "o", "data.batch_size=2", "data.verify_images=false",
                        "trainer.max_steps=null", "trainer.epochs=3"))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path / "o")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["skipped_steps"] == 0  # nothing non-finite
    assert metrics["skipped_samples"] == 3 * 3  # 3 unreadable images, 3 epochs
    assert metrics["step"] == 3 * 6


# --- one line for every tool and every malformed pack header ------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("image_size", "112"), ("num_images", -3), ("classes", "abc"), ("shards", [{"file": 3}]),
     ("shards", [{"file": "../../etc/passwd", "bytes": 1}]), ("quality", None)],
)  # fmt: skip
def test_a_malformed_pack_header_is_one_line_naming_the_field(field, value, tmp_path):
    from facerec.data.pack_writer import pack_folder
    from facerec.data.packed import PackedDataset

    pack = tmp_path / "pack"
    pack_folder(faces(tmp_path / "d", people=2, each=2), pack)
    header = json.loads((pack / "pack.json").read_text())
    header[field] = value
    (pack / "pack.json").write_text(json.dumps(header))
    with pytest.raises(ValueError, match=f"pack.json: corrupt pack header.*{field}"):
        PackedDataset(pack)


@pytest.mark.parametrize("case", ["missing root", "existing output"])
def test_pack_dataset_errors_are_one_line(case, tmp_path):
    root, out = faces(tmp_path / "d", people=2, each=2), tmp_path / "pack"
    if case == "missing root":
        root = tmp_path / "nowhere"
    else:
        assert (
            subprocess.run(
                [sys.executable, str(ROOT / "scripts" / "pack_dataset.py"), str(root), str(out)],
                env=env(),
                capture_output=True,
            ).returncode
            == 0
        )
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "pack_dataset.py"), str(root),
                             str(out)], env=env(), capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("pack_dataset.py: error:")
    assert str(root if case == "missing root" else out) in line


def test_an_error_without_text_still_gives_its_one_line():
    """``str(error).splitlines()[0]`` raised IndexError on an empty message: a missing optional
    package whose ImportError has no text ended a tool in a traceback instead of one line."""
    from facerec.cli.args import extras_as_errors
    from facerec.messages import first_line

    assert first_line(RuntimeError("shape mismatch\n  at layer 3\n")) == "shape mismatch"
    assert first_line(OSError()) == "OSError"
    assert first_line(ValueError("  \n")) == "ValueError"

    def needs_an_extra():
        raise ImportError()

    with pytest.raises(ValueError, match=r"^ImportError$"):
        extras_as_errors(needs_an_extra)()
