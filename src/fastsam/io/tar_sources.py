"""``.tar`` shards as image sources (SA-1B layout: ``sa_1.jpg``, ``sa_1.json``, ... in one tar).

:func:`iter_tar` lists a shard's members once, reading only the headers (an uncompressed tar is
skipped through by seeking; a compressed one, ``.tar.gz`` / ``.tar.bz2`` / ``.tar.xz``, is
decompressed once, as a stream). Each image member becomes a :class:`TarMember`, a lazy source that
reads only that member's bytes when it is loaded: nothing is extracted, to memory or to disk.
Members whose suffix is not an image suffix (SA-1B's per-image ``.json`` annotations) are skipped.

A shard that is corrupt or truncated (a header that does not parse, a member whose data runs past
the end of the file, no end-of-archive marker) is refused as a whole when it is listed, with one
:class:`~fastsam.errors.ImageError` naming the file: a broken download should be fetched again
before any work is spent on it, and ``--resume`` then skips what was done.
"""

from __future__ import annotations

import io
import lzma
import os
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ImageError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["TAR_SUFFIXES", "TarMember", "is_tar", "iter_tar"]

#: File names read as tar shards (tarfile's "r:*" opens every one of them).
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_ERRORS = (OSError, EOFError, tarfile.TarError, zlib.error, lzma.LZMAError)
_BLOCK = tarfile.BLOCKSIZE


def is_tar(path: Path) -> bool:
    """Whether ``path`` names a tar shard (by its suffix) that is a regular file."""
    return path.name.lower().endswith(TAR_SUFFIXES) and path.is_file()


@dataclass(frozen=True)
class TarMember:
    """One image member of a tar shard: where its bytes are, read only by :meth:`read_bytes`."""

    tar: Path
    member: str
    offset: int  # of the member's data in the (decompressed) archive
    size: int
    compressed: bool

    @property
    def label(self) -> str:
        return f"{self.tar}:{self.member}"

    def read_bytes(self) -> bytes:
        """The member's bytes; :class:`ImageError` if the shard cannot be read or ends early."""
        try:
            if self.compressed:  # a decompressing stream: seek runs through it up to the member
                with tarfile.open(self.tar, "r:*") as tf:
                    assert tf.fileobj is not None
                    tf.fileobj.seek(self.offset)
                    data = tf.fileobj.read(self.size)
            else:
                with self.tar.open("rb") as f:
                    f.seek(self.offset)
                    data = f.read(self.size)
        except _ERRORS as exc:
            raise ImageError(f"{self.label}: cannot read the tar member ({exc})") from None
        if len(data) != self.size:
            raise ImageError(f"{self.label}: truncated tar member ({len(data)} of {self.size} bytes)")
        return data

    def load(self, max_pixels: int | None = None) -> np.ndarray:
        """Decode the member as an image (see :func:`fastsam.io.images.load_image`)."""
        from .images import decode_file

        return decode_file(io.BytesIO(self.read_bytes()), self.label, max_pixels)


def iter_tar(path: Path) -> Iterator[tuple[str, TarMember]]:
    """(name, source) for every image member of the shard ``path``, in archive order. The name is
    ``<path>/<member>``, so output stems are the members' (``sa_1``)."""
    from .images import IMAGE_SUFFIXES

    items: list[tuple[str, TarMember]] = []
    try:
        with tarfile.open(path, "r:*") as tf:
            compressed = not isinstance(tf.fileobj, io.BufferedReader)
            for m in tf:
                if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES:
                    items.append((f"{path}/{m.name}", TarMember(path, m.name, m.offset_data, m.size, compressed)))
            # tarfile ends a listing quietly where the file ends or a header does not parse; a whole
            # archive ends with a zero block, and every member's data lies inside the file
            assert tf.fileobj is not None
            tf.fileobj.seek(tf.offset)
            end = tf.fileobj.read(_BLOCK)
    except _ERRORS as exc:
        raise ImageError(f"{path}: not a readable tar shard ({exc})") from None
    total = os.path.getsize(path)
    short = next((src for _, src in items if not compressed and src.offset + src.size > total), None)
    if short is not None:
        raise ImageError(f"{path}: truncated tar shard (ends inside the member {short.member})")
    if end != bytes(_BLOCK):
        why = "a corrupt header" if len(end) == _BLOCK else "no end-of-archive marker"
        raise ImageError(f"{path}: truncated or corrupt tar shard ({why} at byte {tf.offset})")
    if not items:
        raise ImageError(f"{path}: tar shard contains no images")
    yield from items
