"""Mask assembly in torch for every kept detection of a batch at once, evaluated only inside each box.

The same masks as :mod:`fastsam.ops.masks` (the C-kernel path): logits = coefficients x prototypes,
bilinear upsampling with PyTorch's ``align_corners=False`` float32 arithmetic (the same tables,
the same order of operations: along x, then along y), logits > 0, and the stability counts
#(> +1) / #(> -1). Only the logits GEMM sums in another order, so a pixel whose logit is within
float rounding of 0 can flip.

Layout: the pixels of all masks' regions are laid end to end in one flat buffer (mask g owns
``[start[g], start[g] + h_g * w_g)``, row-major); each output pixel finds its mask by a binary
search over the ends, its row/col by integer division, and its four source logits by gathers
into the prototype-resolution logits. There is no padding to a common crop size, so the work is
the total box area, not masks x image. Memory is bounded: masks are taken in groups (their logits
within ``logit_budget`` floats) and pixels in chunks of ``pixel_chunk``.

Python loops: over groups and chunks (a few per image), and over the images of a group for the
logits GEMM; none per detection. One host sync learns the region sizes; the flat mask buffer and
the counts come to the host in one copy each at the end (:meth:`DeviceMasks.to_host`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .masks import AxisTable, MaskCrops

__all__ = ["DeviceMasks", "MaskJobs", "evaluate_masks"]

PIXEL_BUDGET = 1 << 22  # padded output pixels per step on a CPU (a few float temporaries of this size)
PIXEL_BUDGET_CUDA = 1 << 24  # on a GPU: fewer, larger kernels (~0.5 GB of temporaries)
LOGIT_BUDGET = 1 << 25  # prototype-resolution logits held at once (128 MB of float32)


@dataclass(frozen=True)
class MaskJobs:
    """The masks of a batch to evaluate, as host arrays (G masks, image-major, score order within).

    Attributes:
        image: (G,) int64 image of each mask. slot: (G,) int64 its detection slot in that image.
        regions: (G, 4) int64 output r0, r1, c0, c1 (end exclusive; empty when r1 <= r0 or c1 <= c0).
        windows: (G, 4) int64 prototype rows/cols pr0, pr1, pc0, pc1 outside which logits count as 0
            (the input-frame path's crop before upsampling), or None (retina: no window).
        rows, cols: per image, the bilinear table of its output rows/cols, source indices absolute
            in the prototype frame.
    """

    image: np.ndarray
    slot: np.ndarray
    regions: np.ndarray
    windows: np.ndarray | None
    rows: list[AxisTable]
    cols: list[AxisTable]


@dataclass(frozen=True)
class DeviceMasks:
    """Masks of a batch still on the device: ``flat`` (P,) bool holds mask g's crop at
    ``[start[g], start[g] + area[g])``; ``counts`` (G, 2) int64 #(logit > 1), #(logit > -1)."""

    flat: Tensor
    counts: Tensor
    jobs: MaskJobs
    start: np.ndarray

    def to_host(self, num_images: int) -> list[MaskCrops]:
        """Copy to the host (one transfer each for the masks and the counts) -> MaskCrops per image."""
        flat = self.flat.cpu().numpy()
        counts = self.counts.cpu().numpy()
        regions = self.jobs.regions
        h = np.maximum(regions[:, 1] - regions[:, 0], 0)
        w = np.maximum(regions[:, 3] - regions[:, 2], 0)
        stability = np.zeros(len(regions), dtype=np.float32)
        ok = counts[:, 1] > 0
        stability[ok] = counts[ok, 0] / counts[ok, 1]  # float64 division, then float32: as the CPU path
        out = []
        for b in range(num_images):
            idx = np.flatnonzero(self.jobs.image == b)
            crops = [flat[self.start[g] : self.start[g] + h[g] * w[g]].reshape(h[g], w[g]) for g in idx.tolist()]
            out.append(MaskCrops(regions[idx].copy(), crops, stability[idx]))
        return out


def _cat(tables: list[AxisTable]) -> tuple[AxisTable, np.ndarray]:
    """Per-image tables laid end to end, and where each image's table starts."""
    base = np.cumsum([0] + [len(t.i0) for t in tables[:-1]]).astype(np.int64)
    return AxisTable(*(np.concatenate([getattr(t, f) for t in tables]) for f in ("i0", "i1", "w0", "w1"))), base


def _groups(order: np.ndarray, rows: np.ndarray, width: int, budget: int, max_masks: int) -> list[np.ndarray]:
    """Split masks (global ids, in order) into runs of at most ``max_masks`` whose padded pixels
    (rows x width) stay within ``budget`` (a single larger mask makes a group of its own)."""
    out: list[np.ndarray] = []
    cur: list[int] = []
    load = 0
    for g in order.tolist():
        if cur and (load + rows[g] * width > budget or len(cur) >= max_masks):
            out.append(np.asarray(cur, dtype=np.int64))
            cur, load = [], 0
        cur.append(g)
        load += int(rows[g]) * width
    if cur:
        out.append(np.asarray(cur, dtype=np.int64))
    return out


def _spans(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ragged runs of ``lengths``: (owner run of each element, position inside its run)."""
    owner = np.repeat(np.arange(len(lengths)), lengths)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return owner, np.arange(int(lengths.sum()), dtype=np.int64) - first[owner]


def evaluate_masks(
    protos: Tensor,
    coefficients: Tensor,
    jobs: MaskJobs,
    pixel_budget: int | None = None,
    logit_budget: int = LOGIT_BUDGET,
) -> DeviceMasks:
    """Masks and stability counts of ``jobs`` on the prototypes' device.

    Masks are bucketed by crop width (rounded up to a power of two, so at most 2x padding); inside a
    bucket, the x step runs on the source rows each mask reads (S rows of the bucket width), and the
    y step gathers two of those rows per output row, so no step indexes single pixels.

    Args:
        protos: (B, nm, mh, mw) float32 prototypes. coefficients: (B, K, nm) float32 per slot.
        jobs: which masks, where (see :class:`MaskJobs`).
        pixel_budget: padded output pixels per step (default by device type).
    """
    dev = protos.device
    b, nm, mh, mw = protos.shape
    regions = jobs.regions
    n_masks = len(regions)
    h = np.maximum(regions[:, 1] - regions[:, 0], 0)
    w = np.maximum(regions[:, 3] - regions[:, 2], 0)
    area = h * w
    rows, row_base = _cat(jobs.rows)
    cols, col_base = _cat(jobs.cols)
    nonempty = np.flatnonzero(area > 0)
    # source rows each mask reads (the tables are monotonic)
    r_first = row_base[jobs.image] + regions[:, 0]
    ia = np.where(area > 0, rows.i0[np.minimum(r_first, len(rows.i0) - 1)], 0)
    ib = np.where(area > 0, rows.i1[np.minimum(r_first + h - 1, len(rows.i0) - 1)] + 1, 0)
    width = np.maximum(1 << np.ceil(np.log2(np.maximum(w, 1))).astype(np.int64), 8)
    budget = pixel_budget or (PIXEL_BUDGET_CUDA if dev.type == "cuda" else PIXEL_BUDGET)
    protos_flat = protos.reshape(b, nm, mh * mw)
    coefs = coefficients[torch.from_numpy(jobs.image).to(dev), torch.from_numpy(jobs.slot).to(dev)]  # (G, nm)
    col_tables = [torch.from_numpy(np.ascontiguousarray(getattr(cols, f))).to(dev) for f in ("i0", "i1", "w0", "w1")]
    pieces, counts_parts, order_parts = [], [], []
    for bucket in np.unique(width[nonempty]).tolist():
        members = nonempty[width[nonempty] == bucket]
        for grp in _groups(members, h, bucket, budget, max(1, logit_budget // (mh * mw))):
            masks, cnt = _evaluate_group(
                grp, bucket, jobs, protos_flat, coefs, col_tables, col_base, rows, row_base, ia, ib, h, w, mh, mw
            )
            pieces.append(masks)
            counts_parts.append(cnt)
            order_parts.append(grp)
    counts = torch.zeros((n_masks, 2), dtype=torch.int64, device=dev)
    start = np.zeros(n_masks, dtype=np.int64)
    if pieces:
        done = np.concatenate(order_parts)
        counts[torch.from_numpy(done).to(dev)] = torch.cat(counts_parts)
        start[done] = np.concatenate([[0], np.cumsum(area[done])[:-1]])
        flat = torch.cat(pieces)
    else:
        flat = torch.zeros(0, dtype=torch.bool, device=dev)
    return DeviceMasks(flat, counts, jobs, start)


def _evaluate_group(
    grp: np.ndarray,
    width: int,
    jobs: MaskJobs,
    protos_flat: Tensor,
    coefs: Tensor,
    col_tables: list[Tensor],
    col_base: np.ndarray,
    rows: AxisTable,
    row_base: np.ndarray,
    ia: np.ndarray,
    ib: np.ndarray,
    h: np.ndarray,
    w: np.ndarray,
    mh: int,
    mw: int,
) -> tuple[Tensor, Tensor]:
    """One group of masks of one width bucket -> (their crops laid end to end, (n, 2) counts)."""
    dev = protos_flat.device
    n = len(grp)
    image = jobs.image[grp]
    # logits at prototype resolution, one GEMM per image the group spans: (n * mh, mw) rows
    parts = []
    for img in np.unique(image).tolist():
        sel = grp[image == img]
        parts.append(coefs[torch.from_numpy(sel).to(dev)] @ protos_flat[img])
    logits = torch.cat(parts).view(n, mh, mw)
    if jobs.windows is not None:  # zero outside the window, as the original crops before upsampling
        win = torch.from_numpy(jobs.windows[grp]).to(dev)
        r = torch.arange(mh, device=dev)[None, :]
        c = torch.arange(mw, device=dev)[None, :]
        outside_r = (r < win[:, :1]) | (r >= win[:, 1:2])  # (n, mh)
        outside_c = (c < win[:, 2:3]) | (c >= win[:, 3:4])  # (n, mw)
        logits = logits.masked_fill(outside_r[:, :, None] | outside_c[:, None, :], 0.0)
    logits = logits.view(n * mh, mw)
    # x step, on the source rows each mask reads: (S, width)
    s_len = ib[grp] - ia[grp]
    s_owner, s_pos = _spans(s_len)
    s_row = ia[grp][s_owner] + s_pos
    src = logits.index_select(0, torch.from_numpy(s_owner * mh + s_row).to(dev))  # (S, mw)
    t = np.arange(width, dtype=np.int64)
    tc = col_base[image][:, None] + jobs.regions[grp, 2][:, None] + np.minimum(t[None, :], w[grp][:, None] - 1)
    tc_t = torch.from_numpy(tc).to(dev).index_select(0, torch.from_numpy(s_owner).to(dev))  # (S, width)
    j0, j1, x_w0, x_w1 = (tab.take(tc_t) for tab in col_tables)
    across = src.gather(1, j0) * x_w0 + src.gather(1, j1) * x_w1  # along x, as the CPU path: w0 * left + w1 * right
    # y step: two source rows per output row
    o_owner, o_pos = _spans(h[grp])
    tr = row_base[image][o_owner] + jobs.regions[grp, 0][o_owner] + o_pos
    s_first = np.concatenate([[0], np.cumsum(s_len)[:-1]]).astype(np.int64)[o_owner] - ia[grp][o_owner]
    i0 = torch.from_numpy(s_first + rows.i0[tr]).to(dev)
    i1 = torch.from_numpy(s_first + rows.i1[tr]).to(dev)
    y_w0 = torch.from_numpy(np.ascontiguousarray(rows.w0[tr])).to(dev)[:, None]
    y_w1 = torch.from_numpy(np.ascontiguousarray(rows.w1[tr])).to(dev)[:, None]
    value = across.index_select(0, i0) * y_w0 + across.index_select(0, i1) * y_w1  # (R, width)
    valid = torch.arange(width, device=dev)[None, :] < torch.from_numpy(w[grp][o_owner]).to(dev)[:, None]
    value.masked_fill_(~valid, -2.0)  # padding: below every threshold
    crops = torch.masked_select(value > 0, valid)  # row-major crops, mask after mask
    r_first = torch.from_numpy(np.concatenate([[0], np.cumsum(h[grp])]).astype(np.int64)).to(dev)
    counts = []
    for thr in (1.0, -1.0):
        per_row = torch.count_nonzero(value > thr, dim=1)
        run = torch.cat((torch.zeros(1, dtype=torch.int64, device=dev), per_row.cumsum(0)))
        counts.append(run[r_first[1:]] - run[r_first[:-1]])
    return crops, torch.stack(counts, 1)
