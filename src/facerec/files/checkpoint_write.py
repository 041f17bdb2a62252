"""Checkpoint writes: atomic (a temporary file, fsynced, renamed), a full disk reported in one
line, partial files removed, the last K step files kept behind a ``last.pt`` link."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from facerec.messages import first_line

__all__ = ["STEP_GLOB", "TMP_SUFFIX", "prune", "remove_leftovers", "save", "save_step",
           "tensor_bytes", "write_error"]  # fmt: skip

log = logging.getLogger("facerec.files.checkpoint")

STEP_GLOB = "step_*.pt"
TMP_SUFFIX = ".tmp"  # never matches STEP_GLOB: a partial file is never taken for a checkpoint


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
        return OSError(errno.EIO, first_line(error))
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
