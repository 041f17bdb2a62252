"""Checkpoint files: atomic writes, the last K kept, corrupt files detected and skipped."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

STEP_GLOB = "step_*.pt"


def save(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file, fsynced, then renamed.

    A run killed mid-write leaves the previous file intact (the rename is atomic).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def save_step(state: dict[str, Any], folder: str | Path, keep: int = 3) -> Path:
    """Save ``state`` as ``folder/step_<step>.pt``, link ``last.pt`` to it, keep ``keep`` files.

    ``last.pt`` is a relative symbolic link swapped in atomically, so it always names a
    complete file.
    """
    folder = Path(folder)
    path = save(state, folder / f"step_{state['step']:09d}.pt")
    link = folder / "last.pt.tmp"
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

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is truncated, corrupt or not a facerec checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        # weights_only=False: the checkpoint holds RNG states and the config, not just tensors;
        # only load checkpoints you wrote yourself.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ValueError(f"checkpoint {path} is truncated or corrupt ({error})") from error
    if not isinstance(state, dict) or any(key not in state for key in required):
        raise ValueError(f"{path} is not a facerec checkpoint (no {'/'.join(required)} entries)")
    return state


def load_latest(run_root: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable ``<run>/checkpoints/step_*.pt`` under ``run_root``.

    Corrupt or truncated files (a node that died mid-write on a filesystem without atomic
    rename, a full disk) are reported and the previous good checkpoint is used.
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
    return None


def rng_state() -> dict[str, Any]:
    """Every random generator a training step touches."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
