"""Atomic video writing with PyAV: frames go to a temporary file beside the target, renamed onto it
when the writer is closed without error (an interrupted run leaves no partial video, and never
touches a file of the user's).

The default codec is FFmpeg's own MPEG-4 Part 2 encoder (``mpeg4``): LGPL like the rest of FFmpeg,
fast on a CPU, and played by FFmpeg-based players. ``codec="libx264"`` gives H.264, which browsers
play, where the installed FFmpeg has it (PyAV's wheels do; x264 is GPL software).
"""

from __future__ import annotations

import contextlib
import os
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FastSAMError
from ..extras import require
from ..io.atomic import atomic_path

__all__ = ["VideoWriter"]


class VideoWriter:
    """Write (H, W, 3) uint8 RGB frames to ``path`` (an ``.mp4``) at ``fps``, atomically.

    Frames must all have the first frame's size; odd sizes are padded by one edge row/column (the
    encoders need even sizes for 4:2:0 chroma). Use as a context manager, or call ``close()``;
    ``abort()`` drops the file.
    """

    def __init__(self, path: str | os.PathLike, fps: float, codec: str = "mpeg4", bits_per_pixel: float = 0.15) -> None:
        self.av = require("av")
        if not np.isfinite(fps) or fps <= 0:
            raise FastSAMError(f"frame rate must be > 0, got {fps}")
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.codec = codec
        self.bits_per_pixel = bits_per_pixel
        self.frames = 0
        self._stack = ExitStack()
        self._tmp = self._stack.enter_context(atomic_path(self.path))
        self._container: Any = None
        self._stream: Any = None
        self._size: tuple[int, int] | None = None

    def _open(self, h: int, w: int) -> None:
        self._size = (h, w)
        self._container = self.av.open(str(self._tmp), mode="w", format="mp4")
        try:
            stream = self._container.add_stream(self.codec, rate=self.fps)
        except (self.av.FFmpegError, ValueError) as exc:
            raise FastSAMError(f"video codec {self.codec!r} is not available in this FFmpeg ({exc})") from None
        stream.height, stream.width = h + h % 2, w + w % 2
        stream.pix_fmt = "yuv420p"
        # a bit rate for the picture, not a fixed number: mpeg4's default (200 kb/s) smears 720p overlays
        stream.bit_rate = int(max(200_000, stream.width * stream.height * float(self.fps) * self.bits_per_pixel))
        self._stream = stream

    def write(self, rgb: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise FastSAMError(f"video frames must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        h, w = rgb.shape[:2]
        if self._container is None:
            self._open(h, w)
        elif (h, w) != self._size:
            vh, vw = self._size or (0, 0)
            raise FastSAMError(f"frame {self.frames} is {w}x{h}; the video is {vw}x{vh}")
        if h % 2 or w % 2:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and rename the file into place (nothing is written for zero frames)."""
        if self._container is None:
            self.abort()
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
        except BaseException:
            self.abort()
            raise
        self._stack.close()

    def abort(self) -> None:
        """Drop the temporary file; the target is left as it was."""
        if self._container is not None:
            with contextlib.suppress(Exception):  # the file is deleted anyway
                self._container.close()
            self._container = None
        self._stack.__exit__(FastSAMError, FastSAMError("aborted"), None)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
