"""Images (PNG, JPEG, WEBP, GIF, TIFF): format and pixel size read from the file's header.

No pixels are decoded: an image is one page holding one ``Picture`` block that describes it,
except a multi-page TIFF (scans, faxes), which has one page per image in its chain of IFDs
(walked with ``struct``, classic and BigTIFF). An animated GIF is one page.
"""

from __future__ import annotations

import struct
import zlib

from ._model import MAX_PAGES, Block, DocumentError, ImageInfo, SourceDocument

__all__ = ["image_info", "load_image"]


def image_info(data: bytes) -> ImageInfo:
    """Format and pixel size of a PNG, JPEG, WEBP, GIF or TIFF (its first page), from its
    header."""
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
    if data[:4] in _TIFF_MAGIC:
        return tiff_pages(data)[0]
    raise DocumentError("not a PNG, JPEG, WEBP, GIF or TIFF image (unrecognised or corrupt header)")


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


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_TIFF_WIDTH, _TIFF_HEIGHT = 256, 257


def tiff_pages(data: bytes) -> list[ImageInfo]:
    """The size of each image (page) of a TIFF, following its chain of IFDs."""
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    # classic: 2-byte entry count, 12-byte entries, 4-byte offsets; BigTIFF: 8, 20 and 8.
    count_fmt, entry_size, offset_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
    try:
        offset = struct.unpack_from(order + offset_fmt, data, 8 if big else 4)[0]
        pages: list[ImageInfo] = []
        seen: set[int] = set()
        while offset and offset not in seen:
            if len(pages) >= MAX_PAGES:
                raise DocumentError(f"the TIFF has more than {MAX_PAGES} pages")
            seen.add(offset)
            (count,) = struct.unpack_from(order + count_fmt, data, offset)
            start = offset + struct.calcsize(count_fmt)
            if start + count * entry_size > len(data):
                raise DocumentError("truncated TIFF: an image directory runs past the end")
            size = {}
            for n in range(count):
                at = start + n * entry_size
                tag, kind = struct.unpack_from(order + "HH", data, at)
                if tag in (_TIFF_WIDTH, _TIFF_HEIGHT):
                    value_at = at + (12 if big else 8)
                    fmt = {3: "H", 4: "I", 16: "Q"}.get(kind)
                    if fmt is None:
                        raise DocumentError(f"corrupt TIFF: image size stored as type {kind}")
                    size[tag] = struct.unpack_from(order + fmt, data, value_at)[0]
            pages.append(_image("tiff", size.get(_TIFF_WIDTH, 0), size.get(_TIFF_HEIGHT, 0)))
            offset = struct.unpack_from(order + offset_fmt, data, start + count * entry_size)[0]
    except struct.error as err:
        raise DocumentError("truncated or corrupt TIFF header") from err
    if not pages:
        raise DocumentError("corrupt TIFF: no image directory")
    return pages


def _describe(info: ImageInfo) -> Block:
    return Block("Picture", f"{info.format.upper()} image, {info.width}x{info.height} pixels")


def load_image(data: bytes) -> SourceDocument:
    """An image as a one-page document whose block describes its format and size (a TIFF: one
    page per image it holds)."""
    if data[:4] in _TIFF_MAGIC:
        pages = tiff_pages(data)
        return SourceDocument("image", len(pages), lambda i: (_describe(pages[i]),), image=pages[0])
    info = image_info(data)
    block = _describe(info)
    return SourceDocument("image", 1, lambda _i: (block,), image=info)
