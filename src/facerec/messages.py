"""One line from an error, for the messages that name a file or key (torch's and onnxruntime's
errors can run to a page, and some have no text at all)."""

from __future__ import annotations

__all__ = ["first_line"]


def first_line(error: BaseException) -> str:
    """The first non-empty line of ``error``'s message; its type's name when it has none."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
