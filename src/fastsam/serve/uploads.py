"""Upload bodies to pixels: the image file out of a ``multipart/form-data`` body, and its decoding.

Both are CPU-bound and run in a worker thread (the app never calls them on the event loop), and
both are bounded by more than the body size: a multipart body may hold at most ``max_parts``
parts, each with at most :data:`MAX_PART_HEADER_BYTES` of headers (so a body of 300,000 tiny
fields is refused at the 17th instead of parsed whole), and an image's pixel count is checked
from its header before any pixel is decoded.

Memory: :func:`multipart_file` keeps the body and one copy of the chosen part (at most 2x the
body); :func:`decode_image` holds the file, Pillow's decoded image (4 bytes per pixel for RGB)
and the returned RGB array (3 bytes per pixel) at its peak.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .schemas import ApiError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

__all__ = ["DEFAULT_MAX_PARTS", "IMAGE_FORMATS", "MAX_PART_HEADER_BYTES", "decode_image", "multipart_file"]

log = logging.getLogger("fastsam.serve")

#: Formats Pillow may open for an upload. Others (EPS would start Ghostscript, for one) are refused.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM")  # JPEG includes MPO (phone photos)
#: A browser form sends one part per field; the page sends one. 16 leaves room for any real form.
DEFAULT_MAX_PARTS = 16
#: All header lines of one part together (a browser sends ~100 bytes: disposition and type).
MAX_PART_HEADER_BYTES = 8192


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of an uploaded file; raise :class:`ApiError` if it is not a usable image.

    The pixel count is checked from the header before any pixel is decoded, so a small file that
    claims a huge image costs nothing.
    """
    from PIL import Image, UnidentifiedImageError

    from ..io.images import load_image

    if not data:
        raise ApiError(400, "empty upload: send an image file as the request body or as multipart field 'file'")
    Image.init()
    formats = [f for f in IMAGE_FORMATS if f in Image.OPEN]  # WebP is optional in Pillow builds
    try:
        img = Image.open(io.BytesIO(data), formats=formats)
    except UnidentifiedImageError:
        raise ApiError(415, f"upload is not a readable image (supported: {', '.join(formats)})") from None
    except Image.DecompressionBombError as e:
        raise ApiError(413, f"image is over this server's limit of {max_pixels} pixels ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ApiError(415, f"corrupt image header: {e}") from None
    with img:
        w, h = img.size
        if w < 1 or h < 1:
            raise ApiError(415, f"image has no pixels ({w}x{h})")
        if w * h > max_pixels:
            raise ApiError(413, f"image is {w}x{h} = {w * h} pixels, over this server's limit of {max_pixels}")
        try:
            img.load()
            return load_image(img)
        except (OSError, SyntaxError, ValueError) as e:  # truncated data, decoder errors, odd modes
            raise ApiError(415, f"corrupt image: {e}") from None


class _Parts:
    """Callbacks of ``python_multipart.MultipartParser`` that keep only the part that will be answered:
    the first named ``file`` or ``image``, else the first with a filename. Refuses part ``max_parts + 1``
    and oversized part headers as soon as the parser reaches them."""

    def __init__(self, body: bytes, max_parts: int) -> None:
        self.body, self.max_parts = body, max_parts
        self.count = 0
        self.headers: dict[bytes, bytes] = {}
        self.field, self.value = bytearray(), bytearray()
        self.header_bytes = 0
        self.chunks: list[Any] | None = None  # data of the current part, if it is a candidate
        self.kind = ""  # which candidate the current part is: "named" or "fallback"
        self.named: bytes | None = None
        self.fallback: bytes | None = None

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": self.header_field,
            "on_header_value": self.header_value,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
        }

    def part_begin(self) -> None:
        self.count += 1
        if self.count > self.max_parts:
            raise ApiError(
                400,
                f"multipart upload has more than {self.max_parts} parts (this server's limit): "
                "send the image as field 'file'",
            )
        self.headers, self.header_bytes, self.chunks = {}, 0, None

    def _count(self, n: int) -> None:
        self.header_bytes += n
        if self.header_bytes > MAX_PART_HEADER_BYTES:
            raise ApiError(
                400,
                f"multipart part {self.count} has over {MAX_PART_HEADER_BYTES} bytes of headers (this server's limit)",
            )

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self.field.extend(data[start:end])

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self.value.extend(data[start:end])

    def header_end(self) -> None:
        self.headers[bytes(self.field).strip().lower()] = bytes(self.value).strip()
        self.field.clear()
        self.value.clear()

    def headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, disp = parse_options_header(self.headers.get(b"content-disposition", b""))
        if self.named is None and disp.get(b"name") in (b"file", b"image"):
            self.chunks, self.kind = [], "named"
        elif self.named is None and self.fallback is None and b"filename" in disp:
            self.chunks, self.kind = [], "fallback"

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.chunks is not None:
            # slices of the body are views (no copy until the one join); the parser's own look-behind
            # buffer is copied, it is reused
            self.chunks.append(memoryview(data)[start:end] if data is self.body else bytes(data[start:end]))

    def part_end(self) -> None:
        if self.chunks is not None:
            setattr(self, self.kind, b"".join(self.chunks))
            self.chunks = None


class _Quiet:
    """Stands in for python-multipart's logger: its warnings are the 400 the client gets, at debug level."""

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        log.debug(msg, *args)

    info = warning = debug


_QUIET = _Quiet()


def multipart_file(body: bytes, content_type: str, max_parts: int = DEFAULT_MAX_PARTS) -> bytes:
    """Bytes of the file part of a ``multipart/form-data`` body (field ``file`` or ``image``, else the
    first part with a filename). Parsed in memory: nothing the client names is written anywhere.
    More than ``max_parts`` parts is a 400, refused when the parser reaches the extra part."""
    from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "malformed multipart upload: the Content-Type has no boundary")
    parts = _Parts(body, max_parts)
    try:
        parser = MultipartParser(boundary, parts.callbacks())
        # it warns of every malformed body; the client is told, the log need not be
        parser.logger = cast(logging.Logger, _QUIET)
        parser.write(body)
        parser.finalize()
        parts.part_end()  # a body cut off inside the file part: the bytes so far (decoding then says why)
    except (MultipartParseError, ValueError) as e:  # FormParserError (a long boundary) is a ValueError
        raise ApiError(400, f"malformed multipart upload: {e}") from None
    found = parts.named if parts.named is not None else parts.fallback
    if found is None:
        raise ApiError(400, "multipart upload has no file: send the image as field 'file'")
    return found
