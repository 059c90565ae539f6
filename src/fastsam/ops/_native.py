"""The optional compiled mask-region kernel (``_regions.c``), called through ctypes.

Loaded on first use, never at import. Absent (no C compiler at install time) or disabled with the
environment variable ``FASTSAM_NATIVE=0``, :func:`threshold_windows` returns None and the caller uses
its numpy path, which computes the same float32 operations and so the same masks.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .masks import AxisTable

__all__ = ["available", "threshold_windows"]

_lock = threading.Lock()
_state: dict[str, object] = {}  # "fn": the C function or None; "pool": thread pool, made when first needed


def _load() -> object | None:
    try:
        module = importlib.import_module("fastsam.ops._regions")
        lib = ctypes.CDLL(module.__file__)
        fn = lib.fastsam_threshold_regions
    except (ImportError, OSError, AttributeError, TypeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int64] + [ctypes.c_void_p] * 12
    return fn


def _function() -> object | None:
    if os.environ.get("FASTSAM_NATIVE", "1") == "0":
        return None
    with _lock:
        if "fn" not in _state:
            _state["fn"] = _load()
        return _state["fn"]


def available() -> bool:
    """Whether the compiled kernel is built and enabled."""
    return _function() is not None


def _forget_pool_in_child() -> None:
    # a forked child inherits the pool object but not its threads: submitting to it would hang
    global _lock
    _lock = threading.Lock()
    _state.pop("pool", None)


def _pool(threads: int) -> ThreadPoolExecutor:
    with _lock:
        pool = _state.get("pool")
        if pool is None or pool._max_workers != threads:  # type: ignore[attr-defined]
            if "fork_hook" not in _state and hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_forget_pool_in_child)
                _state["fork_hook"] = True
            pool = _state["pool"] = ThreadPoolExecutor(threads, thread_name_prefix="fastsam-regions")
        return pool  # type: ignore[return-value]


def _check(windows: list[np.ndarray], origins: np.ndarray, regions: np.ndarray, tables: list[np.ndarray]) -> None:
    """The kernel trusts its indices; make sure every one it will follow lies inside its buffer."""
    ri0, ri1, _, _, ci0, ci1, _, _ = tables
    if any((np.diff(t) < 0).any() for t in (ri0, ri1, ci0, ci1)) or (ri1 < ri0).any() or (ci1 < ci0).any():
        raise ValueError("interpolation tables must be monotonic with i0 <= i1")  # so region ends bound them
    if origins.shape != (len(windows), 2) or regions.shape != (len(windows), 4):
        raise ValueError("origins must be (n, 2) and regions (n, 4)")
    if any(w.dtype != np.float32 or w.ndim != 2 or not w.flags.c_contiguous for w in windows):
        raise ValueError("windows must be C-contiguous 2-D float32 arrays")
    shapes = np.array([w.shape for w in windows], dtype=np.int64)
    r0, r1, c0, c1 = regions.T
    if not ((0 <= r0).all() and (r0 < r1).all() and (r1 <= len(ri0)).all()
            and (0 <= c0).all() and (c0 < c1).all() and (c1 <= len(ci0)).all()):  # fmt: skip
        raise ValueError("regions must be non-empty and inside the tables")
    top, bottom = origins[:, 0], origins[:, 0] + shapes[:, 0]
    left, right = origins[:, 1], origins[:, 1] + shapes[:, 1]
    if not ((ri0[r0] >= top).all() and (ri1[r1 - 1] < bottom).all()
            and (ci0[c0] >= left).all() and (ci1[c1 - 1] < right).all()):  # fmt: skip
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


def threshold_windows(windows: list[np.ndarray], origins: np.ndarray, regions: np.ndarray,
                      rows: "AxisTable", cols: "AxisTable", threads: int = 1
                      ) -> tuple[list[np.ndarray], np.ndarray] | None:  # fmt: skip
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
    fn = _function()
    if fn is None:
        return None
    n = len(windows)
    origins, regions = np.asarray(origins, dtype=np.int64), np.asarray(regions, dtype=np.int64)
    if n == 0:
        return [], np.zeros((0, 2), dtype=np.int64)
    tables = [np.ascontiguousarray(a, dtype=np.int64 if i % 4 < 2 else np.float32)
              for i, a in enumerate((rows.i0, rows.i1, rows.w0, rows.w1, cols.i0, cols.i1, cols.w0, cols.w1))]  # fmt: skip
    _check(windows, origins, regions, tables)
    geometry = np.empty((n, 8), dtype=np.int64)
    geometry[:, 0:2] = [w.shape for w in windows]
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
        status = fn(len(idx), wp.ctypes.data, geo.ctypes.data, *(t.ctypes.data for t in tables),  # type: ignore[operator]
                    mp.ctypes.data, out.ctypes.data)  # fmt: skip
        return idx, out, status

    sizes = (regions[:, 1] - regions[:, 0]) * (regions[:, 3] - regions[:, 2])
    shards = _shards(sizes, max(1, min(threads, n)))
    results = list(_pool(len(shards)).map(run, shards)) if len(shards) > 1 else [run(s) for s in shards]
    for idx, out, status in results:
        if status != 0:
            raise MemoryError("not enough memory for the mask-region scratch buffer")
        counts[idx] = out
    return masks, counts
