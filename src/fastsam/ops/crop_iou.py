"""Mask IoU between two sets of compact masks (boolean crops at regions), without dense masks.

A mask is a boolean ``crop`` placed at ``region`` = (r0, r1, c0, c1) (end exclusive) of the image;
outside its region it is empty. The intersection of two masks lies inside the overlap of their
regions, so only that window of each crop is read. Pairs whose IoU cannot reach ``min_iou`` are
not read at all: the intersection is at most min(area_a, area_b, window area), which bounds the
IoU from above using only the regions and the areas.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["crop_iou", "region_overlap"]


def region_overlap(regions_a: np.ndarray, regions_b: np.ndarray) -> np.ndarray:
    """(Na, Nb) int64 pixel count of the intersection of every pair of regions (r0, r1, c0, c1)."""
    a = np.asarray(regions_a, dtype=np.int64).reshape(-1, 1, 4)
    b = np.asarray(regions_b, dtype=np.int64).reshape(1, -1, 4)
    rows = np.minimum(a[..., 1], b[..., 1]) - np.maximum(a[..., 0], b[..., 0])
    cols = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 2], b[..., 2])
    return np.clip(rows, 0, None) * np.clip(cols, 0, None)


def crop_iou(
    regions_a: np.ndarray,
    crops_a: Sequence[np.ndarray],
    areas_a: np.ndarray,
    regions_b: np.ndarray,
    crops_b: Sequence[np.ndarray],
    areas_b: np.ndarray,
    min_iou: float = 0.0,
) -> np.ndarray:
    """(Na, Nb) float64 mask IoU of every pair (a, b).

    Args:
        regions_a, regions_b: (N, 4) int r0, r1, c0, c1 of each crop, in one common pixel frame
            (regions may reach outside the image: a shifted prediction of a moving mask).
        crops_a, crops_b: N boolean crops of shape (r1 - r0, c1 - c0).
        areas_a, areas_b: (N,) pixel counts of each crop.
        min_iou: pairs whose IoU is provably below it are reported as 0 without reading pixels.
    """
    areas_a = np.asarray(areas_a, dtype=np.float64).reshape(-1)
    areas_b = np.asarray(areas_b, dtype=np.float64).reshape(-1)
    out = np.zeros((areas_a.size, areas_b.size), dtype=np.float64)
    if out.size == 0:
        return out
    window = region_overlap(regions_a, regions_b).astype(np.float64)
    inter_max = np.minimum(np.minimum(areas_a[:, None], areas_b[None, :]), window)
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = inter_max / (areas_a[:, None] + areas_b[None, :] - inter_max)
    candidates = np.argwhere((inter_max > 0) & (bound >= min_iou))
    for i, j in candidates:
        ra, rb = regions_a[i], regions_b[j]
        r0, r1 = max(ra[0], rb[0]), min(ra[1], rb[1])
        c0, c1 = max(ra[2], rb[2]), min(ra[3], rb[3])
        wa = crops_a[i][r0 - ra[0] : r1 - ra[0], c0 - ra[2] : c1 - ra[2]]
        wb = crops_b[j][r0 - rb[0] : r1 - rb[0], c0 - rb[2] : c1 - rb[2]]
        inter = float(np.count_nonzero(wa & wb))
        out[i, j] = inter / (areas_a[i] + areas_b[j] - inter)
    return out
