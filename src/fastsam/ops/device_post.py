"""Everything-mode post-processing of a batch in torch, on the device the network ran on.

The twin of the CPU path (``predictor.select_detections`` + the full-image box rule +
``masks.assemble_*`` with the C kernels): same detections, boxes and scores, the same masks up to
float rounding of the logits GEMM. Steps, all batched over the images of a letterboxed batch
(one input size, any original sizes):

1. score filter + NMS (:mod:`fastsam.ops.device_nms`), padded to ``max_det`` slots per image;
2. border snap + full-image box rule in input pixels, then the map to original pixels (divided by
   a tensor, not a Python float: CUDA multiplies by a float's reciprocal, one ulp off the CPU);
3. mask regions, then one host sync for their sizes, then every mask at once
   (:mod:`fastsam.ops.device_masks`).

:func:`postprocess_batch` stops with the masks on the device (:class:`DevicePost`);
:meth:`DevicePost.to_host` copies them, once, into per-image boxes, scores and ``MaskCrops``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .boxes import snap_and_expand_full_boxes
from .device_masks import DeviceMasks, MaskJobs, evaluate_masks
from .device_nms import DeviceDetections, select_batched
from .letterbox import Letterbox
from .masks import AxisTable, MaskCrops, input_frame_tables, retina_tables

__all__ = ["DevicePost", "HostPost", "postprocess_batch"]


@dataclass(frozen=True)
class HostPost:
    """One image's result on the host: boxes (N, 4) float32 xyxy original pixels, scores (N,), masks."""

    boxes: np.ndarray
    scores: np.ndarray
    crops: MaskCrops


@dataclass(frozen=True)
class DevicePost:
    """A batch's result with the masks still on the device (boxes and scores are on the host already:
    the region sizes needed them there)."""

    boxes: list[np.ndarray]
    scores: list[np.ndarray]
    masks: DeviceMasks

    def to_host(self) -> list[HostPost]:
        crops = self.masks.to_host(len(self.boxes))
        return [HostPost(b, s, c) for b, s, c in zip(self.boxes, self.scores, crops)]


def _ceil_range(lo: Tensor, hi: Tensor, size: Tensor) -> tuple[Tensor, Tensor]:
    """``masks._pixel_range`` elementwise: integer i with lo <= i < hi, clipped to [0, size)."""
    a = torch.minimum(torch.ceil(lo).clamp(min=0), size)
    b = torch.minimum(torch.ceil(hi).clamp(min=0), size)
    return a.long(), torch.maximum(a, b).long()


def _to_original(boxes_in: Tensor, geoms: Sequence[Letterbox]) -> Tensor:
    """``Letterbox.boxes_to_original`` for (B, K, 4) input-pixel boxes, one geometry per image."""
    dev = boxes_in.device
    gain, pad, limit = [], [], []
    for g in geoms:
        (h0, w0), (h, w) = g.orig_size, g.input_size
        gain.append(g.gain)
        pad.append((round((w - w0 * g.gain) / 2 - 0.1), round((h - h0 * g.gain) / 2 - 0.1)))
        limit.append((w0, h0))
    per = torch.tensor(
        [[x, y, x, y] for x, y in pad], dtype=torch.float32, device=dev
    )  # pads and limits are small integers: exact in float32
    lim = torch.tensor([[x, y, x, y] for x, y in limit], dtype=torch.float32, device=dev)
    gains = torch.tensor(gain, dtype=torch.float32, device=dev)[:, None, None]
    out = (boxes_in - per[:, None, :]) / gains
    return torch.minimum(out.clamp(min=0), lim[:, None, :])


def _shift(table: AxisTable, offset: int) -> AxisTable:
    return AxisTable(table.i0 + offset, table.i1 + offset, table.w0, table.w1)


def _jobs(
    det: DeviceDetections, boxes_in: Tensor, boxes: Tensor, geoms: Sequence[Letterbox], mh: int, mw: int, retina: bool
) -> tuple[MaskJobs, list[np.ndarray], list[np.ndarray]]:
    """Regions (and windows) of every kept mask; the one host sync of the batch."""
    dev = boxes.device
    rows, cols = [], []
    if retina:
        size = torch.tensor([[g.orig_size[0], g.orig_size[1]] for g in geoms], dtype=torch.float32, device=dev)
        r0, r1 = _ceil_range(boxes[..., 1], boxes[..., 3], size[:, :1])
        c0, c1 = _ceil_range(boxes[..., 0], boxes[..., 2], size[:, 1:])
        regions = torch.stack((r0, r1, c0, c1), -1)
        for g in geoms:
            rt, ct, (top, _bottom, left, _right) = retina_tables(mh, mw, g)
            rows.append(_shift(rt, top))
            cols.append(_shift(ct, left))
        windows = None
    else:
        h_in, w_in = geoms[0].input_size
        sy, sx = mh / h_in, mw / w_in
        bi = boxes_in.double()  # the CPU path multiplies Python floats (doubles)
        pr0, pr1 = _ceil_range(bi[..., 1] * sy, bi[..., 3] * sy, torch.tensor(float(mh), device=dev))
        pc0, pc1 = _ceil_range(bi[..., 0] * sx, bi[..., 2] * sx, torch.tensor(float(mw), device=dev))
        for g in geoms:
            rt, ct = input_frame_tables(mh, mw, g)
            rows.append(rt)
            cols.append(ct)
        big = np.iinfo(np.int64).max  # pads the tables to one length; searchsorted never passes it

        def padded(tables: list[AxisTable], name: str) -> Tensor:
            n = max(len(t.i0) for t in tables)
            out = np.full((len(tables), n), big, dtype=np.int64)
            for i, t in enumerate(tables):
                out[i, : len(t.i0)] = getattr(t, name)
            return torch.from_numpy(out).to(dev)

        r0 = torch.searchsorted(padded(rows, "i1"), pr0)
        r1 = torch.searchsorted(padded(rows, "i0"), pr1)
        c0 = torch.searchsorted(padded(cols, "i1"), pc0)
        c1 = torch.searchsorted(padded(cols, "i0"), pc1)
        empty = (pr1 == pr0) | (pc1 == pc0) | (r1 <= r0) | (c1 <= c0)
        regions = torch.stack((r0, r1, c0, c1), -1).masked_fill(empty[..., None], 0)
        windows = torch.stack((pr0, pr1, pc0, pc1), -1).masked_fill(empty[..., None], 0)
    # one transfer of everything small: counts, boxes, scores, regions (and windows), exact in float64
    parts = [boxes.double(), det.scores.double()[..., None], regions.double()]
    if windows is not None:
        parts.append(windows.double())
    host = torch.cat(parts, -1).cpu().numpy()
    counts = det.counts.cpu().numpy()
    image = np.concatenate([np.full(int(n), i, dtype=np.int64) for i, n in enumerate(counts)])
    slot = np.concatenate([np.arange(int(n), dtype=np.int64) for n in counts])
    flat = host[image, slot]
    jobs = MaskJobs(
        image=image,
        slot=slot,
        regions=flat[:, 5:9].astype(np.int64),
        windows=flat[:, 9:13].astype(np.int64) if windows is not None else None,
        rows=rows,
        cols=cols,
    )
    out_boxes = [host[i, : int(n), :4].astype(np.float32) for i, n in enumerate(counts)]
    out_scores = [host[i, : int(n), 4].astype(np.float32) for i, n in enumerate(counts)]
    return jobs, out_boxes, out_scores


def postprocess_batch(
    preds: Tensor,
    protos: Tensor,
    geoms: Sequence[Letterbox],
    num_classes: int,
    conf: float,
    iou: float,
    max_det: int,
    retina_masks: bool = True,
) -> DevicePost:
    """A letterboxed batch's network outputs -> detections and masks, on the outputs' device.

    Args:
        preds: (B, 4 + nc + nm, A) decoded predictions. protos: (B, nm, mh, mw). Any float dtype:
            post-processing runs in float32.
        geoms: the letterbox of each image (all with the batch's input size).
        conf, iou, max_det, retina_masks: as ``PredictConfig``.
    """
    if len(geoms) != preds.shape[0] or protos.shape[0] != preds.shape[0]:
        raise ValueError(f"{preds.shape[0]} predictions, {protos.shape[0]} prototypes, {len(geoms)} geometries")
    protos = protos.float()
    b, _nm, mh, mw = protos.shape
    det = select_batched(preds, num_classes, conf, iou, max_det)
    k = det.boxes.shape[1]
    boxes_in = snap_and_expand_full_boxes(det.boxes.reshape(-1, 4), geoms[0].input_size).view(b, k, 4)
    boxes = _to_original(boxes_in, geoms)
    jobs, out_boxes, out_scores = _jobs(det, boxes_in, boxes, geoms, mh, mw, retina_masks)
    masks = evaluate_masks(protos, det.coefficients, jobs)
    return DevicePost(out_boxes, out_scores, masks)
