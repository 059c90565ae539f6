"""Video and streams: frames in (PyAV, a background thread, a bounded queue), everything mode and
tracking per frame, overlay videos out (the ``video`` extra: ``pip install 'fastsam[video]'``).

* :mod:`.reader` — :class:`VideoReader`: files, URLs (``rtsp://`` ...) and frame directories;
  ``vid_stride``, ``start``/``end`` in seconds; broken data counted in a :class:`DecodeReport`.
* :mod:`.writer` — :class:`VideoWriter`: an ``.mp4`` written atomically.
* :mod:`.stream` — :func:`stream` and :class:`StreamFrame`: what ``FastSAM.stream`` yields.

PyAV is imported when a video is opened, never at import.
"""

from __future__ import annotations

from .reader import DEFAULT_FPS, VIDEO_SUFFIXES, DecodeReport, VideoFrame, VideoReader, is_url
from .stream import StreamFrame, stream, track_colors
from .writer import VideoWriter

__all__ = [
    "DEFAULT_FPS",
    "VIDEO_SUFFIXES",
    "DecodeReport",
    "StreamFrame",
    "VideoFrame",
    "VideoReader",
    "VideoWriter",
    "is_url",
    "stream",
    "track_colors",
]
