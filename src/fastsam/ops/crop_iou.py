"""Mask IoU between two sets of compact masks (boolean crops at regions), without dense masks.

A mask is a boolean ``crop`` placed at ``region`` = (r0, r1, c0, c1) (end exclusive) of the image;
outside its region it is empty. The intersection of two masks lies inside the overlap of their
regions, so only that window of each crop is read. Pairs whose IoU cannot reach ``min_iou`` are
not read at all: the intersection is at most min(area_a, area_b, window area), which bounds the
IoU from above using only the regions and the areas.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from . import _native

__all__ = ["GRID_POINTS", "MIN_SAMPLES", "crop_iou", "mask_iou", "region_overlap"]


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
    _pairs(out, candidates, regions_a, crops_a, areas_a, regions_b, crops_b, areas_b)
    return out


def _pairs(
    out: np.ndarray,
    pairs: np.ndarray,
    regions_a: np.ndarray,
    crops_a: Sequence[np.ndarray],
    areas_a: np.ndarray,
    regions_b: np.ndarray,
    crops_b: Sequence[np.ndarray],
    areas_b: np.ndarray,
) -> None:
    """Exact IoU of the (i, j) ``pairs`` into ``out``: only the overlap window of each crop is read
    (in one C call when the kernels are built, else pair by pair)."""
    if len(pairs) == 0:
        return
    counts = _native.pair_intersections(pairs, crops_a, regions_a, crops_b, regions_b)
    if counts is not None:
        i, j = pairs[:, 0], pairs[:, 1]
        out[i, j] = counts / (areas_a[i] + areas_b[j] - counts)
        return
    for i, j in pairs:
        ra, rb = regions_a[i], regions_b[j]
        r0, r1 = max(ra[0], rb[0]), min(ra[1], rb[1])
        c0, c1 = max(ra[2], rb[2]), min(ra[3], rb[3])
        wa = crops_a[i][r0 - ra[0] : r1 - ra[0], c0 - ra[2] : c1 - ra[2]]
        wb = crops_b[j][r0 - rb[0] : r1 - rb[0], c0 - rb[2] : c1 - rb[2]]
        inter = float(np.count_nonzero(wa & wb))
        out[i, j] = inter / (areas_a[i] + areas_b[j] - inter)


#: A mask is sampled on a grid of about this many points over the masks' extent ...
GRID_POINTS = 4096
#: ... and a pair is estimated from the samples when its smaller mask holds at least this many of them
MIN_SAMPLES = 16


@functools.lru_cache(maxsize=8)
def _grid(origin: tuple[int, int], shape: tuple[int, int], step: int) -> tuple[np.ndarray, np.ndarray]:
    """(cells_h, cells_w) absolute rows and columns of the sample points (the same for every call on
    one grid: a tracker's frames all use one; made once, read-only)."""
    jitter = np.random.default_rng(0).integers(0, step, size=(2, *shape))
    rows = origin[0] + np.arange(shape[0])[:, None] * step + jitter[0]
    cols = origin[1] + np.arange(shape[1])[None, :] * step + jitter[1]
    rows.flags.writeable = cols.flags.writeable = False
    return rows, cols


def _sampled(regions: np.ndarray, crops: Sequence[np.ndarray], keep: np.ndarray, origin: tuple[int, int],
             shape: tuple[int, int], step: int, cache: dict | None) -> np.ndarray:  # fmt: skip
    """(N, cells) float32: mask ``k`` (for ``keep[k]``, else zeros) read at one point per grid cell
    of ``step`` x ``step`` pixels from ``origin``; the same absolute points for every mask.

    Each point sits at a fixed pseudo-random place inside its cell (stratified sampling): a regular
    lattice would alias with the regular structure of upsampled masks (retina masks are bilinear
    upsamplings of a 4x-coarser map: a lattice of 4 or 8 px at the usual sizes). ``cache`` keeps
    each mask's samples by (crop identity, position, grid) for further calls on the same grid."""
    rows, cols = _grid(origin, shape, step)
    out = np.zeros((len(crops), shape[0] * shape[1]), dtype=np.float32)
    todo = []  # (mask, cache key, cell ranges) of the masks not in the cache
    for k in np.flatnonzero(keep).tolist():
        r0, r1, c0, c1 = (int(v) for v in regions[k])
        key = (id(crops[k]), r0, c0, step, origin, shape)
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            out[k] = hit
            continue
        i0, i1 = max(0, (r0 - origin[0]) // step), min(shape[0], -(-(r1 - origin[0]) // step))
        j0, j1 = max(0, (c0 - origin[1]) // step), min(shape[1], -(-(c1 - origin[1]) // step))
        todo.append((k, key, (i0, max(i0, i1), j0, max(j0, j1))))
    if todo:
        ks = [k for k, _, _ in todo]
        args = ([crops[k] for k in ks], regions[ks], np.array([c for _, _, c in todo]), rows, cols)
        part = np.zeros((len(ks), out.shape[1]), dtype=np.float32)
        if not _native.grid_samples(*args, part):  # the C kernel, else the same reads in numpy
            _grid_samples(*args, part)
        out[ks] = part
        if cache is not None:
            cache.update({key: row for (_, key, _), row in zip(todo, part)})
    return out


def _grid_samples(
    crops: list[np.ndarray], regions: np.ndarray, cells: np.ndarray, rows: np.ndarray, cols: np.ndarray, out: np.ndarray
) -> None:
    """numpy version of ``_native.grid_samples``: crop k read at the grid points of its cell ranges."""
    grid = out.reshape(len(crops), *rows.shape)
    for k, (crop, (r0, r1, c0, c1), (i0, i1, j0, j1)) in enumerate(zip(crops, regions.tolist(), cells.tolist())):
        rr, cc = rows[i0:i1, j0:j1], cols[i0:i1, j0:j1]
        inside = (rr >= r0) & (rr < r1) & (cc >= c0) & (cc < c1)
        grid[k, i0:i1, j0:j1][inside] = crop[rr[inside] - r0, cc[inside] - c0]


def mask_iou(
    regions_a: np.ndarray,
    crops_a: Sequence[np.ndarray],
    areas_a: np.ndarray,
    regions_b: np.ndarray,
    crops_b: Sequence[np.ndarray],
    areas_b: np.ndarray,
    min_iou: float = 0.0,
    frame_size: tuple[int, int] | None = None,
    cache: dict | None = None,
) -> np.ndarray:
    """(Na, Nb) float64 mask IoU like :func:`crop_iou`, fast when masks are many and large.

    Pairs that cannot reach ``min_iou`` (region bound) are 0. Pairs whose smaller mask covers at
    least ``MIN_SAMPLES`` points of a regular grid (about ``GRID_POINTS`` points over the extent of
    all regions, the same absolute pixels for every mask) get the IoU of the masks read at those
    points — one matrix product for all of them, a relative error of a few percent; smaller masks
    are computed exactly from their crops. (300 x 300 masks of 720p everything mode: tens of
    milliseconds instead of seconds.) With ``frame_size`` (H, W) the grid covers that frame (parts
    of regions outside it are not sampled) and is the same in every call, so a ``cache`` dict
    shared by the calls of one frame samples each mask once.
    """
    areas_a = np.asarray(areas_a, dtype=np.float64).reshape(-1)
    areas_b = np.asarray(areas_b, dtype=np.float64).reshape(-1)
    out = np.zeros((areas_a.size, areas_b.size), dtype=np.float64)
    if out.size == 0:
        return out
    regions_a = np.asarray(regions_a, dtype=np.int64).reshape(-1, 4)
    regions_b = np.asarray(regions_b, dtype=np.int64).reshape(-1, 4)
    if frame_size is not None:
        r_org, c_org, extent = 0, 0, (int(frame_size[0]), int(frame_size[1]))
    else:
        both = np.concatenate([regions_a, regions_b])
        r_org, c_org = int(both[:, 0].min()), int(both[:, 2].min())
        extent = (int(both[:, 1].max()) - r_org, int(both[:, 3].max()) - c_org)
    step = max(1, int(np.ceil(np.sqrt(extent[0] * extent[1] / GRID_POINTS))))
    big_a, big_b = areas_a >= MIN_SAMPLES * step**2, areas_b >= MIN_SAMPLES * step**2
    window = region_overlap(regions_a, regions_b).astype(np.float64)
    inter_max = np.minimum(np.minimum(areas_a[:, None], areas_b[None, :]), window)
    with np.errstate(divide="ignore", invalid="ignore"):
        possible = (inter_max > 0) & (inter_max / (areas_a[:, None] + areas_b[None, :] - inter_max) >= min_iou)
    sampled = possible & big_a[:, None] & big_b[None, :]
    if step > 1 and sampled.any():
        shape = (-(-extent[0] // step), -(-extent[1] // step))
        sa = _sampled(regions_a, crops_a, big_a & sampled.any(1), (r_org, c_org), shape, step, cache)
        sb = _sampled(regions_b, crops_b, big_b & sampled.any(0), (r_org, c_org), shape, step, cache)
        # sample counts of every intersection (exact integers in float32 up to 2**24). torch's matmul,
        # not numpy's: it runs on the thread pool the network uses, where OpenBLAS' own threads would
        # keep spinning after the call and slow the next frame's network pass
        inter = (torch.from_numpy(sa) @ torch.from_numpy(sb).T).numpy()
        union = sa.sum(1)[:, None] + sb.sum(1)[None, :] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            est = np.where(union > 0, inter / union, 0.0)
        out[sampled] = est[sampled]
    else:
        sampled[:] = False
    _pairs(out, np.argwhere(possible & ~sampled), regions_a, crops_a, areas_a, regions_b, crops_b, areas_b)
    return out
