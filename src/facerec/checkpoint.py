"""Checkpoint files: atomic writes, clear errors on load, RNG state capture."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def save(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file, fsynced, then renamed.

    A run killed mid-write leaves the previous checkpoint intact.
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


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint on the CPU.

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
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise ValueError(f"{path} is not a facerec checkpoint (no 'model'/'step' entries)")
    return state


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


def latest(run_root: str | Path, filename: str = "last.pt") -> Path | None:
    """The most recently written ``<run>/checkpoints/<filename>`` under ``run_root``, if any."""
    candidates = Path(run_root).glob(f"*/checkpoints/{filename}")
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)
