"""The RecordIO file format (dmlc-core's ``recordio.h``, mxnet's ``IRHeader``), read without
mxnet: the index, one record's parts, a payload's header and labels.

The layout is described in :mod:`facerec.data.recordio`, which builds datasets on it.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

__all__ = ["IR_HEADER", "MAGIC", "MIN_RECORD", "class_label", "read_idx", "read_record", "unpack"]

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_PART = struct.Struct("<II")  # magic, lrec
IR_HEADER = struct.Struct("<IfQQ")  # flag, label, id, id2 (24 bytes, as mxnet's 'IfQQ')
_LENGTH_MASK = (1 << 29) - 1
MIN_RECORD = _PART.size + IR_HEADER.size  # the smallest record: part header + IRHeader


def read_idx(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a ``.idx`` file.

    Returns:
        ``(keys, offsets)``: int64 ``(N,)`` each, in file order.

    Raises:
        FileNotFoundError: naming the file.
        ValueError: naming the file and line: a line that is not ``key<TAB>offset``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"RecordIO index not found: {path}")
    keys, offsets = [], []
    with path.open("rb") as f:
        for line_no, line in enumerate(f, start=1):
            tokens = line.split()
            if not tokens:
                continue
            try:
                key, offset = (int(t) for t in tokens)
            except ValueError:
                raise ValueError(
                    f"{path}:{line_no}: expected 'key<TAB>offset', got {line[:80]!r}"
                ) from None
            keys.append(key)
            offsets.append(offset)
    if not keys:
        raise ValueError(f"{path}: empty RecordIO index")
    return np.asarray(keys, dtype=np.int64), np.asarray(offsets, dtype=np.int64)


def read_record(rec: np.ndarray, offset: int, where: str = "record") -> bytes | np.ndarray:
    """The payload of the record starting at ``offset`` (its parts joined).

    Args:
        rec: the whole ``.rec`` file, uint8 ``(S,)`` (a memory map).
        offset: byte offset of the record's first part.
        where: how to name the record in errors.

    Returns:
        uint8 ``(L,)`` view of the file for a one-part record (no copy), bytes otherwise.

    Raises:
        OSError: naming ``where``: no magic word at a part, a part running past the end of the
            file, or an out-of-order continuation flag.
    """
    parts: list[np.ndarray] = []
    pos = offset
    while True:
        if pos < 0 or pos + 8 > rec.size:
            raise OSError(f"{where}: offset {pos} is past the end of the file ({rec.size} bytes)")
        magic, lrec = _PART.unpack(rec[pos : pos + 8])
        if magic != MAGIC:
            raise OSError(f"{where}: no RecordIO magic at offset {pos} (corrupt file or index)")
        flag, length = lrec >> 29, lrec & _LENGTH_MASK
        if pos + 8 + length > rec.size:
            raise OSError(f"{where}: part at {pos} runs past the end of the file (truncated)")
        if flag not in ((2, 3) if parts else (0, 1)):
            raise OSError(f"{where}: continuation flag {flag} out of order at offset {pos}")
        parts.append(rec[pos + 8 : pos + 8 + length])
        pos += 8 + ((length + 3) & ~3)
        if flag in (0, 3):
            break
    if len(parts) == 1:
        return parts[0]
    # The writer cut the record at each aligned occurrence of the magic word.
    return _MAGIC_BYTES.join(p.tobytes() for p in parts)


def unpack(payload: bytes | np.ndarray) -> tuple[int, np.ndarray, int, int, memoryview]:
    """Split a record's payload as mxnet's ``recordio.unpack`` does.

    Returns:
        ``(flag, labels float32 (max(flag, 1),), id, id2, image bytes)``.

    Raises:
        OSError: the payload is shorter than its header says.
    """
    view = memoryview(payload).cast("B")
    if len(view) < IR_HEADER.size:
        raise OSError(f"record of {len(view)} bytes is shorter than its IRHeader")
    flag, label, id1, id2 = IR_HEADER.unpack(view[: IR_HEADER.size])
    rest = view[IR_HEADER.size :]
    if flag > 0:
        if len(rest) < 4 * flag:
            raise OSError(f"record header says {flag} labels, only {len(rest)} bytes follow")
        return flag, np.frombuffer(rest[: 4 * flag], dtype="<f4"), id1, id2, rest[4 * flag :]
    return flag, np.array([label], dtype=np.float32), id1, id2, rest


def class_label(labels: np.ndarray, where: str) -> int:
    """A record's class: ``labels[0]`` (insightface's rule when a record carries several).

    Raises:
        OSError: naming ``where``: the label is not a finite whole number.
    """
    value = float(labels[0])
    if not np.isfinite(value) or value != round(value):
        raise OSError(f"{where}: label {value} is not a class number")
    return int(value)
