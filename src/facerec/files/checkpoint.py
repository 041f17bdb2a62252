"""Checkpoint files: what one holds (defined once), atomic writes, the last K kept, corrupt
files detected and skipped.

A training checkpoint is a dict; :func:`training_checkpoint` writes its layout and
:func:`restore_training` / :func:`summary` read it, so writer and readers cannot drift apart:

    model        backbone + embedding state_dict (all the tools need)
    head, optimizer
                 the criterion's entries (a sharded criterion keeps them in per-rank files)
    scheduler, scaler, guard
                 the loop's stateful objects
    step, epoch  where training stands
    state        :class:`TrainState` as a dict: step, best, best_step, skipped_samples,
                 skipped_batches, results
    rng          every random generator (:func:`rng_state`)
    classes      identity names, in label order
    config       the resolved training config
    preprocessing
                 the model's Preprocessing.to_dict() (facerec.inference.preprocessing): how
                 every tool prepares images for it
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pickle
import random
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facerec.files.pt_file import check_archive, check_tensors

log = logging.getLogger(__name__)

STEP_GLOB = "step_*.pt"
TMP_SUFFIX = ".tmp"  # never matches STEP_GLOB: a partial file is never taken for a checkpoint


@dataclass
class TrainState:
    """What moves during training besides the modules, optimizer and scheduler."""

    step: int = 0
    best: float = -1.0
    best_step: int = -1
    skipped_samples: int = 0
    skipped_batches: int = 0  # steps without a trainable batch (unreadable images), not NaNs
    results: dict[str, dict[str, float]] = field(default_factory=dict)


def training_checkpoint(
    model: nn.Module,
    state: TrainState,
    epoch: int,
    classes: list[str],
    config: dict[str, Any],
    stateful: Mapping[str, Any],
    entries: Mapping[str, Any],
    preprocessing: Mapping[str, Any],
) -> dict[str, Any]:
    """The checkpoint of a training run (the layout in the module docstring).

    Args:
        model: backbone + embedding (eager, plain state-dict keys).
        state: the loop's counters and verification results.
        epoch: completed epochs.
        classes: identity names in label order.
        config: the resolved training config as plain containers.
        stateful: objects with a ``state_dict`` (scheduler, scaler, guard), by entry name.
        entries: the criterion's own entries (``Criterion.checkpoint_entries``).
        preprocessing: how the model's images are prepared, as plain data
            (``facerec.inference.preprocessing.Preprocessing.to_dict()``): the one record every
            tool reads it from.
    """
    ckpt = {name: obj.state_dict() for name, obj in stateful.items()}
    ckpt.update(entries)
    ckpt.update({
        "model": model.state_dict(), "step": state.step, "epoch": epoch, "state": asdict(state),
        "rng": rng_state(), "classes": classes, "config": config,
        "preprocessing": dict(preprocessing),
    })  # fmt: skip
    return ckpt


def train_state(ckpt: Mapping[str, Any]) -> TrainState:
    """The :class:`TrainState` a checkpoint holds (a bare one for a checkpoint without it)."""
    saved = ckpt.get("state")
    return TrainState(**saved) if isinstance(saved, Mapping) else TrainState(step=ckpt["step"])


def summary(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """What a tool reports of a checkpoint: step, epoch, best accuracy and its step, the last
    verification summaries and the number of identities."""
    state = train_state(ckpt)
    return {
        "step": ckpt.get("step"),
        "epoch": ckpt.get("epoch"),
        "best": state.best,
        "best_step": state.best_step,
        "results": state.results,
        "num_classes": len(ckpt.get("classes") or []),
    }


def load_module_state(module: nn.Module, ckpt: Mapping[str, Any], name: str, path: Path) -> None:
    """``module.load_state_dict(ckpt[name])`` with a message naming the file and its backbone.

    Raises:
        ValueError: the saved weights do not fit ``module`` (another architecture or size).
    """
    try:
        module.load_state_dict(ckpt[name])
    except RuntimeError as error:
        saved = (ckpt.get("config") or {}).get("backbone", {}).get("_target_")
        raise ValueError(
            f"checkpoint {path} does not fit this {name} (it was saved with backbone"
            f" {saved}): {str(error).splitlines()[0]}"
        ) from error


def restore_training(
    ckpt: Mapping[str, Any], path: Path, model: nn.Module, classes: list[str], **stateful: Any
) -> TrainState:
    """Load :func:`training_checkpoint`'s entries into ``model`` and ``stateful`` objects
    (scheduler, scaler, guard ...) and the random generators; the criterion loads its own.

    Raises:
        ValueError: naming ``path``: other identities, or weights of another architecture.
    """
    if ckpt.get("classes") != classes:
        saved = len(ckpt.get("classes") or [])
        raise ValueError(
            f"checkpoint {path} was trained on {saved} identities, this data has {len(classes)}"
            " (or their names differ): resume with the same data"
        )
    load_module_state(model, ckpt, "model", path)
    for name, obj in stateful.items():
        obj.load_state_dict(ckpt[name])
    set_rng_state(ckpt["rng"])
    return train_state(ckpt)


def save(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file, fsynced, then renamed.

    A run killed mid-write leaves the previous file intact (the rename is atomic); a write that
    fails (a full disk, Ctrl-C) deletes its temporary file, whatever the error.

    Raises:
        OSError: one line naming the file, the MiB it needs and the MiB free, for a failed
            write, also when torch's zip writer reported it as a ``RuntimeError``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        # A partial temporary file would keep the disk full; the previous file is untouched.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        failed = write_error(error)
        if failed is None:
            raise
        free = shutil.disk_usage(path.parent).free
        raise OSError(
            failed.errno,
            f"writing checkpoint {path} failed ({failed.strerror or failed}): it needs about"
            f" {tensor_bytes(state) / 2**20:,.0f} MiB, {free / 2**20:,.0f} MiB are free there;"
            " the previous checkpoint is kept, free space and resume with trainer.resume=auto",
        ) from None
    return path


# What torch's zip writer says when a write under it failed and it lost count of its position.
_ZIP_WRITER_FAILURES = ("PytorchStreamWriter", "inline_container", "file write failed")


def write_error(error: BaseException) -> OSError | None:
    """The ``OSError`` behind a failed checkpoint write, or None for another kind of error.

    ``torch.save`` into a file reports a failed write (``ENOSPC``) as a ``RuntimeError`` of
    its zip writer ("unexpected pos ..."), raised while closing the archive, with the
    ``OSError`` as its context: the chain is searched for it.
    """
    if not isinstance(error, (OSError, RuntimeError)):
        return None  # KeyboardInterrupt, a pickling error ...: not the disk's doing
    seen: BaseException | None = error
    chain: set[int] = set()
    while seen is not None and id(seen) not in chain:
        if isinstance(seen, OSError):
            return seen
        chain.add(id(seen))
        seen = seen.__cause__ or seen.__context__
    if any(mark in str(error) for mark in _ZIP_WRITER_FAILURES):
        return OSError(errno.EIO, str(error).strip().splitlines()[0])
    return None


def tensor_bytes(state: Any) -> int:
    """Bytes of the tensors in a nested checkpoint (what its file needs, give or take)."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(tensor_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(tensor_bytes(v) for v in state)
    return 0


def remove_leftovers(folder: Path) -> list[Path]:
    """Delete temporary files a killed or failed write left in ``folder`` (and its shards)."""
    leftovers = [*folder.glob(f"*{TMP_SUFFIX}"), *folder.glob(f"shards/*{TMP_SUFFIX}")]
    for tmp in leftovers:
        tmp.unlink(missing_ok=True)
        log.warning("removed a partial checkpoint left by an interrupted write: %s", tmp)
    return leftovers


def save_step(state: dict[str, Any], folder: str | Path, keep: int = 3) -> Path:
    """Save ``state`` as ``folder/step_<step>.pt``, link ``last.pt`` to it, keep ``keep`` files.

    ``last.pt`` is a relative symbolic link swapped in atomically, so it always names a
    complete file.
    """
    folder = Path(folder)
    path = save(state, folder / f"step_{state['step']:09d}.pt")
    link = folder / f"last.pt{TMP_SUFFIX}"
    link.unlink(missing_ok=True)
    link.symlink_to(path.name)
    os.replace(link, folder / "last.pt")
    prune(folder, STEP_GLOB, keep)
    return path


def prune(folder: Path, pattern: str, keep: int) -> None:
    """Delete all but the newest ``keep`` files matching ``pattern`` (names sort by step)."""
    for old in sorted(folder.glob(pattern))[:-keep] if keep > 0 else []:
        old.unlink()


def load(path: str | Path, required: tuple[str, ...] = ("model", "step")) -> dict[str, Any]:
    """Read a checkpoint (or, with other ``required`` keys, a per-rank shard file) on the CPU.

    Before ``torch.load``, the archive's declared sizes and its pickles are checked
    (:func:`facerec.files.pt_file.check_archive`): loading never allocates much more than the file's
    size.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is truncated, corrupt, not a facerec checkpoint, or declares
            more memory than it holds (compressed members, sizes beyond the file, bytes built
            from a number, a tensor larger than its storage).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    check_archive(path)
    try:
        # weights_only: tensors and plain containers only. A checkpoint is data a user may
        # have downloaded; a pickle that names a callable is refused, never executed.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message is a page of advice; the line naming the refused global is the news.
        named = [line for line in str(error).splitlines() if "GLOBAL" in line or "global" in line]
        reason = named[0].strip() if named else "objects other than tensors and plain data"
        raise ValueError(
            f"{path} refused: not a plain-data checkpoint, it would execute code or build"
            f" objects to load ({reason})"
        ) from None
    except Exception as error:
        raise ValueError(f"checkpoint {path} is truncated or corrupt ({error})") from error
    if not isinstance(state, dict) or any(key not in state for key in required):
        raise ValueError(f"{path} is not a facerec checkpoint (no {'/'.join(required)} entries)")
    check_tensors(state, path)
    return state


def load_latest(run_root: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable ``<run>/checkpoints/step_*.pt`` under ``run_root``.

    Corrupt or truncated files (a node that died mid-write on a filesystem without atomic
    rename, a full disk) are reported and the previous good checkpoint is used. None when
    there is no checkpoint at all.

    Raises:
        ValueError: there are checkpoints but none is readable (a requeued job must not throw
            its progress away by silently starting again), listing them.
    """
    candidates = sorted(
        Path(run_root).glob(f"*/checkpoints/{STEP_GLOB}"),
        key=lambda p: (p.stat().st_mtime, p.name),
        reverse=True,
    )
    for path in candidates:
        try:
            return path, load(path)
        except ValueError as error:
            log.warning("skipping unreadable checkpoint: %s", error)
    if candidates:
        raise ValueError(
            f"trainer.resume=auto: none of the {len(candidates)} checkpoints under {run_root} is"
            f" readable ({', '.join(str(p) for p in candidates[:5])}"
            f"{' ...' if len(candidates) > 5 else ''}); to start a new run anyway, use"
            " trainer.resume=null or another name="
        )
    return None


def rng_state() -> dict[str, Any]:
    """Every random generator a training step touches."""
    # numpy's state as a tensor: a file holding an ndarray cannot load with weights_only.
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos,
                         has_gauss, cached))  # fmt: skip
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
