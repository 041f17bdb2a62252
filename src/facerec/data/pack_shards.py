"""The shard files of a pack being written (layout in :mod:`facerec.data.packed`), used by
:func:`facerec.data.pack_writer.pack_images`."""

from __future__ import annotations

import os
from pathlib import Path

from facerec.data.packed import SHARD_FILE

__all__ = ["TMP", "Shards"]

# Suffix of a file being written; renamed away when complete.
TMP = ".tmp"


class Shards:
    """The shard files of a pack being written: each is written under a temporary name and
    renamed by :meth:`commit`, so a failed or killed pack leaves no shard behind."""

    def __init__(self, out: Path, shard_bytes: int) -> None:
        self.out = out
        self.shard_bytes = shard_bytes
        self.shards: list[dict] = []
        self.handle = None

    def _tmp(self, shard: dict) -> Path:
        return self.out / (shard["file"] + TMP)

    def write(self, data: bytes) -> tuple[int, int, int]:
        """Append one record; its ``(shard, offset, length)``."""
        full = self.handle is not None and self.shards[-1]["bytes"] + len(data) > self.shard_bytes
        if self.handle is None or (full and self.shards[-1]["images"]):
            if self.handle is not None:
                self.handle.close()
            self.shards.append({"file": SHARD_FILE.format(len(self.shards)), "bytes": 0,
                                "images": 0})  # fmt: skip
            self.handle = self._tmp(self.shards[-1]).open("wb")
        shard = self.shards[-1]
        where = (len(self.shards) - 1, shard["bytes"], len(data))
        self.handle.write(data)
        shard["bytes"] += len(data)
        shard["images"] += 1
        return where

    def commit(self) -> list[dict]:
        """Close and rename the shards to their final names; their header entries."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        for shard in self.shards:
            os.replace(self._tmp(shard), self.out / shard["file"])
        return self.shards

    def discard(self) -> None:
        """Delete the shards not committed (nothing after :meth:`commit`)."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        for shard in self.shards:
            self._tmp(shard).unlink(missing_ok=True)
