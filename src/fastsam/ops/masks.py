"""Mask assembly: coefficients x prototypes, bilinear upsampling, cropping to the box — computed only
inside each mask's box.

The original upsamples every mask's full logit map to the image size (N x H x W floats, about 1 GB
for 300 masks on a 720p photo) and then zeroes everything outside the box. Bilinear interpolation is
separable and local, so the value of an output pixel needs only 2 x 2 source logits: we gather
those for the pixels inside each box and nothing else. The arithmetic follows PyTorch's
``interpolate(mode="bilinear", align_corners=False)`` (float32 source index and weights), so the
masks equal the original's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from . import _native
from .letterbox import Letterbox

__all__ = [
    "AxisTable",
    "MaskCrops",
    "assemble_input_frame",
    "assemble_retina",
    "bilinear_table",
    "input_frame_tables",
    "retina_tables",
]


@dataclass(frozen=True)
class AxisTable:
    """Per output index along one axis: two source indices (int64) and their weights (float32)."""

    i0: np.ndarray
    i1: np.ndarray
    w0: np.ndarray
    w1: np.ndarray

    def __getitem__(self, sl: slice | np.ndarray) -> AxisTable:
        return AxisTable(self.i0[sl], self.i1[sl], self.w0[sl], self.w1[sl])


def bilinear_table(in_size: int, out_size: int) -> AxisTable:
    """Source indices/weights of ``interpolate(bilinear, align_corners=False)`` from in_size to out_size
    (PyTorch's float32 arithmetic: src = max(in/out * (dst + 0.5) - 0.5, 0))."""
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(out_size, dtype=np.float32)
    src = np.maximum(scale * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0.0)).astype(np.float32)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
    i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
    return AxisTable(i0, i1, (np.float32(1) - lam).astype(np.float32), lam)


@dataclass
class MaskCrops:
    """Masks stored as boolean crops inside their regions (rows r0:r1, cols c0:c1 of the image).

    Attributes:
        regions: (N, 4) int64 numpy array of r0, r1, c0, c1 (end exclusive).
        crops: N boolean numpy arrays of shape (r1 - r0, c1 - c0).
        stability: (N,) float32 stability scores (IoU of logits > +1 and logits > -1, inside the box).
    """

    regions: np.ndarray
    crops: list[np.ndarray]
    stability: np.ndarray


def _interpolate_rows(src: np.ndarray, table: AxisTable, offset: int) -> np.ndarray:
    """Linear interpolation along axis 0: out[k] = w0[k] * src[i0[k] - offset] + w1[k] * src[i1[k] - offset].

    Gathering whole rows is a block copy, so both steps of :func:`_threshold_window` use this (the
    x step on the transposed source). Same float32 operations, in the same order, as PyTorch's.
    """
    out = np.take(src, table.i0 - offset, axis=0)
    out *= table.w0[:, None]
    tmp = np.take(src, table.i1 - offset, axis=0)
    tmp *= table.w1[:, None]
    out += tmp
    return out


def _threshold_window(
    src: np.ndarray, origin: tuple[int, int], rows: AxisTable, cols: AxisTable
) -> tuple[np.ndarray, int, int]:
    """Threshold the bilinear upsampling of the logits window ``src`` at the output pixels ``rows`` x ``cols``.

    ``src`` (sr, sc) holds the source logits from pixel ``origin`` (row, col) on, and covers every
    source index the tables name. Interpolation is separable: along x on the source rows (on the
    transposed window, so that gathers copy whole rows), then along y. The numpy twin of the C kernel
    in ``_kernels.c``: same float32 operations, same results.

    Returns:
        (mask (len(rows), len(cols)) bool = value > 0, #(value > 1), #(value > -1)).
    """
    ia, ja = origin
    across = np.ascontiguousarray(_interpolate_rows(np.ascontiguousarray(src.T), cols, ja).T)
    value = _interpolate_rows(across, rows, ia)
    flags = np.greater(value, 1.0, out=np.empty(value.shape, dtype=bool))
    n_hi = np.count_nonzero(flags)
    n_lo = np.count_nonzero(np.greater(value, -1.0, out=flags))
    return value > 0.0, int(n_hi), int(n_lo)


Job = tuple[int, tuple[int, int, int, int], "tuple[int, int, int, int] | None"]


def _threshold_all(
    windows: list[np.ndarray], origins: np.ndarray, regions: np.ndarray, row_table: AxisTable, col_table: AxisTable
) -> tuple[list[np.ndarray], np.ndarray]:
    """Every window's mask and (#>1, #>-1) counts: the C kernel on ``torch.get_num_threads()`` threads
    when it is built, else numpy (same results)."""
    native = _native.threshold_windows(windows, origins, regions, row_table, col_table, torch.get_num_threads())
    if native is not None:
        return native
    masks, counts = [], np.zeros((len(windows), 2), dtype=np.int64)
    for k, (src, (ia, ja), (r0, r1, c0, c1)) in enumerate(zip(windows, origins.tolist(), regions.tolist())):
        mask, counts[k, 0], counts[k, 1] = _threshold_window(src, (ia, ja), row_table[r0:r1], col_table[c0:c1])
        masks.append(mask)
    return masks, counts


def _run(
    jobs: list[Job],
    protos: Tensor,
    coefficients: Tensor,
    cut: tuple[slice, slice],
    row_table: AxisTable,
    col_table: AxisTable,
) -> MaskCrops:
    """Evaluate every mask region. Logits = coefficients @ protos, as in the original, but computed
    only on the window of prototype pixels each region reads (about a tenth of the frame per mask).

    Args:
        cut: (rows, cols) slices of the prototype frame that the tables index (the un-padded area).
    """
    # (h, w, nm): a window's pixels are then rows of nm contiguous values, one small GEMV per row
    grid = np.ascontiguousarray(protos.float()[:, cut[0], cut[1]].permute(1, 2, 0).numpy())
    coefs = coefficients.float().numpy()
    n = len(jobs)
    out = MaskCrops(np.zeros((n, 4), dtype=np.int64), [np.zeros((0, 0), dtype=bool)] * n, np.zeros(n, dtype=np.float32))
    todo, windows, origins = [], [], []
    for k, (r0, r1, c0, c1), window in jobs:
        out.regions[k] = (r0, r1, c0, c1)
        if r1 <= r0 or c1 <= c0:
            out.crops[k] = np.zeros((max(r1 - r0, 0), max(c1 - c0, 0)), dtype=bool)
            continue
        # source pixels the region reads (the tables are monotonic)
        ia, ib = int(row_table.i0[r0]), int(row_table.i1[r1 - 1]) + 1
        ja, jb = int(col_table.i0[c0]), int(col_table.i1[c1 - 1]) + 1
        logits = grid[ia:ib, ja:jb] @ coefs[k]
        if window is not None:  # the original's crop before upsampling: zero the source outside the box
            wr0, wr1, wc0, wc1 = window
            logits[: max(wr0 - ia, 0)] = 0
            logits[max(wr1 - ia, 0) :] = 0
            logits[:, : max(wc0 - ja, 0)] = 0
            logits[:, max(wc1 - ja, 0) :] = 0
        todo.append(k)
        windows.append(np.ascontiguousarray(logits, dtype=np.float32))
        origins.append((ia, ja))
    if todo:
        idx = np.asarray(todo)
        masks, counts = _threshold_all(
            windows, np.asarray(origins, dtype=np.int64).reshape(-1, 2), out.regions[idx], row_table, col_table
        )
        for k, mask, (n_hi, n_lo) in zip(todo, masks, counts.tolist()):
            out.crops[k] = mask
            out.stability[k] = n_hi / n_lo if n_lo else 0.0
    return out


def _pixel_range(lo: float, hi: float, size: int) -> tuple[int, int]:
    """Integer indices i with lo <= i < hi, clipped to [0, size)."""
    a = min(max(math.ceil(lo), 0), size)
    b = min(max(math.ceil(hi), 0), size)
    return a, max(a, b)


def retina_tables(mh: int, mw: int, geom: Letterbox) -> tuple[AxisTable, AxisTable, tuple[int, int, int, int]]:
    """Bilinear tables of the retina path: prototype rows/cols (relative to the un-padded cut) of each
    original-image row/col, and the cut (top, bottom, left, right) in prototype pixels."""
    h0, w0 = geom.orig_size
    gain = min(mh / h0, mw / w0)
    pad_w, pad_h = (mw - w0 * gain) / 2, (mh - h0 * gain) / 2
    top, left = int(pad_h), int(pad_w)
    bottom, right = int(mh - pad_h), int(mw - pad_w)
    return bilinear_table(bottom - top, h0), bilinear_table(right - left, w0), (top, bottom, left, right)


def input_frame_tables(mh: int, mw: int, geom: Letterbox) -> tuple[AxisTable, AxisTable]:
    """Tables of the input-frame path: for each original-image row/col, the prototype rows/cols that
    the bilinear upsampling to the input frame reads at its nearest input pixel."""
    h_in, w_in = geom.input_size
    h0, w0 = geom.orig_size
    (rh, rw), (top, left) = geom.resized, geom.pad
    # original pixel centre -> nearest input pixel inside the resized (un-padded) image
    ys = np.minimum(np.floor((np.arange(h0) + 0.5) * rh / h0).astype(np.int64), rh - 1) + top
    xs = np.minimum(np.floor((np.arange(w0) + 0.5) * rw / w0).astype(np.int64), rw - 1) + left
    return bilinear_table(mh, h_in)[ys], bilinear_table(mw, w_in)[xs]


def assemble_retina(protos: Tensor, coefficients: Tensor, boxes: Tensor, geom: Letterbox) -> MaskCrops:
    """Masks at original resolution (the original's ``retina_masks=True`` path).

    Logits (N, mh, mw) are cut to the un-padded area, bilinearly resized to (h0, w0), zeroed outside
    each box and thresholded at 0 — evaluated only inside each box.

    Args:
        protos: (nm, mh, mw) prototypes. coefficients: (N, nm).
        boxes: (N, 4) xyxy in original pixels (already mapped from the input frame and clipped).
    """
    _nm, mh, mw = protos.shape
    h0, w0 = geom.orig_size
    row_table, col_table, (top, bottom, left, right) = retina_tables(mh, mw, geom)
    jobs: list[Job] = []
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        r0, r1 = _pixel_range(y1, y2, h0)
        c0, c1 = _pixel_range(x1, x2, w0)
        jobs.append((k, (r0, r1, c0, c1), None))
    return _run(jobs, protos, coefficients, (slice(top, bottom), slice(left, right)), row_table, col_table)


def assemble_input_frame(protos: Tensor, coefficients: Tensor, boxes_in: Tensor, geom: Letterbox) -> MaskCrops:
    """Masks of the original's ``retina_masks=False`` path, delivered at original resolution.

    As in the original: logits are zeroed outside the box at prototype resolution, bilinearly
    upsampled to the letterboxed input (H, W) and thresholded at 0. That mask lives in the input
    frame; we then sample it at original resolution (nearest input pixel of each original pixel
    centre, padding removed) so that every result has the same frame.

    Args:
        boxes_in: (N, 4) xyxy in input pixels.
    """
    _nm, mh, mw = protos.shape
    h_in, w_in = geom.input_size
    row_table, col_table = input_frame_tables(mh, mw, geom)
    sy, sx = mh / h_in, mw / w_in
    jobs: list[Job] = []
    for k, (x1, y1, x2, y2) in enumerate(boxes_in.tolist()):
        pr0, pr1 = _pixel_range(y1 * sy, y2 * sy, mh)
        pc0, pc1 = _pixel_range(x1 * sx, x2 * sx, mw)
        # output pixels whose source cell touches the window (the tables are monotonic)
        r0, r1 = int(np.searchsorted(row_table.i1, pr0)), int(np.searchsorted(row_table.i0, pr1))
        c0, c1 = int(np.searchsorted(col_table.i1, pc0)), int(np.searchsorted(col_table.i0, pc1))
        if pr1 == pr0 or pc1 == pc0 or r1 <= r0 or c1 <= c0:
            jobs.append((k, (0, 0, 0, 0), None))
        else:
            jobs.append((k, (r0, r1, c0, c1), (pr0, pr1, pc0, pc1)))
    return _run(jobs, protos, coefficients, (slice(None), slice(None)), row_table, col_table)
