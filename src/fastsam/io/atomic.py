"""Atomic file writes: readers see the old file or the new one, never a part of either.

Every output of fastsam (records, overlays, weight files, checkpoints, synthetic scenes) is
written to a temporary file beside its destination and renamed onto it. The temporary name is
unique per write (process id and a random part, created exclusively), so it never replaces a
file the user has, and it is removed if the write fails.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_atomic"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` for the block to write; renamed onto ``path`` when the
    block succeeds, deleted when it raises. The file exists (empty) when the block starts, created
    with the process's normal permissions."""
    path = Path(path)
    for _ in range(16):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 16 collisions of 32 random bits
        raise FileExistsError(f"cannot create a temporary file beside {path}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
