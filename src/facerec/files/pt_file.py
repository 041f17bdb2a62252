"""What a ``.pt`` file may declare, checked before ``torch.load`` allocates anything for it.

``torch.load(weights_only=True)`` runs no code, but it still trusts the file's sizes: a 5.8 MB
archive whose members are DEFLATE-compressed expands to gigabytes, and its restricted
unpickler allows ``bytearray(5_000_000_000)`` (5 GB from a few bytes of pickle) and
``_codecs.encode`` with any codec (a chain of ``hex_codec`` calls doubles a string at each
link). ``torch.save`` writes none of these: its archive stores every member uncompressed,
so the tensors it holds add up to less than the file, and its pickles build ``bytes`` only
as ``_codecs.encode(text, "latin1")``. :func:`check_archive` refuses anything else before
loading; :func:`check_tensors` then refuses a tensor whose shape claims more elements than
its storage holds (a stride-0 view that any copy would expand).
"""

from __future__ import annotations

import pickletools
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["check_archive", "check_tensors"]

_LATIN1 = ("latin1", "latin-1", "iso-8859-1", "iso8859-1")
_MARK = object()  # a MARK on the simulated stack
_UNKNOWN = object()  # a value the scan does not follow


@dataclass(frozen=True)
class _Global:
    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


_BYTEARRAY = _Global("builtins", "bytearray")
_ENCODE = _Global("_codecs", "encode")


class _Refusal(ValueError):
    """A file refused for what it declares (not for being unreadable)."""


def _refuse(path: Path, why: str) -> _Refusal:
    return _Refusal(f"{path} refused: {why}; a checkpoint written by torch.save never does")


def check_archive(path: Path) -> None:
    """Refuse a ``.pt`` file whose loading could allocate more than its size.

    Args:
        path: the file (a ``torch.save`` zip archive).

    Raises:
        ValueError: naming the file: not a zip archive (truncated, or torch's pre-1.6 format),
            a compressed member, members declaring more bytes than the file holds, or a
            pickle that builds bytes from a number or with a codec.
    """
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a facerec checkpoint, or is truncated (not a zip archive, the"
            f" format of torch.save since torch 1.6)"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            for member in members:
                if member.compress_type != zipfile.ZIP_STORED:
                    raise _refuse(path, f"its member {member.filename} is compressed (method "
                                        f"{member.compress_type}), it could expand far beyond"
                                        f" the file's {size:,} bytes")  # fmt: skip
            declared = sum(max(m.file_size, m.compress_size) for m in members)
            if declared > size:
                raise _refuse(path, f"its members declare {declared:,} bytes, more than the"
                                    f" file's {size:,}")  # fmt: skip
            for member in members:
                if member.filename.endswith(".pkl"):
                    _check_pickle(archive.read(member), path, member.filename)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(f"checkpoint {path} is truncated or corrupt ({error})") from None


def _pop(stack: list, opcode: pickletools.OpcodeInfo) -> list:
    """Pop what ``opcode`` consumes: its items after the last MARK (and the MARK) when it
    takes a mark, plus its fixed items."""
    before = opcode.stack_before
    items: list = []
    if pickletools.markobject in before:
        while stack[-1] is not _MARK:
            items.append(stack.pop())
        stack.pop()
        items.reverse()
        before = before[: before.index(pickletools.markobject)]
    fixed = [stack.pop() for _ in before][::-1]
    return fixed + items


def _steps(data: bytes) -> Iterator[tuple[pickletools.OpcodeInfo, Any]]:
    for opcode, arg, _ in pickletools.genops(data):
        yield opcode, arg


def _check_pickle(data: bytes, path: Path, member: str) -> None:
    """Follow a pickle's stack without running it; refuse the calls that allocate from a
    number (``bytearray(n)``) or transform text (``_codecs.encode`` with a codec)."""
    stack: list = []
    memo: dict[int, object] = {}
    try:
        for opcode, arg in _steps(data):
            name = opcode.name
            if name.endswith("PUT") or name == "MEMOIZE":
                memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
            elif name.endswith("GET"):
                stack.append(memo.get(arg, _UNKNOWN))
            elif name == "MARK":
                stack.append(_MARK)
            elif name == "GLOBAL":
                stack.append(_Global(*arg.split(" ", 1)))
            elif name == "STACK_GLOBAL":
                attr, module = stack.pop(), stack.pop()
                stack.append(_Global(str(module), str(attr)))
            elif name == "REDUCE":
                args, func = stack.pop(), stack.pop()
                _check_call(func, args, path, member)
                stack.append(_UNKNOWN)
            else:
                popped = _pop(stack, opcode)
                if "TUPLE" in name:
                    stack.append(tuple(popped))
                elif not popped and len(opcode.stack_after) == 1 and arg is not None:
                    stack.append(arg)  # a literal: number, text, bytes
                else:
                    stack.extend([_UNKNOWN] * len(opcode.stack_after))
    except _Refusal:
        raise
    except (ValueError, IndexError, TypeError, EOFError) as error:
        raise ValueError(f"checkpoint {path} is truncated or corrupt ({member}: {error})") from None


def _check_call(func: object, args: object, path: Path, member: str) -> None:
    if func not in (_BYTEARRAY, _ENCODE):
        return  # torch.load's own allow-list judges every other callable
    ok = isinstance(args, tuple) and (
        (func == _BYTEARRAY and (not args or isinstance(args[0], (str, bytes))))
        or (len(args) == 2 and isinstance(args[0], str) and str(args[1]).lower() in _LATIN1)
    )
    if not ok:
        shown = ", ".join("?" if a is _UNKNOWN else repr(a)[:40] for a in args) if isinstance(
            args, tuple) else "?"  # fmt: skip
        raise _refuse(path, f"its {member} calls {func}({shown}), which builds data from a number"
                            " or a codec instead of holding it")  # fmt: skip


def check_tensors(state: Any, path: Path) -> None:
    """Refuse a loaded checkpoint holding a tensor that claims more elements than its storage
    (a stride-0 view of one element can claim a trillion: any copy of it would expand).

    Raises:
        ValueError: naming the file and the tensor's shape.
    """
    todo = [state]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, (list, tuple)):
            todo.extend(item)
        elif isinstance(item, torch.Tensor):
            held = item.untyped_storage().nbytes() if item.layout == torch.strided else -1
            if item.numel() * item.element_size() > held:
                shape = tuple(item.shape)
                raise _refuse(
                    path, f"a tensor of shape {shape} claims more than its {held} bytes of storage"
                )
