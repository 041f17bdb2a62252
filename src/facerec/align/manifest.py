"""The alignment cache: a manifest in the output folder that records, per source file, its size,
mtime, a digest of its bytes and the options' key, so a second run re-aligns only what changed.

The mtime is the cheap check; a file whose mtime changed but whose bytes did not (the dataset
copied again with ``cp`` or a fresh download of the same archive, as a cluster job's copy to
local disk does every time) is recognised by its digest and keeps its aligned copy: reading and
hashing a file is about 1,000x cheaper than detecting its face again."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path

from facerec.align.options import AlignOptions
from facerec.align.outcomes import WRITTEN
from facerec.files.atomic import write_atomic
from facerec.files.jsonfile import read_json

__all__ = ["MANIFEST", "Manifest"]

log = logging.getLogger("facerec.align")

MANIFEST = ".facerec-align.json"


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


class Manifest:
    """``dst/.facerec-align.json``: ``{"key", "options", "files": {src: [size, mtime, outcome,
    message, faces, how, digest]}}`` (entries of older manifests have no digest). Entries made
    with other options (or other given landmarks: their hash joins the key) are ignored (and
    replaced)."""

    def __init__(self, root: Path | None, options: AlignOptions, given: str = "") -> None:
        self.path = root / MANIFEST if root is not None else None
        self.key = options.key + (f"-{given}" if given else "")
        self.options = options.as_dict()
        self.files: dict[str, list] = {}
        if self.path is not None and self.path.is_file():
            try:  # a manifest lists every aligned file: large for a large dataset
                data = read_json(self.path, "align manifest", max_bytes=2**31)
                if data.get("key") == self.key:
                    self.files = dict(data.get("files", {}))
            except (OSError, ValueError, TypeError):
                log.warning("align: %s is not readable; re-aligning everything", self.path)

    def lookup(self, src: Path, dst: Path | None) -> tuple[str, str | None, int, str] | None:
        entry = self.files.get(str(src))
        try:
            if entry is None or not self._unchanged(src, entry):
                return None
        except OSError:
            return None
        if entry[2] in WRITTEN and (dst is None or not dst.is_file()):
            return None
        faces, how = [*entry[4:6], 0, ""][:2]
        return entry[2], entry[3], int(faces), str(how or "")

    def _unchanged(self, src: Path, entry: list) -> bool:
        """Same size and mtime, or same size and bytes (then the new mtime is remembered)."""
        stamp = _stamp(src)
        if entry[:2] == stamp:
            if len(entry) == 6:  # a manifest from before digests: the next copy is covered too
                entry.append(_digest(src))
            return True
        if entry[0] != stamp[0] or len(entry) < 7 or entry[6] != _digest(src):
            return False
        entry[1] = stamp[1]
        return True

    def record(self, src: Path, outcome: str, message: str | None, faces: int, how: str) -> None:
        with contextlib.suppress(OSError):  # vanished meanwhile: nothing to remember
            self.files[str(src)] = [*_stamp(src), outcome, message, faces, how, _digest(src)]

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"key": self.key, "options": self.options, "files": self.files}
        write_atomic(self.path, lambda tmp: tmp.write_text(json.dumps(record)))
