"""Checkpoint files: what one holds (defined once), atomic writes, the last K kept, corrupt
files detected and skipped. The writes live in :mod:`facerec.files.checkpoint_write`
(re-exported here).

A training checkpoint is a dict; :func:`training_checkpoint` writes its layout and
:func:`restore_training` / :func:`summary` read it, so writer and readers cannot drift apart:

    model        backbone + embedding state_dict (all the tools need): the weight average
                 when ``trainer.ema`` is enabled (facerec.training.ema)
    train_model  with ``trainer.ema`` only: the raw training weights, which resume continues
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

import logging
import pickle
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facerec.files.checkpoint_write import (
    STEP_GLOB,
    TMP_SUFFIX,
    prune,
    remove_leftovers,
    save,
    save_step,
    tensor_bytes,
    write_error,
)
from facerec.files.pt_file import check_archive, check_tensors
from facerec.messages import first_line

__all__ = ["STEP_GLOB", "TMP_SUFFIX", "TrainState", "load", "load_latest", "load_module_state",
           "prune", "remove_leftovers", "restore_training", "rng_state", "save", "save_step",
           "set_rng_state", "summary", "tensor_bytes", "train_state", "training_checkpoint",
           "write_error"]  # fmt: skip

log = logging.getLogger(__name__)


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
    modules: Mapping[str, nn.Module],
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
        modules: backbone + embedding modules (eager, plain state-dict keys) by entry name:
            ``model`` (what the tools read) and, with a weight average, ``train_model``.
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
    ckpt.update({name: module.state_dict() for name, module in modules.items()})
    ckpt.update({
        "step": state.step, "epoch": epoch, "state": asdict(state),
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
            f" {saved}): {first_line(error)}"
        ) from error


def restore_training(
    ckpt: Mapping[str, Any], path: Path, modules: Mapping[str, nn.Module], classes: list[str],
    **stateful: Any,
) -> TrainState:  # fmt: skip
    """Load :func:`training_checkpoint`'s entries into ``modules`` (by entry name, as saved)
    and ``stateful`` objects
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
    for name, module in modules.items():
        load_module_state(module, ckpt, name, path)
    for name, obj in stateful.items():
        obj.load_state_dict(ckpt[name])
    set_rng_state(ckpt["rng"])
    return train_state(ckpt)


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
