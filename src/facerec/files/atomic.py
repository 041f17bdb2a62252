"""Write a file so that a reader sees the old one or the whole new one, never half of it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` then rename ``tmp`` over ``path``; a failed write leaves no ``tmp``.

    The temporary name carries the process id: parallel processes writing the same file
    (sweep jobs aligning one cache) each rename their own, where a shared name let one rename
    the other's file away (ENOENT) mid-write.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
