"""The one path for a sample that cannot be read: a placeholder with label -1, logged by name.

One broken file must not kill a multi-day run. Every dataset (folder, pack, RecordIO, the
device-decoding view, the evaluation image list) reads a sample through :func:`read_or_blank`;
the trainer drops the samples labelled :data:`UNREADABLE` and counts them
(``skipped_samples``), and the log names each one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import torch

__all__ = ["UNREADABLE", "blank_image", "read_or_blank"]

log = logging.getLogger("facerec.data")

UNREADABLE = -1  # the label of a sample that could not be read
T = TypeVar("T")


def blank_image(size: int) -> torch.Tensor:
    """A black uint8 ``(3, size, size)`` image standing in for an unreadable one."""
    return torch.zeros(3, size, size, dtype=torch.uint8)


def read_or_blank(read: Callable[[], T], blank: Callable[[], T]) -> tuple[T, bool]:
    """``(read(), True)``, or ``(blank(), False)`` when ``read`` raises ``OSError`` (logged
    with the error, which names the file or record)."""
    try:
        return read(), True
    except OSError as error:
        log.warning("skipping sample: %s", error)
        return blank(), False
