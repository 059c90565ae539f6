"""Everything mode over the frames of a video or stream, with optional tracking.

``stream(segment, source, ...)`` yields one :class:`StreamFrame` per selected frame: the frame's
:class:`~fastsam.results.Segments` and, with ``track=True``, persistent track ids from
:class:`fastsam.track.Tracker`. ``FastSAM.stream`` is this function bound to a model. Frames are
decoded ahead in a background thread (:class:`~fastsam.video.reader.VideoReader`); at most a few
frames are held at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..config import PredictConfig
from ..results import Segments
from ..track import Tracker, TrackerConfig
from .reader import DecodeReport, VideoReader

__all__ = ["StreamFrame", "stream", "track_colors"]

SegmentFn = Callable[[np.ndarray, PredictConfig], Segments]


@dataclass(frozen=True)
class StreamFrame:
    """One processed frame.

    Attributes:
        index: frame index in the source (0-based; every source frame counted, before
            ``vid_stride`` and ``start``).
        time: seconds from the source's first frame.
        segments: everything-mode masks of the frame (original pixels, descending score).
        track_ids: (N,) int64 track id per mask (-1: the mask belongs to no track), or None
            without tracking.
        image: (H, W, 3) uint8 RGB frame.
        report: the source's decode report so far (shared, updated while decoding continues).
    """

    index: int
    time: float
    segments: Segments
    track_ids: np.ndarray | None
    image: np.ndarray = field(repr=False)
    report: DecodeReport = field(repr=False)

    def tracked(self) -> tuple[Segments, np.ndarray]:
        """The masks that belong to a track, and their ids ((K,) int64)."""
        if self.track_ids is None:
            raise ValueError("this frame was not tracked (stream(..., track=True))")
        keep = np.flatnonzero(self.track_ids >= 0)
        return self.segments[keep], self.track_ids[keep]


def track_colors(ids: np.ndarray) -> np.ndarray:
    """(K, 3) uint8 colours, a fixed colour per track id (the same in every frame and every run)."""
    ids = np.asarray(ids, dtype=np.uint64).reshape(-1)
    # splitmix64 of the id: neighbouring ids get unrelated colours
    with np.errstate(over="ignore"):
        z = ids + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    rgb = np.stack([(z >> np.uint64(s)) & np.uint64(255) for s in (0, 8, 16)], 1).astype(np.uint8)
    return np.maximum(rgb, 32)  # never black: a black mask would read as a hole


def stream(
    segment: SegmentFn,
    source: str | os.PathLike,
    config: PredictConfig,
    track: bool = False,
    vid_stride: int = 1,
    start: float | None = None,
    end: float | None = None,
    tracker: TrackerConfig | None = None,
    fps: float | None = None,
    queue_size: int = 8,
    reader: VideoReader | None = None,
) -> Iterator[StreamFrame]:
    """Segment every selected frame of ``source`` (a video file, URL or frame directory).

    ``segment(rgb, config)`` runs everything mode on one frame. ``reader`` may be an opened
    :class:`VideoReader` (then ``source``, ``vid_stride``, ``start``, ``end``, ``fps`` and
    ``queue_size`` are taken from it). The decode report is on every frame (``frame.report``).
    """
    if reader is None:
        reader = VideoReader(source, vid_stride=vid_stride, start=start, end=end, queue_size=queue_size, fps=fps)
    tracking = Tracker(tracker) if track else None
    for frame in reader:
        segments = segment(frame.rgb, config)
        ids = tracking.update(segments) if tracking is not None else None
        yield StreamFrame(frame.index, frame.time, segments, ids, frame.rgb, reader.report)
