"""Prompt-guided selection: pure functions over one everything-mode result (``Segments``).

All coordinates are original-image pixels. Nothing here runs the network: one forward per image,
any number of prompts after it. Masks are read from their compact crops, so a prompt costs
milliseconds even with hundreds of masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import FastSAMError
from .results import Segments

if TYPE_CHECKING:
    from .text import TextScorer

__all__ = [
    "PointSelection",
    "box_mask_iou",
    "select",
    "select_by_boxes",
    "select_by_points",
    "select_ultralytics",
    "validate_boxes",
    "validate_points",
]


@dataclass(frozen=True)
class PointSelection:
    """Result of a point prompt.

    Attributes:
        indices: masks hit by a foreground point that survive the rule, in score order.
        mask: (H, W) bool merged mask (the original's output); for ``mode="individual"`` the union
            of the selected masks.
    """

    indices: np.ndarray
    mask: np.ndarray


def _numbers(value: object, what: str, example: str) -> np.ndarray:
    """``value`` as a float64 array; FastSAMError (not numpy's ValueError) for ragged lists, text, None."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise FastSAMError(f"{what} must be a list of {example} numbers") from None


def validate_points(
    points: Sequence[Sequence[float]] | np.ndarray,
    labels: Sequence[int] | np.ndarray | None,
    image_size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) float x, y and (K,) int labels; raise FastSAMError naming the first bad entry."""
    pts = _numbers(points, "points", "[x, y]")
    if pts.size == 0:
        raise FastSAMError("no points given")
    if pts.ndim != 2 or pts.shape[1] != 2 or not np.isfinite(pts).all():
        raise FastSAMError(f"points must be a list of [x, y] pairs, got shape {pts.shape}")
    lab = np.ones(len(pts), dtype=np.int64) if labels is None else _numbers(labels, "labels", "0 / 1")
    if lab.shape != (len(pts),):
        raise FastSAMError(f"got {len(pts)} points but {lab.size} labels")
    if not np.isin(lab, (0, 1)).all():
        raise FastSAMError(f"point labels must be 1 (foreground) or 0 (background), got {sorted(set(lab.tolist()))}")
    h, w = image_size
    for k, (x, y) in enumerate(pts):
        if not (0 <= x < w and 0 <= y < h):
            raise FastSAMError(f"point {k} ({x:g}, {y:g}) lies outside the {w}x{h} image")
    return pts, lab.astype(np.int64)


def validate_boxes(boxes: Sequence[Sequence[float]] | np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(B, 4) float xyxy boxes clipped to the image; raise FastSAMError naming the first box that has
    no area inside it.

    Boxes reaching past the border are clipped, as the original does: UIs draw boxes to the edge
    and xywh boxes overshoot. A box that is empty (x2 <= x1 or y2 <= y1) or lies wholly outside
    the image is refused rather than silently matched to some mask.
    """
    b = _numbers(boxes, "boxes", "[x1, y1, x2, y2]")
    if b.size == 0:
        raise FastSAMError("no boxes given")
    if b.ndim == 1 and b.size == 4:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4 or not np.isfinite(b).all():
        raise FastSAMError(f"boxes must be a list of [x1, y1, x2, y2], got shape {b.shape}")
    h, w = image_size
    clipped = np.clip(b, 0.0, [w, h, w, h])
    for k, ((x1, y1, x2, y2), (cx1, cy1, cx2, cy2)) in enumerate(zip(b, clipped)):
        if not (x1 < x2 and y1 < y2):
            raise FastSAMError(f"box {k} ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is empty (needs x1 < x2 and y1 < y2)")
        if not (cx1 < cx2 and cy1 < cy2):
            raise FastSAMError(f"box {k} ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside the {w}x{h} image")
    return clipped


def _hits(segments: Segments, x: int, y: int) -> np.ndarray:
    """Indices of the masks containing pixel (x, y)."""
    r = segments.regions
    cand = np.flatnonzero((r[:, 0] <= y) & (y < r[:, 1]) & (r[:, 2] <= x) & (x < r[:, 3]))
    return np.array([k for k in cand if segments.crops[k][y - r[k, 0], x - r[k, 2]]], dtype=np.int64)


def _visible(segments: Segments, k: int, canvas: np.ndarray) -> bool:
    crop, (r0, r1, c0, c1) = segments.crops[k], segments.regions[k]
    return bool(crop.size) and bool(canvas[r0:r1, c0:c1][crop].any())


def select_by_points(
    segments: Segments,
    points: Sequence[Sequence[float]] | np.ndarray,
    labels: Sequence[int] | np.ndarray | None = None,
    *,
    mode: str = "merge",
    close_kernel: int = 0,
) -> PointSelection:
    """Masks under foreground points, minus masks under background points.

    ``mode="merge"`` (the original FastSAM rule): masks ordered by area, largest first; each point
    inside a mask sets all that mask's pixels to the point's label, so smaller masks win; the
    result is one merged mask. ``indices`` are the masks painted with label 1 last (still visible).
    ``mode="individual"`` (ultralytics' rule): start with nothing selected (everything, if all
    labels are 0); for each point in order, masks containing it are selected (label 1) or
    deselected (label 0); ``mask`` is their union.
    ``close_kernel`` > 1 applies a morphological closing of that size to the merged mask (the
    paper's merge step, which the original code does not do).
    """
    pts, lab = validate_points(points, labels, segments.image_size)
    pix = np.floor(pts).astype(np.int64)
    hits = [_hits(segments, int(x), int(y)) for x, y in pix]
    h, w = segments.image_size
    if mode == "merge":
        label_of: dict[int, int] = {}
        for k_hits, label in zip(hits, lab):
            for k in k_hits:
                # within one mask the last point in the original's loop decides its label
                label_of[int(k)] = int(label)
        order = sorted(label_of, key=lambda k: (-int(segments.areas[k]), k))  # largest first
        canvas = np.zeros((h, w), dtype=bool)
        for k in order:
            crop, (r0, r1, c0, c1) = segments.crops[k], segments.regions[k]
            if crop.size:
                canvas[r0:r1, c0:c1][crop] = bool(label_of[k])
        keep = [k for k in order if label_of[k] == 1 and _visible(segments, k, canvas)]
        indices = np.array(sorted(keep), dtype=np.int64)
    elif mode == "individual":
        selected = np.zeros(len(segments), dtype=bool) if (lab == 1).any() else np.ones(len(segments), dtype=bool)
        for k_hits, label in zip(hits, lab):
            selected[k_hits] = bool(label)
        indices = np.flatnonzero(selected).astype(np.int64)
        canvas = np.zeros((h, w), dtype=bool)
        for k in indices:
            crop, (r0, r1, c0, c1) = segments.crops[k], segments.regions[k]
            if crop.size:
                canvas[r0:r1, c0:c1] |= crop
    else:
        raise FastSAMError(f"unknown point mode {mode!r}; expected 'merge' or 'individual'")
    if close_kernel > 1:
        import cv2

        kernel = np.ones((close_kernel, close_kernel), np.uint8)
        canvas = cv2.morphologyEx(canvas.astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)
    return PointSelection(indices, canvas)


def box_mask_iou(segments: Segments, box: np.ndarray) -> np.ndarray:
    """(N,) IoU of each mask with the filled box region (the original's box-prompt score).

    The box is rounded to whole pixels and clipped to the image as in the original.
    """
    h, w = segments.image_size
    x1, y1 = max(round(box[0]), 0), max(round(box[1]), 0)
    x2, y2 = min(round(box[2]), w), min(round(box[3]), h)
    box_area = max(x2 - x1, 0) * max(y2 - y1, 0)
    r = segments.regions
    inter = np.zeros(len(segments), dtype=np.int64)
    overlap = np.flatnonzero((r[:, 0] < y2) & (r[:, 1] > y1) & (r[:, 2] < x2) & (r[:, 3] > x1))
    for k in overlap:
        r0, _, c0, _ = r[k]
        crop = segments.crops[k]
        sub = crop[max(y1 - r0, 0) : max(y2 - r0, 0), max(x1 - c0, 0) : max(x2 - c0, 0)]
        inter[k] = np.count_nonzero(sub)
    union = box_area + segments.areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def select_by_boxes(segments: Segments, boxes: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """For each box (in the order given) the index of the mask with the highest IoU with the filled
    box; -1 where the box overlaps no mask (the original would silently return mask 0)."""
    b = validate_boxes(boxes, segments.image_size)
    out = np.full(len(b), -1, dtype=np.int64)
    if len(segments) == 0:
        return out
    for i, box in enumerate(b):
        iou = box_mask_iou(segments, box)
        if iou.max() > 0:
            out[i] = int(np.argmax(iou))  # first maximum: the higher-scoring mask wins ties
    return out


def select(
    segments: Segments,
    *,
    points: Sequence[Sequence[float]] | None = None,
    labels: Sequence[int] | None = None,
    boxes: Sequence[Sequence[float]] | None = None,
    texts: Sequence[str] | None = None,
    image: np.ndarray | None = None,
    scorer: TextScorer | None = None,
    text_threshold: float | None = None,
) -> np.ndarray:
    """Union of the selections of several prompt kinds, as sorted mask indices.

    With no prompt at all this is "everything" (every index). Points use the original rule (the
    masks still visible in the merged mask), boxes their best masks, texts need ``image`` (RGB) and
    a CLIP ``scorer`` (see `fastsam.text`).
    """
    if points is None and boxes is None and not texts:
        return np.arange(len(segments), dtype=np.int64)
    chosen: set[int] = set()
    if points is not None:
        chosen.update(select_by_points(segments, points, labels).indices.tolist())
    if boxes is not None:
        chosen.update(int(k) for k in select_by_boxes(segments, boxes) if k >= 0)
    if texts:
        from .text import select_by_text

        if image is None or scorer is None:
            raise FastSAMError("text prompts need the image and a CLIP scorer")
        for idx in select_by_text(segments, image, list(texts), scorer, threshold=text_threshold):
            chosen.update(idx.tolist())
    return np.array(sorted(chosen), dtype=np.int64)


def select_ultralytics(
    segments: Segments,
    *,
    bboxes: Sequence[Sequence[float]] | Sequence[float] | np.ndarray | None = None,
    points: Sequence[Sequence[float]] | Sequence[float] | np.ndarray | None = None,
    labels: Sequence[int] | np.ndarray | None = None,
    texts: str | Sequence[str] | None = None,
    image: np.ndarray | None = None,
    scorer: TextScorer | None = None,
) -> np.ndarray:
    """ultralytics' ``FastSAMPredictor.prompt`` rule: the union of each prompt kind's selections, as
    sorted mask indices (so ``segments[idx]`` keeps score order, like its boolean ``result[idx]``).

    * ``bboxes`` (one [x1, y1, x2, y2] or a list): coordinates truncated to integers and clipped to the
      image; per box the mask with the highest IoU with the filled box (the original's score).
    * ``points`` (one [x, y] or a list) with ``labels`` (default: all 1): every mask containing a
      foreground point, minus every mask containing a background point (all masks if every label is 0).
    * ``texts`` (one or a list): per text the most similar mask by CLIP (``scorer``, on the RGB
      ``image``), among masks larger than 100 pixels.

    Where fastsam is stricter, on purpose: a point outside the image, an empty box, or a box wholly
    outside the image raise FastSAMError (ultralytics clips them onto the border and picks some mask),
    and a box that overlaps no mask selects nothing (ultralytics' argmax picks mask 0).
    """
    chosen = np.zeros(len(segments), dtype=bool)
    if len(segments) == 0:
        return np.zeros(0, dtype=np.int64)
    if bboxes is not None:
        for box in validate_boxes(_numbers(bboxes, "boxes", "[x1, y1, x2, y2]"), segments.image_size):
            iou = box_mask_iou(segments, np.trunc(box))  # ultralytics casts boxes to int32
            if iou.max() > 0:
                chosen[int(np.argmax(iou))] = True
    if points is not None:
        pts = _numbers(points, "points", "[x, y]")
        pts, lab = validate_points(pts[None] if pts.ndim == 1 else pts, labels, segments.image_size)
        hit = [_hits(segments, int(x), int(y)) for x, y in pts.astype(np.int64)]
        picked = np.zeros(len(segments), dtype=bool) if (lab == 1).any() else np.ones(len(segments), dtype=bool)
        for k_hits, label in zip(hit, lab):
            if label == 1:
                picked[k_hits] = True
        for k_hits, label in zip(hit, lab):
            if label == 0:
                picked[k_hits] = False  # a background point wins, whatever the order of the points
        chosen |= picked
    if texts is not None:
        from .text import select_by_text

        if image is None or scorer is None:
            raise FastSAMError("text prompts need the image and a CLIP scorer")
        for idx in select_by_text(segments, image, texts, scorer):
            chosen[idx] = True
    return np.flatnonzero(chosen).astype(np.int64)
