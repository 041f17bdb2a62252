"""Reading a JSON file a user may supply (a model folder's ``config.json``, ``threshold.json``,
``pack.json``, manifests): whatever is wrong with it is one line naming the file.

``json.loads`` alone lets a few odd files escape as tracebacks or eat memory: a document nested
a few thousand levels deep raises ``RecursionError``, bytes that are not UTF-8 raise
``UnicodeDecodeError``, a 5,000-digit number raises ``ValueError`` (Python's digit limit), and a
file of gigabytes is read whole. :func:`read_json` refuses all of them the same way::

    config = read_json(folder / "config.json", "model config")
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["MAX_JSON_BYTES", "read_json"]

# The largest JSON file read: a model config or threshold is a few KB; a pack header with
# 2 million identity names (WebFace42M) some 40 MB. Parsed, JSON takes several times its size.
MAX_JSON_BYTES = 64 * 2**20


def read_json(
    path: str | Path, what: str, *, max_bytes: int = MAX_JSON_BYTES, expect: type | None = dict
) -> Any:
    """The parsed content of JSON file ``path``.

    Args:
        path: the file.
        what: how to name it in messages, e.g. ``"model config"``, ``"threshold file"``.
        max_bytes: larger files are refused before they are read.
        expect: the type the document must have (None: any JSON value).

    Raises:
        FileNotFoundError: no such file.
        ValueError: one line naming ``what`` and ``path``: too large, not UTF-8, not JSON,
            nested too deeply, or not an ``expect``.
    """
    path = Path(path)
    if not path.is_file():
        if path.exists():
            raise ValueError(f"{what} {path}: not a file")
        raise FileNotFoundError(f"{what} not found: {path}")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        size = path.stat().st_size
        raise ValueError(
            f"{what} {path}: {size / 2**20:,.1f} MiB, larger than the {max_bytes / 2**20:,.0f}"
            f" MiB a {what} may have; refused"
        )
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{what} {path}: not UTF-8 text (byte {error.start})") from None
    except RecursionError:
        raise ValueError(
            f"{what} {path}: nested too deeply to read (more than about"
            f" {sys.getrecursionlimit()} levels); not a {what}"
        ) from None
    except ValueError as error:  # json.JSONDecodeError, or a number beyond the digit limit
        message = (str(error).strip().splitlines() or ["unreadable"])[0]
        raise ValueError(f"{what} {path}: not valid JSON ({message})") from None
    if expect is not None and not isinstance(value, expect):
        name = {dict: "a JSON object", list: "a JSON array"}.get(expect, expect.__name__)
        raise ValueError(f"{what} {path}: not {name} (it holds a {type(value).__name__})")
    return value
