"""Image inputs -> (H, W, 3) uint8 **RGB** arrays.

* Paths are decoded by content (Pillow), not by extension, with EXIF orientation applied.
* numpy arrays are taken as **RGB** (like Pillow and SAM; the original FastSAM assumed BGR):
  (H, W) or (H, W, 1) grayscale, (H, W, 3) RGB, (H, W, 4) RGBA; uint8, uint16 (top 8 bits kept,
  as OpenCV does) or float in [0, 1].
* Pillow images of any mode: grayscale, palette, RGBA/LA (alpha dropped, as the original's
  ``cv2.imread`` does), CMYK, YCbCr, 16-bit and 32-bit integer.
"""

from __future__ import annotations

import contextlib
import os
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError, ImageTooLargeError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageSource",
    "check_pixels",
    "check_regular_file",
    "decode_file",
    "iter_sources",
    "load_image",
]

ImageSource = str | os.PathLike | np.ndarray | Any
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".jp2"}


def _from_array(arr: np.ndarray, name: str = "array") -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageError(f"{name}: image has no pixels (shape {arr.shape})")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype in (np.int32, np.int64, np.uint32):
        arr = (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError(f"{name}: float image contains NaN or infinity")
        arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    else:
        raise ImageError(f"{name}: unsupported pixel type {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def _from_pil(img: Any, name: str) -> np.ndarray:
    from PIL import ImageOps

    with contextlib.suppress(Exception):  # a broken EXIF block must not make a good image unreadable
        if img.getexif().get(0x0112, 1) != 1:  # exif_transpose copies the pixels even when nothing turns
            img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return _from_array(np.asarray(img, dtype=np.uint16), name)
    if mode == "I":
        return _from_array(np.asarray(img, dtype=np.int64), name)
    if mode == "F":
        return _from_array(np.asarray(img, dtype=np.float32) / 255.0, name)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, LA, RGBA, CMYK, YCbCr, 1 ...
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def check_regular_file(path: Path) -> None:
    """Raise :class:`ImageError` unless ``path`` is a regular file (following symlinks).

    ``stat`` never blocks, but opening a FIFO waits for a writer forever and a character device
    (``/dev/zero``) never ends: neither is an image file, so both are refused before any ``open``.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise ImageError(f"{path}: is a directory, expected an image file")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise ImageError(f"{path}: is {kind}, not a regular file")


def check_pixels(size: tuple[int, int], max_pixels: int | None, name: str) -> None:
    """Raise :class:`ImageTooLargeError` if a (width, height) image is over ``max_pixels`` (None: no limit)."""
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageTooLargeError(
            f"{name}: image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}", (w, h), max_pixels
        )


def decode_file(fp: Any, name: str, max_pixels: int | None = None) -> np.ndarray:
    """Decode an open binary file (or file-like object) named ``name`` in messages; see :func:`load_image`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            if max_pixels is not None:  # our own limit applies; Pillow's warning would be noise
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
        with img:
            check_pixels(img.size, max_pixels, name)  # from the header: nothing decoded yet
            img.load()
            return _from_pil(img, name)
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a readable image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as exc:
        if max_pixels is not None:
            raise ImageTooLargeError(
                f"{name}: image is over the limit of {max_pixels} pixels ({exc})", (0, 0), max_pixels
            ) from None
        raise ImageError(f"{name}: {exc}") from None
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:  # truncated data, bad headers, decoder errors
        raise ImageError(f"{name}: corrupt image ({exc})") from None


def _from_path(path: Path, max_pixels: int | None = None) -> np.ndarray:
    check_regular_file(path)
    try:
        fp = path.open("rb")
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with fp:
        return decode_file(fp, str(path), max_pixels)


def load_image(source: ImageSource, max_pixels: int | None = None) -> np.ndarray:
    """Load one image from a path, a numpy array (RGB) or a Pillow image. Returns (H, W, 3) uint8 RGB.

    ``max_pixels`` (width x height) refuses larger images with :class:`ImageTooLargeError`; a file
    is checked from its header, before any pixel is decoded.
    """
    if isinstance(source, (str, os.PathLike)):
        return _from_path(Path(source), max_pixels)
    from .tar_sources import TarMember

    if isinstance(source, TarMember):
        return source.load(max_pixels)
    if isinstance(source, np.ndarray):
        if source.ndim >= 2:
            check_pixels((source.shape[1], source.shape[0]), max_pixels, "array")
        return _from_array(source)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        pass
    else:
        if isinstance(source, Image.Image):
            check_pixels(source.size, max_pixels, "PIL image")
            return _from_pil(source, "PIL image")
    raise ImageError(f"unsupported image source of type {type(source).__name__}")


def iter_sources(sources: Any) -> Iterator[tuple[str, ImageSource]]:
    """Expand sources into (name, source) pairs: directories give their image files (sorted, by
    suffix; FIFOs and devices inside are skipped), lists are flattened; arrays and Pillow images are
    named ``image<i>``; a ``.tar`` shard (also ``.tar.gz`` ...) gives its image members, read lazily
    (:mod:`fastsam.io.tar_sources`). A path that exists but is not a regular file or directory (a FIFO, a device)
    raises :class:`ImageError` at once; a missing file is yielded and fails when it is loaded."""
    items = sources if isinstance(sources, (list, tuple)) else [sources]
    from .tar_sources import is_tar, iter_tar

    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if path.is_dir():
                files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
                if not files:
                    raise ImageError(f"{path}: directory contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
                for f in files:
                    yield str(f), f
            elif is_tar(path):
                yield from iter_tar(path)
            else:
                if path.exists():
                    check_regular_file(path)
                yield str(path), path
        else:
            yield f"image{i}", item
