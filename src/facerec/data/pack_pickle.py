"""The one way a verification pack's pickle is loaded: an unpickler that rebuilds only plain
containers, bytes and numpy arrays (:func:`load_pack_pickle`).

A pickle can run arbitrary code; a ``.bin`` from the internet must not be able to, nor make a
few bytes of pickle allocate gigabytes. Used by :func:`facerec.data.binpack.read_bin`.
"""

from __future__ import annotations

import pickle
from pathlib import Path

__all__ = ["load_pack_pickle"]

# What a pack's pickle may reference: containers and bytes are opcodes, not globals, so only
# the helpers that numpy arrays/scalars (a numpy ``issame`` array) and protocol-2 bytes need.
_ALLOWED_GLOBALS = {
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5 arrays
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}


def _latin1(text: object, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of ``bytes`` use it, and only so.

    Any other codec is refused: a chain of ``hex_codec`` calls doubles a string at each link
    (a few hundred bytes of pickle -> gigabytes).
    """
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in _LATIN1:
        raise _Refused(f"refusing _codecs.encode(..., {encoding!r}): only latin-1 text")
    return text.encode("latin-1", errors)


def _bytearray(source: object = b"", encoding: str = "latin-1", errors: str = "strict") -> bytes:
    """``bytearray`` as protocol-2 pickles of one use it (from a latin-1 string), as bytes.

    ``bytearray(5_000_000_000)`` from an 8 KB pickle would allocate 5 GB: a number is refused.
    """
    if isinstance(source, str):
        return _latin1(source, encoding, errors)
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    raise _Refused(f"refusing bytearray({type(source).__name__}): only encoded bytes")


_LATIN1 = ("latin-1", "latin1", "iso-8859-1", "iso8859-1")
# Stand-ins that rebuild the same values, refusing the arguments that allocate from a number.
_GUARDED = {("_codecs", "encode"): _latin1, ("builtins", "bytearray"): _bytearray}


class _Refused(pickle.UnpicklingError):
    pass


class _PackUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _GUARDED:
            return _GUARDED[module, name]
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _Refused(
                f"refusing to load {module}.{name}: a verification pack holds only images and "
                f"booleans (a pickle naming other objects could run code)"
            )
        return super().find_class(module, name)


def load_pack_pickle(path: Path) -> object:
    """The pack's pickle, loaded by :class:`_PackUnpickler`; any failure is a ValueError."""
    try:
        with path.open("rb") as f:
            return _PackUnpickler(f, encoding="bytes").load()
    except _Refused as error:
        raise ValueError(f"{path}: not a verification pack ({error})") from None
    except Exception as error:  # EOFError, garbage opcodes, ...: all mean "not a pickle"
        raise ValueError(
            f"{path}: not a verification pack (not a readable pickle: "
            f"{type(error).__name__}: {error})"
        ) from None
