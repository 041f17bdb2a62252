"""Untrusted uploads -> decoded photos, or one :class:`BadUpload` saying what is wrong.

An upload is bytes and a name. The name is only ever shown (cut to a printable base name): no
path from the client touches the file system. The bytes are read up to :data:`MAX_BYTES` (one
more byte and the upload is refused, unread), their header must say JPEG, PNG, WebP or BMP
(whatever the name or the declared content type claim), and they are decoded by the one guarded
decoder, :func:`facerec.data.decode.decode_image` (pixel budget read from the header first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from facerec.data.decode import UnreadableImage, check_header, decode_image

__all__ = ["FORMATS", "MAX_BYTES", "BadUpload", "Photo", "read_upload", "shown_name", "to_photo"]

MAX_BYTES = 20 * 2**20  # a 50 Mpx phone JPEG is ~15 MB
FORMATS = ("JPEG", "PNG", "WEBP", "BMP")


class BadUpload(ValueError):
    """An upload refused: ``status`` (413 too large, 415 not an image type, 422 otherwise) and
    one sentence naming the file."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class Readable(Protocol):
    """What Starlette's ``UploadFile`` offers (a test may pass its own)."""

    filename: str | None

    async def read(self, size: int = -1) -> bytes: ...


@dataclass(frozen=True)
class Photo:
    """A decoded upload: its shown name, RGB uint8 ``(H, W, 3)`` pixels and size in bytes."""

    name: str
    image: np.ndarray
    size: int = 0


def shown_name(filename: str | None) -> str:
    """The part of a client's file name that is shown: the base name, printable, 80 chars."""
    base = re.split(r"[\\/]", filename or "")[-1]
    return re.sub(r"[^\w .()+-]", "_", base)[:80] or "upload"


def decode_upload(data: bytes, name: str) -> np.ndarray:
    """Check and decode one upload's bytes (already within :data:`MAX_BYTES`).

    Raises:
        BadUpload: 415 when the header is no allowed image type, 422 when it is over the
            pixel budget or does not decode.
    """
    if not data:
        raise BadUpload(f"{name}: the file is empty")
    try:
        header = check_header(data, name)
    except UnreadableImage as error:
        if "no image header" in str(error):
            raise BadUpload(f"{name}: not an image (allowed: {', '.join(FORMATS)})", 415) from None
        raise BadUpload(str(error)) from None
    if header.format.upper() not in FORMATS:
        raise BadUpload(f"{name}: {header.format} images are not accepted "
                        f"(allowed: {', '.join(FORMATS)})", 415)  # fmt: skip
    try:
        return decode_image(data, name)
    except UnreadableImage as error:
        raise BadUpload(str(error)) from None


def to_photo(name: str, data: bytes) -> Photo:
    """:func:`decode_upload` as a :class:`Photo` (CPU work: run it off the event loop)."""
    return Photo(name, decode_upload(data, name), len(data))


async def read_upload(upload: Readable, limit: int = MAX_BYTES) -> tuple[str, bytes]:
    """An upload's shown name and bytes, read within ``limit`` bytes (nothing decoded yet).

    Raises:
        BadUpload: 413 past ``limit`` bytes.
    """
    name = shown_name(upload.filename)
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise BadUpload(f"{name}: larger than the limit of {limit / 2**20:g} MiB", 413)
    return name, data
