"""The one guarded path from encoded bytes to pixels: a pixel budget read from the header, and
every decoder error turned into :class:`UnreadableImage`.

Every reader of images (folders, packs, RecordIO, ``.bin`` verification packs, the pack writer,
alignment, the tools, ``scan``) decodes through :func:`decode_image`, so:

* a file whose header claims more than :func:`max_pixels` pixels (a 48 KB PNG can claim
  20000x20000, 1.2 GB decoded) is refused from its header, before the decoder allocates
  anything, with one line naming the file and the limit;
* whatever the decoder raises (OpenCV's ``cv2.error`` for a JPEG claiming 65000x65000, above
  its own limit) or a ``None`` it returns becomes :class:`UnreadableImage`, an ``OSError``: the
  skip-and-count path of training (:func:`facerec.data.unreadable.read_or_blank`) and the
  one-line error of the tools (:func:`facerec.cli.run_tool`) both catch ``OSError``.

The budget is :data:`DEFAULT_MAX_PIXELS` (50 Mpx: an 8160x6120 phone photo; face datasets hold
far smaller images), or the environment variable :data:`MAX_PIXELS_VARIABLE`.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_VARIABLE",
    "ImageHeader",
    "UnreadableImage",
    "check_decodes",
    "check_header",
    "decode_image",
    "jpeg_frame",
    "max_pixels",
    "read_file",
    "read_header",
    "read_image",
]

DEFAULT_MAX_PIXELS = 50_000_000
MAX_PIXELS_VARIABLE = "FACEREC_MAX_IMAGE_PIXELS"

# OpenCV >= 4.10 decodes straight to RGB (libjpeg-turbo writes RGB), saving a cvtColor; on this
# CPU that made cv2.imdecode the fastest decoder of 112x112 JPEGs, ahead of
# torchvision.io.decode_jpeg (see docs/performance.md).
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)
# libjpeg's DCT-domain scaling: decode a JPEG at 1/2, 1/4 or 1/8 of its size (colour, BGR).
_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}  # fmt: skip
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# An image file within the pixel budget is smaller than this many bytes a pixel (an
# uncompressed 16-bit RGBA TIFF: 8).
_BYTES_PER_PIXEL = 8
# JPEG markers that are not frame headers although they lie in 0xC0..0xCF: DHT, JPG, DAC.
_NOT_SOF = (0xC4, 0xC8, 0xCC)


class UnreadableImage(OSError):
    """Encoded bytes that are not a decodable image within the budget; the message names the
    file or record (an ``OSError``: the skip-and-count path and the tools' one line catch it)."""


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, before anything is decoded.

    Attributes:
        format: ``"JPEG"``, ``"PNG"`` or Pillow's name of the format.
        width, height: the claimed size in pixels.
    """

    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def max_pixels() -> int:
    """The pixel budget: :data:`MAX_PIXELS_VARIABLE` if set, else :data:`DEFAULT_MAX_PIXELS`.

    Raises:
        ValueError: naming the variable, when it is not a positive integer.
    """
    value = os.environ.get(MAX_PIXELS_VARIABLE)
    if value is None:
        return DEFAULT_MAX_PIXELS
    try:
        budget = int(float(value))
    except (ValueError, OverflowError):  # not a number, NaN, infinite
        budget = 0
    if budget <= 0:
        raise ValueError(f"{MAX_PIXELS_VARIABLE}={value!r}: expected a positive number of pixels")
    return budget


def jpeg_frame(data: np.ndarray | bytes) -> bytes | None:
    """The frame header (SOFn segment, marker included) of a JPEG, None if there is none.

    Walks the marker segments from the start of the file up to the first SOF; only the
    segment headers are read, so a JPEG with large EXIF blocks costs a few steps.
    """
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    size = len(view)
    if size < 4 or view[0] != 0xFF or view[1] != 0xD8:
        return None
    i = 2
    while i + 4 <= size and view[i] == 0xFF:
        marker = view[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        length = view[i + 2] << 8 | view[i + 3]
        if 0xC0 <= marker <= 0xCF and marker not in _NOT_SOF:
            return bytes(view[i : i + 2 + length])
        if marker == 0xDA or length < 2:  # scan data before any frame: not a valid JPEG
            return None
        i += 2 + length
    return None


def read_header(data: np.ndarray | bytes) -> ImageHeader | None:
    """The format and claimed size of encoded image bytes uint8 ``(L,)``, from the header
    only (None when it is not an image format this reads: JPEG, PNG, or what Pillow
    identifies)."""
    head = bytes(data[:24])
    if head.startswith(b"\xff\xd8"):
        frame = jpeg_frame(data)
        if frame is None or len(frame) < 9:
            return None
        height, width = struct.unpack(">HH", frame[5:9])
        return ImageHeader("JPEG", width, height)
    if head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return ImageHeader("PNG", width, height)
    try:  # BMP, WebP, TIFF, ...: Pillow's open() reads the header only
        with Image.open(io.BytesIO(bytes(data))) as image:
            return ImageHeader(str(image.format), *image.size)
    except Image.DecompressionBombError as error:  # Pillow's own cap, above any budget here
        raise UnreadableImage(str(error)) from None
    except Exception:  # Pillow raises many types for what it cannot identify
        return None


def check_header(data: np.ndarray | bytes, what: str = "image") -> ImageHeader:
    """The header of encoded bytes, checked against the pixel budget before any decoding.

    Raises:
        UnreadableImage: naming ``what``: no image header, a zero size, or more pixels than
            :func:`max_pixels`.
    """
    size = len(data)
    try:
        header = read_header(data)
    except UnreadableImage as error:
        raise UnreadableImage(f"{what}: refused: {error}") from None
    if header is None:
        raise UnreadableImage(f"{what}: cannot decode ({size} bytes; corrupt, truncated or not an"
                              f" image: no image header)")  # fmt: skip
    if header.width <= 0 or header.height <= 0:
        raise UnreadableImage(f"{what}: its header claims {header.width}x{header.height} pixels")
    budget = max_pixels()
    if header.pixels > budget:
        raise UnreadableImage(
            f"{what}: refused: its {header.format} header claims {header.width}x{header.height}"
            f" pixels ({header.pixels / 1e6:,.0f} Mpx), over the limit of {budget / 1e6:g} Mpx"
            f" ({MAX_PIXELS_VARIABLE})"
        )
    return header


def _imdecode(data: np.ndarray, what: str, flags: int) -> np.ndarray:
    """``cv2.imdecode`` after :func:`check_header`; every failure an :class:`UnreadableImage`."""
    check_header(data, what)
    try:
        image = cv2.imdecode(data, flags)
    except Exception as error:  # cv2.error, and a MemoryError is "too big" all the same
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise UnreadableImage(f"{what}: cannot decode ({reason})") from None
    if image is None:
        raise UnreadableImage(
            f"{what}: cannot decode ({data.size} bytes; corrupt, truncated or not an image)"
        )
    return image


def _as_array(data: np.ndarray | bytes) -> np.ndarray:
    return data if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)


def decode_image(
    data: np.ndarray | bytes, what: str = "image", reduce: int = 1, rgb: bool = True
) -> np.ndarray:
    """Decode encoded image bytes within the pixel budget: uint8 ``(H, W, 3)``.

    Greyscale, CMYK, palette and 16-bit images become 8-bit 3-channel.

    Args:
        data: uint8 ``(L,)`` file contents (a memory-map slice is fine: nothing is copied),
            or the same as ``bytes``.
        what: how to name the image in errors, e.g. ``"lfw.bin: image 17"``.
        reduce: 1, or 2, 4, 8 to decode a JPEG at that fraction of its size (DCT-domain
            scaling, for BGR output; other formats are decoded whole and resized).
        rgb: RGB channel order (what every model sees), else OpenCV's BGR (for re-encoding).

    Raises:
        UnreadableImage: naming ``what``: not an image, over the budget, or the decoder
            failed.
    """
    data = _as_array(data)
    if reduce != 1:
        image = _imdecode(data, what, _REDUCED[reduce])
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if rgb else image
    if rgb and _IMREAD_RGB is not None:
        return _imdecode(data, what, _IMREAD_RGB)
    image = _imdecode(data, what, cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if rgb else image


def check_decodes(data: np.ndarray | bytes, what: str = "image") -> None:
    """Check that encoded image bytes uint8 ``(L,)`` decode within the budget, cheaply: a JPEG
    decoded at 1/8 scale in grey still parses its whole stream, for a fraction of a full
    decode.

    Raises:
        UnreadableImage: naming ``what``, as :func:`decode_image`.
    """
    _imdecode(_as_array(data), what, cv2.IMREAD_REDUCED_GRAYSCALE_8)


def read_file(path: str | Path) -> np.ndarray:
    """An image file's bytes, uint8 ``(L,)``, refused unread when it is larger than an image
    within the pixel budget can be.

    Raises:
        OSError: naming the file when it is missing or unreadable; :class:`UnreadableImage`
            when it is too large.
    """
    size = os.stat(path).st_size
    limit = _BYTES_PER_PIXEL * max_pixels()
    if size > limit:
        raise UnreadableImage(
            f"image {path}: refused: {size / 2**20:,.0f} MiB, over the limit of"
            f" {limit / 2**20:,.0f} MiB for an image file ({_BYTES_PER_PIXEL} bytes x"
            f" {MAX_PIXELS_VARIABLE})"
        )
    return np.fromfile(str(path), dtype=np.uint8)  # np.fromfile: non-ASCII paths work too


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB uint8 ``(H, W, 3)`` (:func:`read_file`, :func:`decode_image`).

    Raises:
        OSError: naming the file when it is missing or unreadable; :class:`UnreadableImage`
            when it is not an image, over the budget, or does not decode.
    """
    return decode_image(read_file(path), f"image {path}")
