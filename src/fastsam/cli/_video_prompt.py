"""Prompt propagation: ``fastsam prompt clip.mp4 --point X,Y --box X1,Y1,X2,Y2 --track``.

On the first processed frame each prompt selects masks as on an image (points: the masks the
point rule keeps, merged; a box: the mask with the best IoU with it); the tracks of those masks are
then followed. Every frame writes one record per prompt, in order: the union of the masks that
carry the prompt's tracks in that frame, or an empty record (area 0, ``track_ids`` []) once the
tracks are lost. A selected mask that starts no track (see :class:`fastsam.track.TrackerConfig`:
birth rules) cannot be followed.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..results import Segments
    from ..video import StreamFrame

__all__ = ["follow_prompts"]


def _seeds(args: argparse.Namespace, frame: StreamFrame) -> list[tuple[dict[str, Any], list[int]]]:
    """(prompt description, track ids) per prompt, from the first frame's selection."""
    from ..prompts import select_by_boxes, select_by_points

    assert frame.track_ids is not None
    ids, seeds = frame.track_ids, []
    if args.point:
        points = [p[:2] for p in args.point]
        labels = [int(p[2]) for p in args.point]
        sel = select_by_points(frame.segments, points, labels, mode=args.point_mode)
        about = {"type": "points", "points": points, "labels": labels}
        seeds.append((about, sorted({int(ids[k]) for k in sel.indices if ids[k] >= 0})))
    for b, k in zip(args.box, select_by_boxes(frame.segments, args.box) if args.box else []):
        seeds.append(({"type": "box", "box": b}, [int(ids[k])] if k >= 0 and ids[k] >= 0 else []))
    return seeds


def _union(segments: Segments, keep: np.ndarray) -> Segments:
    """One mask: the union of ``segments[keep]`` (score and stability of the best of them), or an
    empty mask when ``keep`` is empty."""
    from ..results import Segments

    if keep.size == 0:
        return Segments.from_masks(np.zeros((1, *segments.image_size), bool), np.zeros(1))
    part = segments[keep]
    mask = np.asarray(part.masks.any(0)) if len(part) > 1 else part.mask(0)
    return Segments.from_masks(mask[None], part.scores[:1], part.stability[:1])


def follow_prompts(args: argparse.Namespace) -> Any:
    """A per-frame function (frame -> records, overlay) that follows the prompts' tracks."""
    from ..results import Segments
    from ..video import track_colors
    from ..viz import draw_prompts, overlay

    seeds: list[tuple[dict[str, Any], list[int]]] | None = None

    def frame_fn(frame: StreamFrame) -> tuple[list[dict[str, Any]], np.ndarray]:
        nonlocal seeds
        first = seeds is None
        if seeds is None:
            if not (args.point or args.box):
                from ..errors import FastSAMError

                raise FastSAMError("give at least one --point or --box to follow with --track")
            seeds = _seeds(args, frame)
        assert frame.track_ids is not None
        records, masks, colors = [], [], []
        for about, tracks in seeds:
            keep = np.flatnonzero(np.isin(frame.track_ids, tracks))
            one = _union(frame.segments, keep)
            for rec in one.to_records():
                rec["prompt"] = {**about, "track_ids": tracks, "indices": keep.tolist()}
                records.append(rec)
            masks.append(one.mask(0))
            colors.append(track_colors(np.array(tracks[:1] or [0]))[0])
        followed = Segments.from_masks(np.stack(masks), np.ones(len(masks)))  # one mask per prompt
        picture = overlay(frame.image, followed, colors=np.stack(colors))
        if first:  # the prompts belong to the first frame; later frames show only what follows them
            points = [p[:2] for p in args.point]
            picture = draw_prompts(picture, points=points, labels=[int(p[2]) for p in args.point], boxes=args.box)
        return records, picture

    return frame_fn
