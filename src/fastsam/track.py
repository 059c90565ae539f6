"""Multi-object tracking of everything-mode masks across frames: Segments in, ids out.

``Tracker(config).update(segments)`` takes one frame's :class:`~fastsam.results.Segments` (in frame
order) and returns one persistent id per mask ((N,) int64; -1 for a mask that belongs to no track).
Association is by mask IoU, computed from the compact crops (:func:`fastsam.ops.crop_iou.mask_iou`:
pairs whose regions cannot overlap enough are never read; large masks are compared on a shared
grid of sample points, small ones pixel by pixel inside the overlap of their regions), with an
optimal (Hungarian) assignment
(``scipy.optimize.linear_sum_assignment``, the ``video`` extra):

1. tracks seen in the previous frame are matched to this frame's masks;
2. lost tracks (unseen for at most ``max_age`` frames) are matched to the masks left over: this is
   re-identification. A track's last mask is moved by its velocity times the frames it was unseen,
   so an object that moved while hidden can still overlap its old mask;
3. masks left over start new tracks if they are confident, large enough, and not a near-copy of a
   mask already tracked in this frame (everything mode may return two masks of one object);
4. tracks unseen for more than ``max_age`` frames, or lost before they were seen ``min_hits``
   times, are forgotten (their ids are never reused).

Coordinates are pixels of the frame, the same for every frame (one video).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import FastSAMError
from .extras import require
from .ops.crop_iou import mask_iou
from .results import Segments

__all__ = ["Tracker", "TrackerConfig", "associate"]


@dataclass(frozen=True)
class TrackerConfig:
    """Parameters of :class:`Tracker`.

    Attributes:
        match_iou: smallest mask IoU between a track's (predicted) mask and a mask of the new frame
            for them to be associated (0 < match_iou <= 1).
        birth_score: smallest detection score of a mask that starts a new track.
        birth_area: smallest mask area, in pixels, of a mask that starts a new track.
        birth_overlap: a mask whose IoU with a mask already tracked in this frame exceeds this does
            not start a track (a duplicate of a tracked object, not a new object).
        max_age: frames a track may go unseen and still be re-identified; then it is forgotten.
        min_hits: frames a track must have been seen in before it is kept while unseen: a track
            seen in fewer is forgotten as soon as it is lost (one-frame masks — flicker — do not
            pile up as lost tracks to re-identify).
        momentum: weight of the newest displacement in the track's velocity (exponential average
            of its region centre's motion per frame); 0 keeps no motion model.
    """

    match_iou: float = 0.3
    birth_score: float = 0.5
    birth_area: int = 64
    birth_overlap: float = 0.7
    max_age: int = 30
    min_hits: int = 2
    momentum: float = 0.5

    def __post_init__(self) -> None:
        for name in ("match_iou", "birth_overlap"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise FastSAMError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.momentum <= 1.0:
            raise FastSAMError(f"momentum must be in [0, 1], got {self.momentum}")
        if not np.isfinite(self.birth_score):
            raise FastSAMError(f"birth_score must be finite, got {self.birth_score}")
        if self.birth_area < 0 or self.max_age < 0 or self.min_hits < 1:
            raise FastSAMError(
                f"birth_area and max_age must be >= 0 and min_hits >= 1, got {self.birth_area}, {self.max_age}, "
                f"{self.min_hits}"
            )


def associate(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """Optimal one-to-one matching of rows to columns of an IoU matrix: the assignment with the
    largest total IoU over pairs with IoU >= ``min_iou`` (Hungarian algorithm). Returns (row, col)
    pairs, rows ascending; pairs below ``min_iou`` are never returned."""
    if iou.size == 0:
        return []
    require("scipy")  # a one-line error naming the extra when it is missing
    from scipy.optimize import linear_sum_assignment

    valid = np.where(iou >= min_iou, iou, 0.0)  # a pair below the threshold is worth nothing
    rows, cols = linear_sum_assignment(valid, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if iou[r, c] >= min_iou]


@dataclass
class _Track:
    """A track's last mask (crop at region, frame pixels), its motion and when it was last seen."""

    id: int
    region: np.ndarray
    crop: np.ndarray
    area: int
    last_seen: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # (rows, cols) per frame
    hits: int = 1

    def predicted_region(self, frame: int) -> np.ndarray:
        """The region moved by the velocity over the frames since it was last seen."""
        dr, dc = np.rint(self.velocity * (frame - self.last_seen)).astype(np.int64)
        return self.region + np.array([dr, dr, dc, dc], dtype=np.int64)


def _centre(region: np.ndarray) -> np.ndarray:
    return np.array([(region[0] + region[1]) / 2.0, (region[2] + region[3]) / 2.0])


class Tracker:
    """Persistent ids for the masks of consecutive frames (see the module docstring for the rules).

    ``update`` once per frame, in order; ids start at 1 and are never reused. ``reset`` starts over.
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        require("scipy")  # the extra is checked, and scipy imported (~0.3 s), before the first frame
        import scipy.optimize  # noqa: F401

        self.config = config or TrackerConfig()
        self._tracks: list[_Track] = []
        self._frame = -1
        self._next_id = 1
        self._samples: dict = {}

    def reset(self) -> None:
        self._tracks, self._frame, self._next_id = [], -1, 1

    @property
    def track_ids(self) -> list[int]:
        """Ids of the tracks alive (seen within ``max_age`` frames), ascending."""
        return sorted(t.id for t in self._tracks)

    def _match(self, tracks: list[_Track], segments: Segments, free: np.ndarray) -> list[tuple[_Track, int]]:
        """Hungarian matching of ``tracks`` (predicted masks) to the masks ``free`` (indices)."""
        if not tracks or free.size == 0:
            return []
        cfg = self.config
        iou = mask_iou(
            np.stack([t.predicted_region(self._frame) for t in tracks]),
            [t.crop for t in tracks],
            np.array([t.area for t in tracks]),
            segments.regions[free],
            [segments.crops[k] for k in free],
            segments.areas[free],
            min_iou=cfg.match_iou,
            frame_size=segments.image_size,
            cache=self._samples,
        )
        return [(tracks[r], int(free[c])) for r, c in associate(iou, cfg.match_iou)]

    def update(self, segments: Segments) -> np.ndarray:
        """One frame's masks -> (N,) int64 track ids in mask order (-1: the mask starts no track)."""
        cfg = self.config
        self._frame += 1
        self._samples = {}  # grid samples of the masks compared in this frame (ops.crop_iou.mask_iou)
        n = len(segments)
        ids = np.full(n, -1, dtype=np.int64)
        recent = [t for t in self._tracks if t.last_seen == self._frame - 1]
        lost = [t for t in self._tracks if t.last_seen < self._frame - 1]
        matches = self._match(recent, segments, np.arange(n))
        taken = {k for _, k in matches}
        matches += self._match(lost, segments, np.array([k for k in range(n) if k not in taken], dtype=np.int64))
        for track, k in matches:
            self._refresh(track, segments, k)
            ids[k] = track.id
        self._births(segments, ids)
        self._tracks = [
            t
            for t in self._tracks
            if t.last_seen == self._frame or (t.hits >= cfg.min_hits and self._frame - t.last_seen <= cfg.max_age)
        ]
        return ids

    def _refresh(self, track: _Track, segments: Segments, k: int) -> None:
        region = segments.regions[k].astype(np.int64)
        step = (_centre(region) - _centre(track.region)) / max(1, self._frame - track.last_seen)
        m = self.config.momentum
        # the first displacement is the whole motion model; later ones are averaged with it
        track.velocity = step if track.hits == 1 and m > 0 else m * step + (1 - m) * track.velocity
        track.region, track.crop, track.area = region, segments.crops[k], int(segments.areas[k])
        track.last_seen, track.hits = self._frame, track.hits + 1

    def _births(self, segments: Segments, ids: np.ndarray) -> None:
        """New tracks for confident, large enough masks that duplicate no tracked mask (score order)."""
        cfg = self.config
        areas = segments.areas
        ok = (ids < 0) & (segments.scores >= cfg.birth_score) & (areas >= max(cfg.birth_area, 1))
        candidates = np.flatnonzero(ok)
        if candidates.size == 0:
            return
        # IoU of every candidate with every mask that is or may become tracked, in one call
        others = np.flatnonzero((ids >= 0) | ok)
        overlap = mask_iou(
            segments.regions[candidates],
            [segments.crops[k] for k in candidates],
            areas[candidates],
            segments.regions[others],
            [segments.crops[j] for j in others],
            areas[others],
            min_iou=cfg.birth_overlap,
            frame_size=segments.image_size,
            cache=self._samples,
        )
        tracked = ids[others] >= 0
        for row, k in enumerate(candidates):  # descending score: the best mask of a pair is born
            if (overlap[row][tracked] > cfg.birth_overlap).any():
                continue
            ids[k] = self._next_id
            self._tracks.append(
                _Track(
                    self._next_id, segments.regions[k].astype(np.int64), segments.crops[k], int(areas[k]), self._frame
                )
            )
            self._next_id += 1
            tracked[np.searchsorted(others, k)] = True
