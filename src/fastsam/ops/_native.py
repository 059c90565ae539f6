"""The optional compiled kernels (``_kernels.c``: mask regions, NMS, COCO RLE), called through ctypes.

Loaded on first use, never at import. Absent (no C compiler at install time) or disabled with the
environment variable ``FASTSAM_NATIVE=0``, the functions here return None and callers use their
fallback: numpy for mask regions (the same float32 operations, so the same masks) and for RLE (the
same strings), torchvision for NMS (the same kept boxes).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .masks import AxisTable

__all__ = ["available", "grid_samples", "nms_sorted", "pair_intersections", "rle_strings", "threshold_windows"]

_lock = threading.Lock()
_state: dict[str, Any] = {}  # "lib": the loaded functions or None; "pool": thread pool, made when first needed


def _load() -> dict[str, Any] | None:
    try:
        module = importlib.import_module("fastsam.ops._kernels")
        lib = ctypes.CDLL(module.__file__)
        regions, nms, rle = lib.fastsam_threshold_regions, lib.fastsam_nms_sorted, lib.fastsam_rle_string
        pairs, grid = lib.fastsam_pair_intersections, lib.fastsam_grid_samples
    except (ImportError, OSError, AttributeError, TypeError):
        return None
    regions.restype = ctypes.c_int
    regions.argtypes = [ctypes.c_int64] + [ctypes.c_void_p] * 12
    nms.restype = ctypes.c_int64
    nms.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_double, ctypes.c_int64, ctypes.c_void_p]
    rle.restype = ctypes.c_int64
    rle.argtypes = [ctypes.c_void_p] + [ctypes.c_int64] * 6 + [ctypes.c_void_p, ctypes.c_int64]
    pairs.restype = None
    pairs.argtypes = [ctypes.c_int64] + [ctypes.c_void_p] * 6
    grid.restype = None
    grid.argtypes = [ctypes.c_int64] + [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 2 + [ctypes.c_void_p] * 3
    return {"regions": regions, "nms": nms, "rle": rle, "pairs": pairs, "grid": grid}


def _function(name: str) -> Any | None:
    if os.environ.get("FASTSAM_NATIVE", "1") == "0":
        return None
    with _lock:
        if "lib" not in _state:
            _state["lib"] = _load()
        return None if _state["lib"] is None else _state["lib"][name]


def available() -> bool:
    """Whether the compiled kernels are built and enabled."""
    return _function("regions") is not None


def nms_sorted(boxes: np.ndarray, iou: float, k: int) -> np.ndarray | None:
    """Greedy NMS over (n, 4) xyxy boxes sorted by descending score: the first ``k`` kept positions
    (int64, ascending), or None when the kernel is unavailable. Same kept set as torchvision's nms."""
    fn = _function("nms")
    if fn is None:
        return None
    boxes = np.ascontiguousarray(boxes, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (n, 4), got {boxes.shape}")
    n = boxes.shape[0]
    keep = np.empty(max(min(n, k), 1), dtype=np.int64)
    kept = fn(n, boxes.ctypes.data, float(iou), max(int(k), 0), keep.ctypes.data)
    if kept < 0:
        raise MemoryError("not enough memory for NMS")
    return keep[:kept]


def rle_strings(crops: list[np.ndarray], regions: np.ndarray | list, size: tuple[int, int]) -> list[str] | None:
    """COCO compressed RLE strings of cropped masks in an (H, W) image, or None when the kernel is
    unavailable. Same strings as ``formats.rle_string(formats.rle_counts(...))``."""
    fn = _function("rle")
    if fn is None:
        return None
    h, w = (int(v) for v in size)
    regions = np.asarray(regions, dtype=np.int64).reshape(-1, 4)
    if len(crops) != len(regions):
        raise ValueError(f"{len(crops)} crops but {len(regions)} regions")
    views = []
    for crop, (r0, r1, c0, c1) in zip(crops, regions.tolist()):
        if not (0 <= r0 <= r1 <= h and 0 <= c0 <= c1 <= w) or crop.shape != (r1 - r0, c1 - c0):
            raise ValueError(f"crop of shape {crop.shape} does not fit region {(r0, r1, c0, c1)} of a {h}x{w} image")
        views.append(np.ascontiguousarray(crop, dtype=bool).view(np.uint8))
    # Room for ~4 runs per column (a mask entering and leaving twice); rarer masks get a second call
    # with the exact length the first one reports.
    out = np.empty(13 * (4 * max((int(c1 - c0) for _, _, c0, c1 in regions.tolist()), default=0) + 8), np.uint8)
    strings = []
    for view, (r0, r1, c0, c1) in zip(views, regions.tolist()):
        length = fn(view.ctypes.data, h, w, r0, r1, c0, c1, out.ctypes.data, out.size)
        if length > out.size:
            out = np.empty(length, np.uint8)
            length = fn(view.ctypes.data, h, w, r0, r1, c0, c1, out.ctypes.data, out.size)
        strings.append(out[:length].tobytes().decode("ascii"))
    return strings


def _crop_pointers(
    crops: Sequence[np.ndarray], regions: np.ndarray, used: np.ndarray | None = None
) -> tuple[list[np.ndarray], np.ndarray]:
    """C-contiguous byte views of boolean crops (kept alive by the caller) and their addresses (0 for
    crops not in ``used``, when given); each crop must have its region's shape (the kernels index
    crops by their regions)."""
    if len(crops) != len(regions):
        raise ValueError(f"{len(crops)} crops but {len(regions)} regions")
    views = []
    ptrs = np.zeros(len(crops), dtype=np.uintp)
    for k in range(len(crops)) if used is None else np.unique(used).tolist():
        r0, r1, c0, c1 = regions[k].tolist()
        if crops[k].shape != (r1 - r0, c1 - c0):
            raise ValueError(f"crop of shape {crops[k].shape} does not fit region {(r0, r1, c0, c1)}")
        views.append(np.ascontiguousarray(crops[k], dtype=bool).view(np.uint8))
        ptrs[k] = views[-1].ctypes.data
    return views, ptrs


def pair_intersections(
    pairs: np.ndarray,
    crops_a: Sequence[np.ndarray],
    regions_a: np.ndarray,
    crops_b: Sequence[np.ndarray],
    regions_b: np.ndarray,
) -> np.ndarray | None:
    """(P,) int64 pixel counts of crop_a[i] & crop_b[j] for the (P, 2) (i, j) ``pairs`` (crops placed at
    their (r0, r1, c0, c1) regions of one frame), or None when the kernel is unavailable."""
    fn = _function("pairs")
    if fn is None:
        return None
    pairs = np.ascontiguousarray(pairs, dtype=np.int64).reshape(-1, 2)
    regions_a = np.ascontiguousarray(regions_a, dtype=np.int64).reshape(-1, 4)
    regions_b = np.ascontiguousarray(regions_b, dtype=np.int64).reshape(-1, 4)
    if pairs.size and not (
        (pairs >= 0).all() and (pairs[:, 0] < len(regions_a)).all() and (pairs[:, 1] < len(regions_b)).all()
    ):
        raise ValueError("pair indices out of range")
    va, pa = _crop_pointers(crops_a, regions_a, pairs[:, 0])  # only the crops the pairs read
    vb, pb = _crop_pointers(crops_b, regions_b, pairs[:, 1])
    out = np.zeros(len(pairs), dtype=np.int64)
    if len(pairs):
        fn(len(pairs), pairs.ctypes.data, pa.ctypes.data, regions_a.ctypes.data, pb.ctypes.data, regions_b.ctypes.data,
           out.ctypes.data)  # fmt: skip
    del va, vb  # the views lived through the call
    return out


def grid_samples(
    crops: Sequence[np.ndarray],
    regions: np.ndarray,
    cells: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    out: np.ndarray,
) -> bool:
    """Write crop k's values at the grid points of cells [i0, i1) x [j0, j1) (``cells[k]``) into
    ``out[k]`` ((n, cells_h * cells_w) float32; grid point (i, j) is pixel (rows[i, j], cols[i, j])).
    False (nothing written) when the kernel is unavailable."""
    fn = _function("grid")
    if fn is None:
        return False
    regions = np.ascontiguousarray(regions, dtype=np.int64).reshape(-1, 4)
    cells = np.ascontiguousarray(cells, dtype=np.int64).reshape(-1, 4)
    rows, cols = np.ascontiguousarray(rows, dtype=np.int64), np.ascontiguousarray(cols, dtype=np.int64)
    h, w = rows.shape
    if (
        cols.shape != (h, w)
        or out.dtype != np.float32
        or not out.flags.c_contiguous
        or out.shape != (len(crops), h * w)
    ):
        raise ValueError("grid_samples: rows/cols must be (H, W) and out (n, H * W) C-contiguous float32")
    if len(cells) != len(crops) or not (
        (cells[:, 0] >= 0).all() and (cells[:, 1] <= h).all() and (cells[:, 2] >= 0).all() and (cells[:, 3] <= w).all()
    ):
        raise ValueError("grid_samples: cell ranges outside the grid")
    views, ptrs = _crop_pointers(crops, regions)
    if len(views):
        fn(len(views), ptrs.ctypes.data, regions.ctypes.data, cells.ctypes.data, w, h * w, rows.ctypes.data,
           cols.ctypes.data, out.ctypes.data)  # fmt: skip
    del views
    return True


def _forget_pool_in_child() -> None:
    # a forked child inherits the pool object but not its threads: submitting to it would hang
    global _lock
    _lock = threading.Lock()
    _state.pop("pool", None)


def _pool(threads: int) -> ThreadPoolExecutor:
    with _lock:
        pool = _state.get("pool")
        if pool is None or _state.get("pool_threads") != threads:
            if "fork_hook" not in _state and hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_forget_pool_in_child)
                _state["fork_hook"] = True
            if pool is not None:
                pool.shutdown(wait=False)  # the thread count changed: let the old workers exit
            pool = _state["pool"] = ThreadPoolExecutor(threads, thread_name_prefix="fastsam-regions")
            _state["pool_threads"] = threads
        return pool


def _check(
    windows: list[np.ndarray], shapes: np.ndarray, origins: np.ndarray, regions: np.ndarray, tables: list[np.ndarray]
) -> None:
    """The kernel trusts its indices; make sure every one it will follow lies inside its buffer."""
    ri0, ri1, _, _, ci0, ci1, _, _ = tables
    if any((np.diff(t) < 0).any() for t in (ri0, ri1, ci0, ci1)) or (ri1 < ri0).any() or (ci1 < ci0).any():
        raise ValueError("interpolation tables must be monotonic with i0 <= i1")  # so region ends bound them
    if origins.shape != (len(windows), 2) or regions.shape != (len(windows), 4):
        raise ValueError("origins must be (n, 2) and regions (n, 4)")
    if any(w.dtype != np.float32 or w.ndim != 2 or not w.flags.c_contiguous for w in windows):
        raise ValueError("windows must be C-contiguous 2-D float32 arrays")
    r0, r1, c0, c1 = regions.T
    if not (
        (r0 >= 0).all()
        and (r0 < r1).all()
        and (r1 <= len(ri0)).all()
        and (c0 >= 0).all()
        and (c0 < c1).all()
        and (c1 <= len(ci0)).all()
    ):
        raise ValueError("regions must be non-empty and inside the tables")
    top, bottom = origins[:, 0], origins[:, 0] + shapes[:, 0]
    left, right = origins[:, 1], origins[:, 1] + shapes[:, 1]
    if not (
        (ri0[r0] >= top).all()
        and (ri1[r1 - 1] < bottom).all()
        and (ci0[c0] >= left).all()
        and (ci1[c1 - 1] < right).all()
    ):
        raise ValueError("a window does not cover the source pixels its region reads")


def _shards(sizes: np.ndarray, count: int) -> list[np.ndarray]:
    """Split job indices into ``count`` groups of about equal total size (largest first, greedy)."""
    loads = [0] * count
    groups: list[list[int]] = [[] for _ in range(count)]
    for k in np.argsort(-sizes, kind="stable"):
        g = loads.index(min(loads))
        groups[g].append(int(k))
        loads[g] += int(sizes[k])
    return [np.asarray(g, dtype=np.int64) for g in groups if g]


def threshold_windows(
    windows: list[np.ndarray],
    origins: np.ndarray,
    regions: np.ndarray,
    rows: AxisTable,
    cols: AxisTable,
    threads: int = 1,
) -> tuple[list[np.ndarray], np.ndarray] | None:
    """Masks and stability counts of many windows, or None when the kernel is unavailable.

    Args:
        windows: per job, (sr, sc) float32 C-contiguous logits whose [0, 0] is source pixel ``origins[k]``.
        origins: (n, 2) int64 source (row, col) of each window's first pixel.
        regions: (n, 4) int64 output r0, r1, c0, c1 (end exclusive, non-empty) indexing ``rows``/``cols``.
        rows, cols: bilinear tables of the whole output frame.
        threads: shards run in parallel (the kernel runs without the GIL).

    Returns:
        (masks: per job a (r1 - r0, c1 - c0) bool array, counts: (n, 2) int64 #(value > 1), #(value > -1)).
    """
    fn = _function("regions")
    if fn is None:
        return None
    n = len(windows)
    origins, regions = np.asarray(origins, dtype=np.int64), np.asarray(regions, dtype=np.int64)
    if n == 0:
        return [], np.zeros((0, 2), dtype=np.int64)
    tables = [
        np.ascontiguousarray(a, dtype=np.int64 if i % 4 < 2 else np.float32)
        for i, a in enumerate((rows.i0, rows.i1, rows.w0, rows.w1, cols.i0, cols.i1, cols.w0, cols.w1))
    ]
    shapes = np.array([w.shape if w.ndim == 2 else (0, 0) for w in windows], dtype=np.int64)
    _check(windows, shapes, origins, regions, tables)
    geometry = np.empty((n, 8), dtype=np.int64)
    geometry[:, 0:2] = shapes
    geometry[:, 2:4] = origins
    geometry[:, 4:8] = regions
    masks = [np.empty((r1 - r0, c1 - c0), dtype=bool) for r0, r1, c0, c1 in regions.tolist()]
    counts = np.zeros((n, 2), dtype=np.int64)
    window_ptrs = np.array([w.ctypes.data for w in windows], dtype=np.uintp)
    mask_ptrs = np.array([m.ctypes.data for m in masks], dtype=np.uintp)

    def run(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        geo = np.ascontiguousarray(geometry[idx])
        wp, mp = np.ascontiguousarray(window_ptrs[idx]), np.ascontiguousarray(mask_ptrs[idx])
        out = np.zeros((len(idx), 2), dtype=np.int64)
        status = fn(
            len(idx), wp.ctypes.data, geo.ctypes.data, *(t.ctypes.data for t in tables), mp.ctypes.data, out.ctypes.data
        )
        return idx, out, status

    sizes = (regions[:, 1] - regions[:, 0]) * (regions[:, 3] - regions[:, 2])
    shards = _shards(sizes, max(1, min(threads, n)))
    results = list(_pool(len(shards)).map(run, shards)) if len(shards) > 1 else [run(s) for s in shards]
    for idx, out, status in results:
        if status != 0:
            raise MemoryError("not enough memory for the mask-region scratch buffer")
        counts[idx] = out
    return masks, counts
