"""Images (PNG, JPEG, WEBP, GIF): format and pixel size read from the file's header.

No pixels are decoded: an image is one page holding one ``Picture`` block that describes it.
"""

from __future__ import annotations

import struct
import zlib

from ._model import Block, DocumentError, ImageInfo, SourceDocument

__all__ = ["image_info", "load_image"]


def image_info(data: bytes) -> ImageInfo:
    """Format and pixel size of a PNG, JPEG, WEBP or GIF, from its header."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) < 33 or data[12:16] != b"IHDR" or struct.unpack(">I", data[8:12])[0] != 13:
            raise DocumentError("corrupt PNG: missing IHDR header")
        if zlib.crc32(data[12:29]) & 0xFFFFFFFF != struct.unpack(">I", data[29:33])[0]:
            raise DocumentError("corrupt PNG: bad IHDR checksum")
        width, height = struct.unpack(">II", data[16:24])
        return _image("png", width, height)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_info(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_info(data)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return _image("gif", width, height)
    raise DocumentError("not a PNG, JPEG, WEBP or GIF image (unrecognised or corrupt header)")


def _image(fmt: str, width: int, height: int) -> ImageInfo:
    if width <= 0 or height <= 0:
        raise DocumentError(f"corrupt {fmt.upper()}: image size {width}x{height}")
    return ImageInfo(fmt, width, height)


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_info(data: bytes) -> ImageInfo:
    i = 2
    while i < len(data):
        if data[i] != 0xFF:
            raise DocumentError("corrupt JPEG: expected a marker")
        while i < len(data) and data[i] == 0xFF:
            i += 1
        if i >= len(data):
            break
        marker = data[i]
        i += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            continue
        if marker in (0xD9, 0xDA):
            raise DocumentError("corrupt JPEG: no frame header before the image data")
        if i + 2 > len(data):
            break
        length = struct.unpack(">H", data[i : i + 2])[0]
        if length < 2:
            raise DocumentError("corrupt JPEG: bad segment length")
        if marker in _JPEG_SOF:
            if i + 7 > len(data):
                break
            height, width = struct.unpack(">HH", data[i + 3 : i + 7])
            return _image("jpeg", width, height)
        i += length
    raise DocumentError("truncated JPEG: no frame header found")


def _webp_info(data: bytes) -> ImageInfo:
    chunk = data[12:16]
    body = data[20:]
    if chunk == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", body[6:10])
        return _image("webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
        bits = int.from_bytes(body[1:5], "little")
        return _image("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(body) >= 10:
        width = int.from_bytes(body[4:7], "little") + 1
        height = int.from_bytes(body[7:10], "little") + 1
        return _image("webp", width, height)
    raise DocumentError("corrupt or truncated WEBP header")


def load_image(data: bytes) -> SourceDocument:
    """An image as a one-page document whose block describes its format and size."""
    info = image_info(data)
    block = Block("Picture", f"{info.format.upper()} image, {info.width}x{info.height} pixels")
    return SourceDocument("image", 1, lambda _i: (block,), image=info)
