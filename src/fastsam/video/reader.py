"""Frames of a video, a stream or a directory of frame images, decoded in a background thread.

``VideoReader(source)`` opens anything PyAV (FFmpeg) opens — files in any container, ``rtsp://``,
``http://`` and other URLs — or a directory of images (its image files in name order are the frames,
at ``fps``). Iterating yields :class:`VideoFrame` objects; a decoding thread stays at most
``queue_size`` frames ahead, so memory is bounded whatever the video's length.

Frame selection: frames with ``start <= time < end`` (seconds from the first frame), then every
``vid_stride``-th of those, starting with the first. Frame indices count every frame of the source
from 0, so they stay exact with ``start`` (frames before it are decoded and dropped, not converted
to RGB; no seeking, which could land off by a frame).

Broken or truncated data does not stop a video: packets that fail to decode are counted in
``report`` (and decoding continues with the next); a demuxer error ends the video there. Opening
errors (missing file, not a video, no video stream) raise :class:`~fastsam.errors.FastSAMError`.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FastSAMError
from ..extras import require
from ..io.images import IMAGE_SUFFIXES, check_regular_file, load_image

__all__ = ["DEFAULT_FPS", "VIDEO_SUFFIXES", "DecodeReport", "VideoFrame", "VideoReader", "is_url"]

#: File suffixes taken as videos by the CLI (anything else PyAV opens works through the Python API)
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".3gp"}
#: Frame rate of a frame directory, and of a stream that does not declare one
DEFAULT_FPS = 30.0


def is_url(source: str | os.PathLike) -> bool:
    """Whether ``source`` is a URL for FFmpeg (``rtsp://``, ``http://``, ``udp://`` ...)."""
    return "://" in str(source)


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: ``index`` in the source (0-based, every frame counted), ``time`` in
    seconds from the first frame, ``rgb`` (H, W, 3) uint8 RGB."""

    index: int
    time: float
    rgb: np.ndarray = field(repr=False)


@dataclass
class DecodeReport:
    """What decoding a source gave: ``decoded`` frames (all, before selection), ``errors`` (packets
    or frame files that failed), the first few error ``messages``, and ``expected`` frames when the
    container declares a count (else None)."""

    decoded: int = 0
    errors: int = 0
    expected: int | None = None
    messages: list[str] = field(default_factory=list)

    def add_error(self, message: str) -> None:
        self.errors += 1
        if len(self.messages) < 5:
            self.messages.append(message)

    @property
    def missing(self) -> int:
        """Frames the container declares but that did not decode (0 when it declares none)."""
        return max(0, (self.expected or 0) - self.decoded)


_END = object()


class VideoReader:
    """Iterate the selected frames of a video, stream or frame directory (see the module docstring).

    Args:
        source: a video file, a URL, or a directory of frame images.
        vid_stride: keep every N-th selected frame (N >= 1).
        start, end: seconds from the first frame; frames with start <= time < end are selected.
        queue_size: frames decoded ahead of the consumer at most.
        fps: frame rate of a frame directory (default 30); ignored for videos.
        max_pixels: refuse frames larger than this (width x height) in a frame directory.

    Attributes (after opening): ``fps`` (frames per second of the source), ``size`` (H, W) of the
    first frame, ``report`` (:class:`DecodeReport`, final once iteration ends), ``name``.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        vid_stride: int = 1,
        start: float | None = None,
        end: float | None = None,
        queue_size: int = 8,
        fps: float | None = None,
        max_pixels: int | None = None,
    ) -> None:
        if vid_stride < 1:
            raise FastSAMError(f"vid_stride must be >= 1, got {vid_stride}")
        for name, value in (("start", start), ("end", end), ("fps", fps)):
            if value is not None and (not np.isfinite(value) or value < 0):
                raise FastSAMError(f"{name} must be a finite number >= 0, got {value}")
        if start is not None and end is not None and end <= start:
            raise FastSAMError(f"end ({end} s) must be after start ({start} s)")
        if fps is not None and fps <= 0:
            raise FastSAMError(f"fps must be > 0, got {fps}")
        self.name = str(source)
        self.vid_stride, self.start, self.end = vid_stride, start or 0.0, end
        self.queue_size = max(1, queue_size)
        self.max_pixels = max_pixels
        self.report = DecodeReport()
        self._frames: list[Path] | None = None
        self._container: Any = None
        path = Path(source)
        if not is_url(source) and path.is_dir():
            self._frames = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._frames:
                raise FastSAMError(f"{path}: directory contains no frame images")
            self.fps = float(fps or DEFAULT_FPS)
            self.report.expected = len(self._frames)
            self.size: tuple[int, int] | None = None
        else:
            self._open_container(source)

    def _open_container(self, source: str | os.PathLike) -> None:
        av = require("av")
        options: dict[str, str] = {}
        if is_url(source):
            if str(source).startswith("rtsp"):
                options["rtsp_transport"] = "tcp"  # UDP drops packets (grey smeared frames) on busy links
        else:
            try:
                check_regular_file(Path(source))
            except FastSAMError as exc:
                raise FastSAMError(str(exc).replace("expected an image file", "expected a video file")) from None
        try:
            self._container = av.open(str(source), options=options, timeout=(15.0, 15.0) if is_url(source) else None)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise FastSAMError(f"{source}: not a readable video ({_reason(exc)})") from None
        if not self._container.streams.video:
            self._container.close()
            raise FastSAMError(f"{source}: has no video stream")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"  # FFmpeg's frame/slice threads: decoding keeps up with the network
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else DEFAULT_FPS
        self.report.expected = int(stream.frames) or None
        self.size = (stream.height, stream.width) if stream.height and stream.width else None
        self._stream = stream

    # -- selection ---------------------------------------------------------------------------------
    def _selected(self, time: float, ordinal: list[int]) -> bool | None:
        """Whether a frame at ``time`` is kept; None when ``end`` is reached (stop decoding).
        ``ordinal`` counts the frames in [start, end) so far (a one-element list, updated)."""
        if self.end is not None and time >= self.end - 1e-9:
            return None
        if time < self.start - 1e-9:
            return False
        keep = ordinal[0] % self.vid_stride == 0
        ordinal[0] += 1
        return keep

    def _decode_container(self) -> Iterator[VideoFrame]:
        av = require("av")
        stream = self._stream
        base = None
        index = 0
        ordinal = [0]
        packets = self._container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except (av.FFmpegError, OSError) as exc:  # a truncated or garbled container: stop here
                self.report.add_error(f"frame {index}: {_reason(exc)}")
                return
            try:
                frames = packet.decode()
            except (av.FFmpegError, OSError, ValueError) as exc:  # a broken packet: skip it
                self.report.add_error(f"frame {index}: {_reason(exc)}")
                continue
            for frame in frames:
                pts = frame.pts if frame.pts is not None else frame.dts
                if pts is not None and frame.time_base is not None:
                    t = float(pts * frame.time_base)
                    base = t if base is None else base
                    time = t - base
                else:
                    time = index / self.fps
                self.report.decoded += 1
                keep = self._selected(time, ordinal)
                if keep is None:
                    return
                if keep:
                    yield VideoFrame(index, time, frame.to_ndarray(format="rgb24"))
                index += 1

    def _decode_directory(self) -> Iterator[VideoFrame]:
        assert self._frames is not None
        ordinal = [0]
        for index, path in enumerate(self._frames):
            time = index / self.fps
            keep = self._selected(time, ordinal)
            if keep is None:
                return
            if not keep:
                continue
            try:
                rgb = load_image(path, max_pixels=self.max_pixels)
            except FastSAMError as exc:  # a corrupt frame file: count it, go on with the next
                self.report.add_error(str(exc))
                continue
            self.report.decoded += 1
            yield VideoFrame(index, time, rgb)

    # -- iteration through the bounded queue -------------------------------------------------------
    def __iter__(self) -> Iterator[VideoFrame]:
        frames: queue.Queue[Any] = queue.Queue(self.queue_size)
        stop = threading.Event()

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    frames.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                source = self._decode_directory() if self._frames is not None else self._decode_container()
                for frame in source:
                    if not put(frame):
                        return
            except BaseException as exc:  # handed to the consumer, raised there
                put(exc)
                return
            put(_END)

        thread = threading.Thread(target=work, name="fastsam-decode", daemon=True)
        thread.start()
        try:
            while True:
                item = frames.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()
            self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(exc: BaseException) -> str:
    """One line for an FFmpeg error (its message, without the errno and file name)."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())
